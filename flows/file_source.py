"""JSON Lines files as a Bytewax source: each file is one ordered partition, a line an offset.

The file source runs the very same dataflow as Kafka input, to the end of each file. Offsets
are 0-based line indexes (``line_number = offset + 1`` in the quarantine table); blank lines
are not messages and are skipped, but keep their line number.

**A file's identity.** Its origin (which names its Delta txn app ids) is
``file:<name>@<fingerprint of its first line>``: the same whatever is appended later, and the
same for a copy of the file elsewhere. With every commit the lake records how many bytes of
the file the counted lines cover and a digest of those bytes (``MeteringSink``), so a later
run of the same origin can tell a file that grew (continued from where the lake stands) from
one whose counted part changed (refused: its lines would be skipped by offset or counted
twice). A file with the same name and another first line is another input.

Lakes written by meterwax 0.1 named a file by a fingerprint of its first 64 KiB; a file the
lake knows under such a name is continued under it (:func:`resolve_partition`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import pyarrow.compute as pc
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from meterwax.errors import ConfigError, SourceChangedError
from meterwax.operators.decode import DEFAULT_MAX_EVENT_BYTES
from meterwax.operators.event import Truncated
from meterwax.operators.records import DEFAULT_BATCH_SIZE, SourceBatch, SourcePartition
from meterwax.sinks.lake import Lake
from meterwax.sinks.metering_sink import recorded_content, recorded_progress
from meterwax.sinks.schemas import EVENTS, QUARANTINE

_JSON_WHITESPACE = b" \t\r\n"
"""What a blank line may hold (JSON's whitespace); anything else is a message."""
LEGACY_FINGERPRINT_BYTES = 64 * 1024
"""What meterwax 0.1 fingerprinted: the first 64 KiB."""
_CHUNK = 1 << 20


def file_origin(path: Path) -> str:
    """The origin name of a file: its name plus a fingerprint of its first line."""
    with path.open("rb") as handle:
        first = handle.readline(LEGACY_FINGERPRINT_BYTES).rstrip(b"\r\n")
    return f"file:{path.name}@{hashlib.sha256(first).hexdigest()[:12]}"


def legacy_origins(path: Path) -> Iterator[str]:
    """The names meterwax 0.1 may have given this file.

    A fingerprint of its first 64 KiB as it is now, or, had the file been smaller then, of a
    shorter prefix ending at a line end.
    """
    with path.open("rb") as handle:
        head = handle.read(LEGACY_FINGERPRINT_BYTES)
    yield f"file:{path.name}@{hashlib.sha256(head).hexdigest()[:12]}"
    digest = hashlib.sha256()
    for line in head.splitlines(keepends=True):
        digest.update(line)
        if line.endswith(b"\n"):
            yield f"file:{path.name}@{digest.copy().hexdigest()[:12]}"


class _Digest(Protocol):
    def digest(self) -> bytes: ...


def content_digest(data: _Digest) -> int:
    """63 bits of a running SHA-256, as a Delta txn version (a non-negative int64)."""
    return int.from_bytes(data.digest()[:8], "big") >> 1


def resolve_partition(lake: Lake | None, path: Path) -> SourcePartition:
    """The source partition of ``path`` in ``lake``, checked to continue what the lake holds.

    Raises SourceChangedError if the lake counted lines of this file whose bytes are no longer
    what they were.
    """
    where = SourcePartition(file_origin(path), 0)
    if lake is None:
        return where
    if recorded_progress(lake, where) is None:
        legacy = next(
            (
                SourcePartition(name, 0)
                for name in legacy_origins(path)
                if recorded_progress(lake, SourcePartition(name, 0)) is not None
            ),
            None,
        )
        if legacy is not None:
            where = legacy
    _check_unchanged(lake, where, path)
    if recorded_progress(lake, where) is None:
        _check_not_renamed(lake, where, path)
    return where


def _check_unchanged(lake: Lake, where: SourcePartition, path: Path) -> None:
    recorded = recorded_content(lake, where)
    if recorded is None:
        return  # nothing counted yet, or a 0.1 lake that recorded no digest
    length, digest = recorded
    size = path.stat().st_size
    if size >= length:
        running = hashlib.sha256()
        with path.open("rb") as handle:
            remaining = length
            while remaining:
                chunk = handle.read(min(_CHUNK, remaining))
                running.update(chunk)
                remaining -= len(chunk)
        if content_digest(running) == digest:
            if size == length or _ends_a_line(path, length):
                return
            how = "end in a line with no newline, which has grown since (it was read half written)"
            msg = (
                f"{path} changed since it was metered: the lake counted its first {length:,} "
                f"bytes, which {how}. Its new version cannot be continued (that line was judged "
                "as it was): restore the file as it was, or give the rest a file of its own"
            )
            raise SourceChangedError(msg)
    how = f"is now {size:,} bytes" if size < length else "differ from what the lake counted"
    msg = (
        f"{path} changed since it was metered: the lake counted its first {length:,} bytes, "
        f"which {how}. A changed file cannot be continued (its counted lines would be skipped "
        "by position, or counted twice): restore it, or give new events a file of their own"
    )
    raise SourceChangedError(msg)


def _ends_a_line(path: Path, length: int) -> bool:
    """True if the byte before ``length`` is a newline (or ``length`` is 0)."""
    if length == 0:
        return True
    with path.open("rb") as handle:
        handle.seek(length - 1)
        return handle.read(1) == b"\n"


def _known_origins(lake: Lake) -> set[str]:
    """The file origins the lake has read (ledger and quarantine rows)."""
    found: set[str] = set()
    for spec in (EVENTS, QUARANTINE):
        if lake.exists(spec):
            origins = lake.table(spec).to_pyarrow_dataset().to_table(columns=["origin"])
            found.update(o for o in pc.unique(origins.column("origin")).to_pylist() if o)
    return {origin for origin in found if origin.startswith("file:")}


def _check_not_renamed(lake: Lake, where: SourcePartition, path: Path) -> None:
    """Refuse a file whose first line the lake knows under another name (a rotated log)."""
    name, _, fingerprint = where.source.removeprefix("file:").rpartition("@")
    for origin in _known_origins(lake):
        other, _, known = origin.removeprefix("file:").rpartition("@")
        if known == fingerprint and other != name:
            msg = (
                f"{path} has the same first line as {other}, which this lake has read: it is "
                "that file under another name (renamed, rotated or linked), and its lines "
                f"would be counted twice. Meter it as {other}, or, if it really is another "
                "input, make its first line differ"
            )
            raise ConfigError(msg)


@dataclass(frozen=True, slots=True)
class FilePosition:
    """Where to resume reading: a byte position and the offset of the line that starts there."""

    byte: int
    offset: int


class FileSource(FixedPartitionedSource[SourceBatch, FilePosition]):
    """Reads JSON Lines files, ``batch_size`` lines at a time, one partition per file.

    With ``lake``, each file is named as the lake knows it and checked to continue what the
    lake counted (:func:`resolve_partition`).

    Delivery: with Bytewax recovery, resumes after the last snapshotted line; without it,
    starts each run at the first line (the sinks skip what was already committed).
    """

    def __init__(
        self,
        paths: list[Path],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        lake: Lake | None = None,
        max_line_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self._paths: dict[str, Path] = {}
        self.partitions: list[SourcePartition] = []
        real: dict[Path, Path] = {}
        for path in paths:
            same = real.get(path.resolve())
            if same is not None:
                msg = f"{path} and {same} are the same file: they are one input; give one only"
                raise ConfigError(msg)
            real[path.resolve()] = path
            where = resolve_partition(lake, path)
            if where.key in self._paths:
                msg = (
                    f"{path} and {self._paths[where.key]} have the same name and first line: "
                    "they are one input; give one only"
                )
                raise ConfigError(msg)
            self._paths[where.key] = path
            self.partitions.append(where)
        self._batch_size = batch_size
        self._max_line_bytes = max_line_bytes

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
                while chunk := handle.read(_CHUNK):
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
            self._max_line_bytes,
        )


class _FilePartition(StatefulSourcePartition[SourceBatch, FilePosition]):
    def __init__(
        self,
        path: Path,
        where: SourcePartition,
        batch_size: int,
        position: FilePosition,
        max_line_bytes: int,
    ) -> None:
        self._where = where
        # A line is read up to one byte past the limit: enough to know it is too large.
        self._line_cap = max_line_bytes + 2
        self._batch_size = batch_size
        self._handle: BinaryIO = path.open("rb")
        # The digest of everything read so far: the bytes before a resume position first.
        self._digest = hashlib.sha256()
        remaining = position.byte
        while remaining:
            chunk = self._handle.read(min(_CHUNK, remaining))
            if not chunk:
                break
            self._digest.update(chunk)
            remaining -= len(chunk)
        self._handle.seek(position.byte)
        self._next_offset = position.offset

    def next_batch(self) -> list[SourceBatch]:
        offsets: list[int] = []
        payloads: list[bytes | None] = []
        at_end = False
        for _ in range(self._batch_size):
            line = self._handle.readline(self._line_cap)
            if not line:
                at_end = True
                break
            self._digest.update(line)
            offset = self._next_offset
            self._next_offset += 1
            if len(line) == self._line_cap and not line.endswith(b"\n"):
                payloads.append(self._skip_rest_of(line))
                offsets.append(offset)
                continue
            payload = line.rstrip(b"\r\n")
            if payload.strip(_JSON_WHITESPACE):
                offsets.append(offset)
                payloads.append(payload)
        if offsets:
            content = (self._handle.tell(), content_digest(self._digest))
            return [SourceBatch(self._where, offsets, payloads, content=content)]
        if at_end:
            raise StopIteration
        return []

    def _skip_rest_of(self, start: bytes) -> Truncated:
        """Read past the rest of an over-long line (into the digest), keep only its start.

        A line of gigabytes must not be held in memory, nor stored whole in quarantine: its
        start (past the limit, so it is rejected as too large) and its full length stand for it.
        """
        length = len(start)
        while True:
            chunk = self._handle.readline(_CHUNK)
            if not chunk:
                break
            self._digest.update(chunk)
            length += len(chunk)
            if chunk.endswith(b"\n"):
                length -= 1 + (chunk.endswith(b"\r\n"))
                break
        return Truncated(start, length)

    def snapshot(self) -> FilePosition:
        return FilePosition(self._handle.tell(), self._next_offset)

    def close(self) -> None:
        self._handle.close()
