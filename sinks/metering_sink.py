"""The main flow's sink: one writer per source partition, tables written in dependency order.

Each source partition has exactly one writer, so its rows reach Delta in offset order. The
writer buffers what arrives during a Bytewax epoch and commits it when the epoch closes
(``snapshot``), at the end of input (``close``), or earlier when the buffer grows past
``flush_rows``; each flush writes, in this order:

1. ``events`` (the ledger): append once per offset;
2. ``usage_windows``: insert first totals (see ``windows_table``), never overwriting a row;
3. ``window_conflicts``: the windows that already had other totals, and those whose slice
   holds a voided ledger row (a void of a window still open: see ``VoidedSlices``), once per
   position;
4. ``late_events``: append once per offset;
5. ``quarantine``: append once per offset;
6. the progress markers on ``events`` (the last offset finished, and for files the bytes it
   covers): last, so whoever trusts them (replay, the next run of a file) finds every table
   written up to them.

Every ledger append and window insert is fenced by the meter catalog version the flow counts
with (see ``catalog_table``): when a newer one is applied, the flush stops before writing
under the old one, with :class:`CatalogChangedError`, or, with ``on_catalog_change``, by
calling it (the main flow stops its process there: see ``flows.metering``).

The order is what lets the correction flow trust what it reads: a late event becomes visible
only after the ledger rows and window totals it will be compared with were committed.

Delivery: exactly once per table. The Delta transaction log holds the position (a ``txn``
app id per table and source partition), so the sink keeps no Bytewax state of its own and
a resume after a crash rewrites nothing that was already committed. Committing inside
``snapshot`` is what makes this safe with recovery on: Bytewax records an epoch as complete
only after every sink's snapshot for it has returned, so rows of a recovered epoch are always
already in Delta; rows of an unfinished epoch are replayed and skipped or rewritten by offset.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import NamedTuple

import pyarrow as pa
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from deltalake import Transaction

from meterwax.faults import crash_point
from meterwax.metrics import RunStats
from meterwax.operators.catalog import LEGACY_VERSION
from meterwax.operators.records import (
    LedgerRow,
    PartitionOutput,
    RecomputeRow,
    SourcePartition,
    WindowRow,
)
from meterwax.sinks.arrow_rows import (
    conflicts_table,
    late_table,
    ledger_table,
    quarantine_table,
)
from meterwax.sinks.catalog_table import CatalogChangedError, fence
from meterwax.sinks.delta_writes import CommitStats, OffsetAppender
from meterwax.sinks.lake import Lake
from meterwax.sinks.ledger import VoidedSlices
from meterwax.sinks.schemas import (
    EVENTS,
    LATE_EVENTS,
    QUARANTINE,
    USAGE_WINDOWS,
    WINDOW_CONFLICTS,
)
from meterwax.sinks.windows_table import insert_first_totals

FLOW_NAME = "metering"
DEFAULT_FLUSH_ROWS = 100_000
LEDGER_CHUNK_ROWS = 2_500
"""Ledger rows wait as Python rows until this many, then become one Arrow table (193 bytes an
event instead of ~800) until the flush. Converting each batch's rows as they came cost ~14 KB
and ~0.2 ms a table whatever its size: tailing a topic a few messages at a time, more memory
and time than the rows themselves."""


def app_id(flow: str, table: str, where: SourcePartition) -> str:
    """The Delta txn app id of one flow writing one table for one source partition."""
    return f"meterwax.{flow}.{table}.{where.key}"


def progress_app_id(where: SourcePartition) -> str:
    """The ``txn`` (on the ledger) with the last offset of ``where`` the main flow finished.

    Every table's rows up to that offset are committed: the marker is the last commit of a
    flush, so a replay or a correction that trusts it never races the tables after the ledger.
    """
    return f"meterwax.{FLOW_NAME}.progress.{where.key}"


def content_app_ids(where: SourcePartition) -> tuple[str, str]:
    """The ``txn`` app ids (on the ledger) of a file's bytes read and their digest."""
    return (
        f"meterwax.{FLOW_NAME}.content_bytes.{where.key}",
        f"meterwax.{FLOW_NAME}.content_digest.{where.key}",
    )


def recorded_progress(lake: Lake, where: SourcePartition) -> int | None:
    """The last offset of ``where`` the main flow finished in this lake (None: none yet)."""
    if not lake.exists(EVENTS):
        return None
    return lake.table(EVENTS).transaction_version(progress_app_id(where))


def recorded_content(lake: Lake, where: SourcePartition) -> tuple[int, int] | None:
    """For file input: (bytes the finished lines cover, their digest), as the lake recorded."""
    if not lake.exists(EVENTS):
        return None
    ledger = lake.table(EVENTS)
    length, digest = (ledger.transaction_version(app) for app in content_app_ids(where))
    return None if length is None or digest is None else (length, digest)


def catalog_app_id(where: SourcePartition) -> str:
    """The ``txn`` (on the ledger) with the catalog version ``where`` was last counted under.

    Where in the log a partition picked up a new meter catalog.
    """
    return f"meterwax.{FLOW_NAME}.catalog.{where.key}"


def _markers(
    where: SourcePartition, values: list[PartitionOutput], catalog_version: int
) -> list[Transaction]:
    """The progress markers a flush records on the ledger, in its last commit.

    The last offset finished and, for file input, how many bytes of the file that covers and
    their digest (so a later run can refuse a file whose counted part changed).
    """
    through = max(out.through_offset for out in values)
    if through < 0:
        return []
    markers = [Transaction(progress_app_id(where), through)]
    content = next((out.content for out in reversed(values) if out.content is not None), None)
    if content is not None:
        bytes_app, digest_app = content_app_ids(where)
        markers += [Transaction(bytes_app, content[0]), Transaction(digest_app, content[1])]
    if catalog_version:
        markers.append(Transaction(catalog_app_id(where), catalog_version))
    return markers


class _VoidedSlice(NamedTuple):
    """A slice the flush closed windows of, holding a voided ledger row (recomputed)."""

    slice: RecomputeRow
    position: int


def _slices_of(windows: list[WindowRow]) -> dict[tuple[str, str, int], WindowRow]:
    """The last window row closed in each slice (tenant, event meter, window start)."""
    return {(w.tenant_id, w.event_meter or w.meter, w.window_start_us): w for w in windows}


class MeteringSink(FixedPartitionedSink[PartitionOutput, None]):
    """Writes :class:`PartitionOutput` items keyed by source partition into the lake."""

    def __init__(
        self,
        lake: Lake,
        partitions: list[SourcePartition],
        *,
        stats: RunStats | None = None,
        flush_rows: int = DEFAULT_FLUSH_ROWS,
        catalog_version: int = LEGACY_VERSION,
        on_catalog_change: Callable[[CatalogChangedError], None] | None = None,
    ) -> None:
        self._lake = lake
        self._parts = sorted(p.key for p in partitions)
        self._stats = stats or RunStats()
        self._flush_rows = flush_rows
        self._catalog_version = catalog_version
        self._on_catalog_change = on_catalog_change

    def list_parts(self) -> list[str]:
        """Every source partition; any worker can write any of them."""
        return list(self._parts)

    def part_fn(self, item_key: str) -> int:
        """Route a source partition's outputs to the writer of the same name."""
        return self._parts.index(item_key)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _PartitionWriter:
        """Build the writer of one source partition (no state: Delta holds the positions)."""
        return _PartitionWriter(
            self._lake,
            SourcePartition.from_key(for_part),
            self._stats,
            self._flush_rows,
            self._catalog_version,
            self._on_catalog_change,
        )


class _PartitionWriter(StatefulSinkPartition[PartitionOutput, None]):
    def __init__(
        self,
        lake: Lake,
        where: SourcePartition,
        stats: RunStats,
        flush_rows: int,
        catalog_version: int,
        on_catalog_change: Callable[[CatalogChangedError], None] | None,
    ) -> None:
        self._where = where
        self._on_catalog_change = on_catalog_change
        self._catalog_version = catalog_version
        self._guard = fence(catalog_version)
        self._flush_rows = flush_rows
        self._buffer: list[PartitionOutput] = []
        """What arrived since the last flush, without its ledger rows (``_ledger_rows``, then
        ``_ledger_buffer``)."""
        self._ledger_buffer: list[pa.Table] = []
        self._ledger_rows: list[LedgerRow] = []
        """Ledger rows not yet in ``_ledger_buffer`` (fewer than ``LEDGER_CHUNK_ROWS``)."""
        self._buffered_rows = 0
        self._lake = lake
        self._run_stats = stats
        self._commit_stats = CommitStats()
        self._windows = lake.table(USAGE_WINDOWS)
        self._ledger = OffsetAppender(
            lake.table(EVENTS),
            app_id(FLOW_NAME, EVENTS.name, where),
            self._commit_stats,
            guard=self._guard,
        )
        # Every table is fenced: a flow on an older catalog writes nothing after a newer one
        # is published, not even rejects (they were decided under the old version).
        self._conflicts = OffsetAppender(
            lake.table(WINDOW_CONFLICTS),
            app_id(FLOW_NAME, WINDOW_CONFLICTS.name, where),
            self._commit_stats,
            guard=self._guard,
        )
        self._late = OffsetAppender(
            lake.table(LATE_EVENTS),
            app_id(FLOW_NAME, LATE_EVENTS.name, where),
            self._commit_stats,
            guard=self._guard,
        )
        self._quarantine = OffsetAppender(
            lake.table(QUARANTINE),
            app_id(FLOW_NAME, QUARANTINE.name, where),
            self._commit_stats,
            guard=self._guard,
        )
        self._line_numbers = where.source.startswith("file:")
        self._voided_slices: VoidedSlices | None = None

    def write_batch(self, values: list[PartitionOutput]) -> None:
        for out in values:
            self._buffered_rows += sum(
                map(len, (out.ledger, out.windows, out.late, out.quarantine, out.recompute))
            )
            if out.ledger:
                self._ledger_rows.extend(out.ledger)
                out = replace(out, ledger=[])
            self._buffer.append(out)
        if len(self._ledger_rows) >= LEDGER_CHUNK_ROWS:
            self._ledger_to_arrow()
        if self._buffered_rows >= self._flush_rows:
            self._flush()

    def _ledger_to_arrow(self) -> None:
        """Move the waiting ledger rows into one Arrow table of the buffer."""
        if self._ledger_rows:
            self._ledger_buffer.append(ledger_table(self._where, self._ledger_rows, FLOW_NAME))
            self._ledger_rows = []

    def snapshot(self) -> None:
        crash_point("sink.snapshot")
        self._flush()

    def close(self) -> None:
        self._flush()

    def _voided(self, windows: list[WindowRow]) -> list[_VoidedSlice]:
        """The slices of ``windows`` whose ledger rows include voided ones."""
        if not windows:
            return []
        if self._voided_slices is None:
            self._voided_slices = VoidedSlices(self._lake, self._lake.rules().window_us)
        closed = _slices_of(windows)
        return [
            _VoidedSlice(
                RecomputeRow(
                    key[0], key[1], key[2], closed[key].window_end_us, closed[key].position
                ),
                closed[key].position,
            )
            for key in sorted(self._voided_slices.holding_voided(closed))
        ]

    def _flush(self) -> None:
        try:
            self._write_buffer()
        except CatalogChangedError as error:
            if self._on_catalog_change is None:
                raise
            self._on_catalog_change(error)

    def _write_buffer(self) -> None:
        if not self._buffer:
            return
        values, self._buffer, self._buffered_rows = self._buffer, [], 0
        self._ledger_to_arrow()
        ledger_parts, self._ledger_buffer = self._ledger_buffer, []
        where = self._where
        ledger = pa.concat_tables(ledger_parts) if ledger_parts else EVENTS.schema.empty_table()
        windows = [row for out in values for row in out.windows]
        late = [row for out in values for row in out.late]
        quarantine = [row for out in values for row in out.quarantine]
        recompute = [row for out in values for row in out.recompute]
        before = (
            self._commit_stats.commits,
            self._commit_stats.retries,
            self._commit_stats.seconds,
        )

        markers = _markers(where, values, self._catalog_version)
        written = self._ledger.append_table(ledger, "origin_offset")
        crash_point("sink.after_events")
        first_totals = insert_first_totals(
            self._lake,
            self._windows,
            windows,
            app_id=app_id(FLOW_NAME, USAGE_WINDOWS.name, where),
            stats=self._commit_stats,
            catalog_version=self._catalog_version,
            guard=self._guard,
        )
        conflicts = first_totals.conflicts
        crash_point("sink.after_windows")
        # Read after the insert: a void listing its rows later finds these windows written
        # and corrects them itself; one listing them earlier is seen here.
        voided = self._voided(windows)
        self._conflicts.append(
            sorted([*conflicts, *recompute, *voided], key=lambda r: r.position),
            lambda r: r.position,
            lambda rows: conflicts_table(
                where,
                [r for r in rows if isinstance(r, WindowRow)],
                [r for r in rows if isinstance(r, RecomputeRow)],
                [r.slice for r in rows if isinstance(r, _VoidedSlice)],
            ),
        )
        self._late.append(late, lambda r: r.offset, lambda rows: late_table(where, rows))
        crash_point("sink.after_late")
        self._quarantine.append(
            quarantine,
            lambda r: r.offset,
            lambda rows: quarantine_table(
                where, rows, flow=FLOW_NAME, line_numbers=self._line_numbers
            ),
        )

        self._ledger.ensure_markers(markers, EVENTS.schema.empty_table())
        for out in values:
            self._run_stats.add(out.counters)
            if out.counters["read"]:
                self._run_stats.observe_batch(out.counters["read"])
        if conflicts:
            self._run_stats.add(Counter(window_conflicts=len(conflicts)))
        # A rerun or a resume re-read what an earlier run committed: say so.
        self._run_stats.add(
            Counter(
                already_committed=ledger.num_rows - written,
                windows_already_written=first_totals.already_written,
            )
        )
        last = values[-1]
        self._run_stats.set_watermark(where.key, last.watermark_us)
        if last.dedupe_keys or last.dedupe_bytes:
            self._run_stats.set_dedupe(where.key, last.dedupe_keys, last.dedupe_bytes)
        self._run_stats.add_commits(
            self._commit_stats.commits - before[0],
            self._commit_stats.retries - before[1],
            self._commit_stats.seconds - before[2],
        )
