"""Table maintenance: compact small files, vacuum what compaction replaced, write checkpoints.

Every flush of the flows is a Delta commit with small files; reads and appends slow down as
they pile up (about 13x after 1,000 appends, delta-rs note §3.3). Maintenance fixes that and
is safe while the flows run:

- **compact** rewrites small files into files of about :data:`TARGET_FILE_BYTES` (or the
  table's ``delta.targetFileSize``). Its removes carry ``dataChange=false``: appends running
  at the same time commit fine, the rows are unchanged and replays keep working (the ``txn``
  positions live in the log, which compaction does not touch). A concurrent MERGE (window
  totals) can conflict with it; whichever loses retries from a fresh snapshot
  (:func:`~meterwax.sinks.delta_writes.retry_commit` on both sides), nothing is lost.
- **vacuum** deletes data files that were *removed* from the table more than the retention
  ago, and nothing else (delta-rs' "lite" mode: files being written right now are untracked
  and not touched). The retention is never below :data:`RETENTION_FLOOR`.
- **checkpoint** writes a Parquet checkpoint of the current version, so opening a table
  reads one file instead of every commit since the last one, then deletes expired commit
  logs: those older than the table's ``delta.logRetentionDuration`` (30 days by default),
  and only when that setting is not below the floor either.

**The floor (7 days) is the time travel and catch-up window meterwax promises**: any table
version committed in the last 7 days can be read (``DeltaTable(path, version=…)``, polars
``read_delta(version=…)``, the notebook's comparisons), and a reader or writer that loaded a
snapshot up to 7 days ago (a stalled flow, a correction flow catching up on ``late_events``)
still finds every file of it. A file removed at time *r* belongs only to versions committed
before *r*, so keeping every file removed in the last 7 days keeps every such version whole.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
from deltalake import DeltaTable

from meterwax.durations import format_duration_us, parse_duration_us
from meterwax.errors import RetentionFloorError
from meterwax.sinks.delta_writes import CommitStats, retry_commit
from meterwax.sinks.lake import Lake
from meterwax.sinks.schemas import TableSpec

RETENTION_FLOOR = "7d"
"""Vacuum and log cleanup never reach into the last 7 days (see the module docstring)."""
RETENTION_FLOOR_US = parse_duration_us(RETENTION_FLOOR)
TARGET_FILE_BYTES = 128 * 1024 * 1024
"""Compaction's file size unless the table sets ``delta.targetFileSize``: a few files per
day partition of the ledger at the benchmark's rate, one per day of window totals."""

_HOUR_US = 3_600_000_000
_INTERVAL = re.compile(
    r"^\s*interval\s+(\d+)\s+(microsecond|millisecond|second|minute|hour|day|week)s?\s*$",
    re.IGNORECASE,
)
_UNIT_US = {
    "microsecond": 1,
    "millisecond": 1_000,
    "second": 1_000_000,
    "minute": 60_000_000,
    "hour": _HOUR_US,
    "day": 24 * _HOUR_US,
    "week": 7 * 24 * _HOUR_US,
}
Result = TypeVar("Result")


def check_retention(value_us: int) -> None:
    """Refuse a retention below the floor, naming the floor and what it protects."""
    if value_us < RETENTION_FLOOR_US:
        floor = RETENTION_FLOOR
        why = (
            f"meterwax keeps every file removed in the last {floor} so that table versions "
            f"from the last {floor} stay readable (time travel) and lagging readers can catch up"
        )
        raise RetentionFloorError(requested=format_duration_us(value_us), floor=floor, why=why)


def interval_us(text: str | None) -> int | None:
    """A Delta ``interval N unit`` table property in microseconds (None if absent or odd)."""
    if text is None:
        return None
    match = _INTERVAL.match(text)
    return int(match.group(1)) * _UNIT_US[match.group(2).lower()] if match else None


@dataclass(frozen=True)
class Plan:
    """What to do to each table."""

    compact: bool = True
    vacuum: bool = True
    checkpoint: bool = True
    retain_us: int = RETENTION_FLOOR_US

    def __post_init__(self) -> None:
        check_retention(self.retain_us)


@dataclass
class TableReport:
    """What maintenance did to one table."""

    table: str
    version_before: int
    version_after: int = 0
    files_before: int = 0
    files_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    files_compacted: int | None = None
    """Small files rewritten (None: compaction not asked for)."""
    files_written: int | None = None
    files_vacuumed: int | None = None
    vacuum_retention: str | None = None
    checkpoint_version: int | None = None
    log_files_deleted: int | None = None
    notes: list[str] = field(default_factory=list)
    conflicts_retried: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON output."""
        return asdict(self)


def _live_files(table: DeltaTable) -> tuple[int, int]:
    actions = pa.table(table.get_add_actions(flatten=True))
    return actions.num_rows, sum(actions.column("size_bytes").to_pylist())


def _log_files(lake: Lake, spec: TableSpec) -> int | None:
    if "://" in lake.root:
        return None
    return sum(1 for _ in Path(lake.uri(spec), "_delta_log").glob("*.json"))


def maintain_table(lake: Lake, spec: TableSpec, plan: Plan) -> TableReport:
    """Run the plan on one table; conflicts with running flows are retried, never skipped."""
    started = time.monotonic()
    table = lake.table(spec)
    stats = CommitStats()
    report = TableReport(spec.name, version_before=table.version())
    report.files_before, report.bytes_before = _live_files(table)
    configuration = table.metadata().configuration

    def fresh(operation: Callable[[], Result]) -> Callable[[], Result]:
        def attempt() -> Result:
            table.update_incremental()
            return operation()

        return attempt

    if plan.compact:
        target = int(configuration.get("delta.targetFileSize", TARGET_FILE_BYTES))
        metrics = retry_commit(
            fresh(lambda: table.optimize.compact(target_size=target)),
            f"compact {spec.name}",
            stats,
        )
        report.files_compacted = int(metrics["numFilesRemoved"])
        report.files_written = int(metrics["numFilesAdded"])

    if plan.vacuum:
        table_retention = interval_us(configuration.get("delta.deletedFileRetentionDuration"))
        retain = max(plan.retain_us, table_retention or 0)
        if retain > plan.retain_us:
            report.notes.append(
                f"vacuum kept the table's delta.deletedFileRetentionDuration "
                f"({format_duration_us(retain)})"
            )
        hours = -(-retain // _HOUR_US)
        deleted = retry_commit(
            fresh(
                lambda: table.vacuum(
                    retention_hours=hours, dry_run=False, enforce_retention_duration=True
                )
            ),
            f"vacuum {spec.name}",
            stats,
        )
        report.files_vacuumed = len(deleted)
        report.vacuum_retention = f"{hours}h"

    if plan.checkpoint:
        table.update_incremental()
        table.create_checkpoint()
        report.checkpoint_version = table.version()
        setting = configuration.get("delta.logRetentionDuration")
        log_retention = interval_us(setting)
        if setting is not None and (log_retention is None or log_retention < RETENTION_FLOOR_US):
            report.notes.append(
                f"expired logs kept: delta.logRetentionDuration ({setting}) is not known to be "
                f"at least the {RETENTION_FLOOR} floor"
            )
        else:
            before = _log_files(lake, spec)
            table.cleanup_metadata()
            after = _log_files(lake, spec)
            report.log_files_deleted = None if before is None or after is None else before - after

    table.update_incremental()
    report.version_after = table.version()
    report.files_after, report.bytes_after = _live_files(table)
    report.conflicts_retried = stats.retries
    report.seconds = time.monotonic() - started
    return report
