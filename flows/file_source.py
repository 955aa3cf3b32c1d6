"""JSON Lines files as a Bytewax source: each file is one ordered partition, a line an offset.

The file source runs the very same dataflow as Kafka input, to the end of each file. Offsets
are 0-based line indexes (``line_number = offset + 1`` in the quarantine table); blank lines
are not messages and are skipped, but keep their line number.

A file's origin (which names its Delta txn app ids) is ``file:<name>@<fingerprint>``, the
fingerprint being a hash of the file's first 64 KiB. Re-running the same file, or a copy of it
elsewhere, is therefore a no-op, a file that grew is continued, and a different file with the
same name is a different origin.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from meterwax.operators.records import DEFAULT_BATCH_SIZE, SourceBatch, SourcePartition

FINGERPRINT_BYTES = 64 * 1024


def file_origin(path: Path) -> str:
    """The origin name of a file: its name plus a fingerprint of its beginning."""
    with path.open("rb") as handle:
        head = handle.read(FINGERPRINT_BYTES)
    return f"file:{path.name}@{hashlib.sha256(head).hexdigest()[:12]}"


@dataclass(frozen=True, slots=True)
class FilePosition:
    """Where to resume reading: a byte position and the offset of the line that starts there."""

    byte: int
    offset: int


class FileSource(FixedPartitionedSource[SourceBatch, FilePosition]):
    """Reads JSON Lines files, ``batch_size`` lines at a time, one partition per file.

    Delivery: with Bytewax recovery, resumes after the last snapshotted line; without it,
    starts each run at the first line (the sinks skip what was already committed).
    """

    def __init__(self, paths: list[Path], *, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        self._paths: dict[str, Path] = {}
        self.partitions: list[SourcePartition] = []
        for path in paths:
            where = SourcePartition(file_origin(path), 0)
            if where.key in self._paths:
                msg = f"{path} and {self._paths[where.key]} have the same content; give one only"
                raise ValueError(msg)
            self._paths[where.key] = path
            self.partitions.append(where)
        self._batch_size = batch_size

    def list_parts(self) -> list[str]:
        """One partition per file; every worker can read every file."""
        return list(self._paths)

    def backlog(self, positions: dict[str, object]) -> int:
        """Lines left to read from ``positions`` (a recovery store's, or the start) to the end.

        For progress display: counted as newlines from the resume byte (about 0.1 s per
        100 MB); blank lines are counted though they are no messages.
        """
        lines = 0
        for key, path in self._paths.items():
            position = positions.get(key)
            with path.open("rb") as handle:
                handle.seek(position.byte if isinstance(position, FilePosition) else 0)
                last = b"\n"
                while chunk := handle.read(1 << 20):
                    lines += chunk.count(b"\n")
                    last = chunk[-1:]
                lines += last != b"\n"  # a last line without its newline
        return lines

    def build_part(
        self, step_id: str, for_part: str, resume_state: FilePosition | None
    ) -> _FilePartition:
        """Open one file at its resume position."""
        return _FilePartition(
            self._paths[for_part],
            SourcePartition.from_key(for_part),
            self._batch_size,
            resume_state or FilePosition(0, 0),
        )


class _FilePartition(StatefulSourcePartition[SourceBatch, FilePosition]):
    def __init__(
        self, path: Path, where: SourcePartition, batch_size: int, position: FilePosition
    ) -> None:
        self._where = where
        self._batch_size = batch_size
        self._handle: BinaryIO = path.open("rb")
        self._handle.seek(position.byte)
        self._next_offset = position.offset

    def next_batch(self) -> list[SourceBatch]:
        offsets: list[int] = []
        payloads: list[bytes | None] = []
        at_end = False
        for _ in range(self._batch_size):
            line = self._handle.readline()
            if not line:
                at_end = True
                break
            offset = self._next_offset
            self._next_offset += 1
            payload = line.rstrip(b"\r\n")
            if payload.strip():
                offsets.append(offset)
                payloads.append(payload)
        if offsets:
            return [SourceBatch(self._where, offsets, payloads)]
        if at_end:
            raise StopIteration
        return []

    def snapshot(self) -> FilePosition:
        return FilePosition(self._handle.tell(), self._next_offset)

    def close(self) -> None:
        self._handle.close()
