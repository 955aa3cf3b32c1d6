"""The correction flow's reads and writes of the lake (no decisions: those are in operators).

Reads: new rows of ``late_events`` and ``window_conflicts`` (their change data feed, so a
compaction never replays rows), what the ledger holds for some keys, ledger totals and current
rows of some windows, and audit rows an interrupted run may have written.

Writes, always in this order, so every step is safe to repeat after a crash:

1. late events the ledger lacks → ``events`` (``counted_by = corrections``, carrying the late
   event's own source coordinates, which is how a rerun recognises them);
2. one ``usage_corrections`` row per window change (the audit row is written *before* the
   change, so no change can exist without its explanation);
3. the changed rows → ``usage_windows`` (MERGE, only a higher revision replaces a row);
4. progress: a commit on ``usage_corrections`` whose ``txn`` versions name the last
   ``late_events`` and ``window_conflicts`` versions fully applied.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from meterwax.errors import LakeError
from meterwax.faults import crash_point
from meterwax.operators.corrections import (
    CORRECTIONS_FLOW,
    ChangeReason,
    CurrentWindow,
    LateEvent,
    LedgerEntry,
    Totals,
    WindowChange,
    WindowKey,
    plan_window_changes,
    reconcile_with_audit,
)
from meterwax.operators.decode import Event
from meterwax.operators.records import QuarantineRow, SourcePartition
from meterwax.operators.windows import window_days, window_start
from meterwax.sinks.arrow_rows import (
    decimal_column,
    decimal_to_nanos,
    event_columns,
    group_by_window,
    quarantine_table,
    timestamp_to_micros,
    window_key_columns,
    window_keys,
)
from meterwax.sinks.delta_writes import CommitStats, retry_commit
from meterwax.sinks.lake import Lake
from meterwax.sinks.metering_sink import progress_app_id
from meterwax.sinks.queries import plain_strings
from meterwax.sinks.schemas import (
    EVENTS,
    LATE_EVENTS,
    QUARANTINE,
    TIMESTAMP,
    USAGE_CORRECTIONS,
    USAGE_WINDOWS,
    WINDOW_CONFLICTS,
)
from meterwax.sinks.windows_table import (
    existing_totals,
    merge_revised_totals,
    rows_of_windows,
    window_dates,
)

PROGRESS_LATE = "meterwax.corrections.progress.late_events"
PROGRESS_CONFLICTS = "meterwax.corrections.progress.window_conflicts"
LEDGER_APP = "meterwax.corrections.events"


@dataclass(frozen=True)
class Correction:
    """What :meth:`CorrectionStore.correct_windows` changed (or would change)."""

    changes: list[WindowChange]
    """Every window that differed from its ledger total, one revision higher."""
    audited: list[WindowChange]
    """Those that got their audit row now (the rest had one from an interrupted run)."""


class CorrectionStore:
    """Everything the correction flow reads from and writes to one lake."""

    def __init__(self, lake: Lake, stats: CommitStats | None = None) -> None:
        self.lake = lake
        self.stats = stats or CommitStats()
        window_us = lake.window_us()
        if window_us is None:
            msg = f"lake {lake.root} has no usage_windows table yet: run `meterwax run` first"
            raise LakeError(msg)
        self.window_us = window_us
        self._events = lake.table(EVENTS)
        self._windows = lake.table(USAGE_WINDOWS)
        self._audit = lake.table(USAGE_CORRECTIONS)
        self._late = lake.table(LATE_EVENTS)
        self._conflicts = lake.table(WINDOW_CONFLICTS)
        self._quarantine = lake.table(QUARANTINE)

    # --- where the flow stands -------------------------------------------------------------

    def progress(self) -> tuple[int, int]:
        """Versions of late_events and window_conflicts fully applied (-1: none yet)."""
        self._audit.update_incremental()
        late = self._audit.transaction_version(PROGRESS_LATE)
        conflicts = self._audit.transaction_version(PROGRESS_CONFLICTS)
        return (-1 if late is None else late, -1 if conflicts is None else conflicts)

    def input_versions(self) -> tuple[int, int]:
        """Current versions of late_events and window_conflicts."""
        self._late.update_incremental()
        self._conflicts.update_incremental()
        return self._late.version(), self._conflicts.version()

    def record_progress(self, late_version: int, conflicts_version: int) -> None:
        """Commit that everything up to these input versions is applied."""
        marker = CommitProperties(
            app_transactions=[
                Transaction(PROGRESS_LATE, late_version),
                Transaction(PROGRESS_CONFLICTS, conflicts_version),
            ]
        )

        def attempt() -> None:
            self._audit.update_incremental()
            write_deltalake(
                self._audit,
                USAGE_CORRECTIONS.schema.empty_table(),
                mode="append",
                commit_properties=marker,
            )
            self.stats.commits += 1

        retry_commit(attempt, "record correction progress", self.stats)

    # --- inputs ------------------------------------------------------------------------------

    def read_late_events(self, after: int, through: int) -> list[LateEvent]:
        """Rows appended to late_events in versions (after, through]."""
        table = self._changes(self._late, after, through)
        if table.num_rows == 0:
            return []
        events = _events_from(table)
        return [
            LateEvent(event, origin, partition, offset, start)
            for event, origin, partition, offset, start in zip(
                events,
                table.column("origin").to_pylist(),
                table.column("origin_partition").to_pylist(),
                table.column("origin_offset").to_pylist(),
                timestamp_to_micros(table.column("window_start")),
                strict=True,
            )
        ]

    def read_conflicts(self, after: int, through: int) -> list[WindowKey]:
        """Windows flagged in window_conflicts in versions (after, through]."""
        table = self._changes(self._conflicts, after, through)
        return list(
            zip(
                table.column("tenant_id").to_pylist(),
                table.column("meter").to_pylist(),
                timestamp_to_micros(table.column("window_start")),
                strict=True,
            )
        )

    def _changes(self, table: DeltaTable, after: int, through: int) -> pa.Table:
        if through <= after:
            return pa.table({})
        reader = table.load_cdf(starting_version=after + 1, ending_version=through)
        changes = plain_strings(pa.table(reader.read_all()))
        if changes.num_rows == 0:
            return changes
        return changes.filter(pc.equal(changes.column("_change_type"), "insert"))

    # --- what the main flow has done ---------------------------------------------------------

    def main_flow_position(self, where: SourcePartition) -> int:
        """The last offset of ``where`` the main flow has finished (-1: none yet)."""
        self._events.update_incremental()
        version = self._events.transaction_version(progress_app_id(where))
        return -1 if version is None else version

    def quarantined_offsets(self, origin: str, partition: int, offsets: list[int]) -> set[int]:
        """Which of these offsets of one source partition already have a quarantine row."""
        if not offsets:
            return set()
        self._quarantine.update_incremental()
        found = self._quarantine.to_pyarrow_dataset().to_table(
            columns=["origin_offset"],
            filter=(pc.field("origin") == origin)
            & (pc.field("origin_partition") == partition)
            & pc.field("origin_offset").isin(pa.array(offsets, pa.int64())),
        )
        return set(found.column("origin_offset").to_pylist())

    def quarantine(self, where: SourcePartition, rows: list[QuarantineRow], *, flow: str) -> None:
        """Append quarantine rows (the caller has checked they are not there yet)."""
        table = quarantine_table(where, rows, flow=flow, line_numbers=False)

        def attempt() -> None:
            self._quarantine.update_incremental()
            write_deltalake(self._quarantine, table, mode="append")
            self.stats.commits += 1

        retry_commit(attempt, "quarantine replayed messages", self.stats)

    # --- the ledger --------------------------------------------------------------------------

    def ledger_entries(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], LedgerEntry]:
        """What the ledger holds for these (tenant_id, id) keys, across all dates."""
        wanted = set(keys)
        if not wanted:
            return {}
        self._events.update_incremental()
        ids = pa.array(sorted({event_id for _, event_id in wanted}), pa.string())
        found = self._events.to_pyarrow_dataset().to_table(
            columns=[
                "tenant_id",
                "id",
                "counted_by",
                "origin",
                "origin_partition",
                "origin_offset",
            ],
            filter=pc.field("id").isin(ids),
        )
        entries: dict[tuple[str, str], LedgerEntry] = {}
        for row in found.to_pylist():
            key = (row["tenant_id"], row["id"])
            if key in wanted:
                entries.setdefault(
                    key,
                    LedgerEntry(
                        row["counted_by"],
                        (row["origin"], row["origin_partition"], row["origin_offset"]),
                    ),
                )
        return entries

    def insert_into_ledger(
        self, events: list[LateEvent], version: int | None, *, counted_by: str = CORRECTIONS_FLOW
    ) -> None:
        """Append events to the ledger, carrying their own source coordinates.

        ``version`` (the late_events version being applied) goes into a ``txn`` shared by every
        correction run, so two correction flows racing on one lake conflict instead of both
        inserting.
        """
        if not events:
            return
        rows = _ledger_table(events, counted_by)
        properties = (
            CommitProperties(app_transactions=[Transaction(LEDGER_APP, version)])
            if version is not None
            else None
        )

        def attempt() -> None:
            self._events.update_incremental()
            write_deltalake(self._events, rows, mode="append", commit_properties=properties)
            self.stats.commits += 1

        retry_commit(attempt, "insert late events into the ledger", self.stats)

    def ledger_totals(self, windows: Iterable[WindowKey]) -> dict[WindowKey, Totals]:
        """Each window's exact total and count, recomputed from the ledger."""
        wanted = set(windows)
        if not wanted:
            return {}
        self._events.update_incremental()
        days = sorted({day for key in wanted for day in window_days(key[2], self.window_us)})
        tenants = pa.array(sorted({k[0] for k in wanted}), pa.string())
        rows = self._events.to_pyarrow_dataset().to_table(
            columns=["tenant_id", "meter", "event_time", "quantity"],
            filter=pc.field("event_date").isin(pa.array(days, pa.int32()).cast(pa.date32()))
            & pc.field("tenant_id").isin(tenants),
        )
        totals = group_by_window(rows, self.window_us)
        return {key: value for key, value in totals.items() if key in wanted}

    # --- windows and their audit trail ------------------------------------------------------

    def current_windows(self, windows: Iterable[WindowKey]) -> dict[WindowKey, CurrentWindow]:
        """The usage_windows rows of these windows as they are now."""
        wanted = set(windows)
        existing = existing_totals(
            self._windows, window_dates(wanted), tenants={key[0] for key in wanted}
        )
        return {
            key: CurrentWindow((quantity, count), revision)
            for key, (quantity, count, revision) in existing.items()
            if key in wanted
        }

    def audited(self, windows: Iterable[WindowKey]) -> dict[tuple[WindowKey, int], Totals]:
        """Audit rows already written for these windows: (key, revision) → new totals."""
        wanted = set(windows)
        if not wanted:
            return {}
        table = rows_of_windows(
            self._audit,
            "tenant_id, meter, window_start, revision, new_quantity, new_event_count",
            window_dates(wanted),
            tenants={key[0] for key in wanted},
        )
        found = {}
        for key, revision, quantity, count in zip(
            window_keys(table),
            table.column("revision").to_pylist(),
            decimal_to_nanos(table.column("new_quantity")),
            table.column("new_event_count").to_pylist(),
            strict=True,
        ):
            if key in wanted:
                found[(key, revision)] = (quantity, count)
        return found

    def correct_windows(
        self,
        reasons: Mapping[WindowKey, Iterable[ChangeReason]],
        *,
        late_ids: Mapping[WindowKey, Iterable[str]] | None = None,
        not_in_ledger_yet: Iterable[Event] = (),
        dry_run: bool = False,
    ) -> Correction:
        """The correction sequence: make every window of ``reasons`` equal its ledger total.

        Each window is recomputed from the ledger (plus ``not_in_ledger_yet``: events a dry
        run would have inserted), compared with its current row, and the differences planned
        one revision higher (operators' :func:`plan_window_changes`); then, unless
        ``dry_run``, their audit rows are written before the windows (:meth:`record_changes`).
        The correction flow, replay and ``reconcile --fix`` change windows only through here.
        """
        affected = set(reasons)
        recomputed = self.ledger_totals(affected)
        for event in not_in_ledger_yet:
            key = (event.tenant_id, event.meter, window_start(event.time_us, self.window_us))
            quantity, count = recomputed.get(key, (0, 0))
            recomputed[key] = (quantity + event.quantity_nanos, count + 1)
        changes = plan_window_changes(
            affected,
            recomputed,
            self.current_windows(affected),
            window_us=self.window_us,
            late_ids=late_ids or {},
            reasons=reasons,
        )
        audited = [] if dry_run else self.record_changes(changes)
        return Correction(changes, audited)

    def record_changes(self, changes: list[WindowChange]) -> list[WindowChange]:
        """Write the changes' audit rows, then the windows; return the changes audited now.

        The audit rows go first so that no window change exists without its explanation (G3).
        A change whose audit row an interrupted run already wrote is applied without a second
        one (see :func:`reconcile_with_audit`), so every caller (corrections, replay,
        reconcile --fix) can be killed between the two writes and simply rerun.
        """
        to_audit, apply_only = reconcile_with_audit(changes, self.audited(c.key for c in changes))
        self.write_audit(to_audit)
        crash_point("corrections.after_audit")
        self.apply_to_windows(to_audit + apply_only)
        return to_audit

    def write_audit(self, changes: list[WindowChange]) -> None:
        """Append one usage_corrections row per change."""
        if not changes:
            return
        rows = _audit_table(changes, datetime.now(UTC))

        def attempt() -> None:
            self._audit.update_incremental()
            write_deltalake(self._audit, rows, mode="append")
            self.stats.commits += 1

        retry_commit(attempt, "write correction audit rows", self.stats)

    def apply_to_windows(self, changes: list[WindowChange]) -> None:
        """MERGE the changed window rows (a row is replaced only by a higher revision)."""
        if not changes:
            return
        merge_revised_totals(
            self._windows,
            _window_rows(changes, datetime.now(UTC)),
            transaction=None,
            stats=self.stats,
        )


def _events_from(table: pa.Table) -> list[Event]:
    dimensions = table.column("dimensions").to_pylist()
    return [
        Event(tenant, event_id, meter, quantity, time_us, dict(dims) if dims else None, source)
        for tenant, event_id, meter, quantity, time_us, dims, source in zip(
            table.column("tenant_id").to_pylist(),
            table.column("id").to_pylist(),
            table.column("meter").to_pylist(),
            decimal_to_nanos(table.column("quantity")),
            timestamp_to_micros(table.column("event_time")),
            dimensions,
            table.column("source").to_pylist(),
            strict=True,
        )
    ]


def _ledger_table(events: list[LateEvent], counted_by: str) -> pa.Table:
    """Ledger rows for late events: each keeps the source coordinates the main flow read."""
    columns = event_columns([e.event for e in events])
    columns["origin"] = pa.array([e.origin for e in events], pa.string())
    columns["origin_partition"] = pa.array([e.origin_partition for e in events], pa.int32())
    columns["origin_offset"] = pa.array([e.origin_offset for e in events], pa.int64())
    columns["counted_by"] = pa.array([counted_by] * len(events), pa.string())
    return pa.Table.from_pydict(columns, schema=EVENTS.schema)


def _audit_table(changes: list[WindowChange], now: datetime) -> pa.Table:
    return pa.Table.from_pydict(
        {
            **window_key_columns([c.key for c in changes], [c.window_end_us for c in changes]),
            "revision": pa.array([c.revision for c in changes], pa.int64()),
            "previous_quantity": _nullable_decimals(
                [None if c.previous is None else c.previous[0] for c in changes]
            ),
            "previous_event_count": pa.array(
                [None if c.previous is None else c.previous[1] for c in changes], pa.int64()
            ),
            "new_quantity": decimal_column([c.new[0] for c in changes]),
            "new_event_count": pa.array([c.new[1] for c in changes], pa.int64()),
            "delta_quantity": decimal_column([c.delta[0] for c in changes]),
            "delta_event_count": pa.array([c.delta[1] for c in changes], pa.int64()),
            "late_event_ids": pa.array(
                [list(c.late_event_ids) for c in changes], pa.list_(pa.string())
            ),
            "reason": pa.array([c.reason for c in changes], pa.string()),
            "corrected_at": pa.array([now] * len(changes), TIMESTAMP),
        },
        schema=USAGE_CORRECTIONS.schema,
    )


def _nullable_decimals(values: list[int | None]) -> pa.Array:
    present = decimal_column([0 if v is None else v for v in values])
    mask = pa.array([v is None for v in values])
    return pc.if_else(mask, pa.scalar(None, present.type), present)


def _window_rows(changes: list[WindowChange], now: datetime) -> pa.Table:
    return pa.Table.from_pydict(
        {
            **window_key_columns([c.key for c in changes], [c.window_end_us for c in changes]),
            "quantity": decimal_column([c.new[0] for c in changes]),
            "event_count": pa.array([c.new[1] for c in changes], pa.int64()),
            "revision": pa.array([c.revision for c in changes], pa.int64()),
            "updated_at": pa.array([now] * len(changes), TIMESTAMP),
        },
        schema=USAGE_WINDOWS.schema,
    )
