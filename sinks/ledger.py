"""The ledger as the correction paths use it: what it holds, what it counts, inserts by key.

The ledger (``events``) is append-only and never rewritten. A row that must stop counting (a
copy of a key counted twice, a copy that would take its window past decimal(38, 9)) is
listed in ``voided_events`` by its source coordinates; every total formed from the ledger
here leaves those rows out.

**One writer by key at a time.** Inserting late events (the correction flow, replay) reads
which keys the ledger holds and appends the others *through the same table snapshot*, with a
``txn`` app id every such writer shares (:data:`LEDGER_FENCE`): if another one committed
since that snapshot, delta-rs refuses the append (a concurrent transaction with the same app
id), and the attempt starts over from a fresh snapshot, where it finds those keys. Two
correction flows started at once therefore never insert a key twice. The main flow's own
appends carry other app ids and never conflict with these.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, Transaction, write_deltalake

from meterwax.operators.corrections import (
    LateClassification,
    LateEvent,
    LedgerEntry,
    Totals,
    WindowKey,
    classify_late_events,
    fit_in_windows,
)
from meterwax.operators.dedupe import content_fingerprint
from meterwax.operators.windows import window_days
from meterwax.sinks.arrow_rows import (
    decimal_column,
    decimal_to_nanos,
    event_columns,
    group_by_window,
    timestamp_to_micros,
)
from meterwax.sinks.delta_writes import CommitStats, retry_commit
from meterwax.sinks.lake import Lake
from meterwax.sinks.schemas import EVENTS, TIMESTAMP, VOIDED_EVENTS

LEDGER_FENCE = "meterwax.corrections.events"
"""The ``txn`` app id of every insert by key (corrections, replay): two such writers conflict."""
VOID_FENCE = "meterwax.voids.events"
"""The same for ``voided_events``."""
COORDINATES = ["origin", "origin_partition", "origin_offset"]
Coordinates = tuple[str, int, int]


@dataclass(frozen=True)
class LateInsert:
    """What inserting late events by key did."""

    classified: LateClassification
    inserted: list[LateEvent]
    """New keys now in the ledger."""
    overflowing: list[LateEvent]
    """New keys whose window could not take them within decimal(38, 9): not inserted."""

    @property
    def counted(self) -> list[LateEvent]:
        """Late events counted by this insert or by an interrupted earlier one."""
        return sorted(self.inserted + self.classified.already_inserted, key=lambda e: e.coordinates)


@dataclass(frozen=True)
class LedgerCopy:
    """One ledger row, as voiding it needs it."""

    tenant_id: str
    id: str
    meter: str
    quantity_nanos: int
    time_us: int
    coordinates: Coordinates


class Ledger:
    """Reads and by-key writes of one lake's ``events`` table (and ``voided_events``)."""

    def __init__(self, lake: Lake, window_us: int, stats: CommitStats) -> None:
        self.window_us = window_us
        self.stats = stats
        self._events = lake.table(EVENTS)
        self._voided = lake.table(VOIDED_EVENTS)

    def entries(
        self, keys: Iterable[tuple[str, str]], *, refresh: bool = True
    ) -> dict[tuple[str, str], LedgerEntry]:
        """What the ledger holds for these (tenant_id, id) keys, across all dates.

        The first copy by coordinates answers for a key (voided copies included: a voided
        event is never counted again, so a late copy of it is a duplicate).
        """
        wanted = set(keys)
        if not wanted:
            return {}
        if refresh:
            self._events.update_incremental()
        ids = pa.array(sorted({event_id for _, event_id in wanted}), pa.string())
        found = self._events.to_pyarrow_dataset().to_table(
            columns=[
                "tenant_id",
                "id",
                "meter",
                "quantity",
                "event_time",
                "counted_by",
                *COORDINATES,
            ],
            filter=pc.field("id").isin(ids),
        )
        entries: dict[tuple[str, str], LedgerEntry] = {}
        rows = sorted(
            zip(
                found.column("tenant_id").to_pylist(),
                found.column("id").to_pylist(),
                found.column("meter").to_pylist(),
                decimal_to_nanos(found.column("quantity")),
                timestamp_to_micros(found.column("event_time")),
                found.column("counted_by").to_pylist(),
                zip(*(found.column(c).to_pylist() for c in COORDINATES), strict=True),
                strict=True,
            ),
            key=lambda row: row[6],
        )
        for tenant, event_id, meter, nanos, time_us, counted_by, where in rows:
            key = (tenant, event_id)
            if key in wanted and key not in entries:
                content = content_fingerprint(meter, nanos, time_us)
                entries[key] = LedgerEntry(counted_by, where, content)
        return entries

    def window_totals(
        self, windows: Iterable[WindowKey], *, refresh: bool = True
    ) -> dict[WindowKey, Totals]:
        """Each window's exact total and count from the ledger, voided copies left out."""
        wanted = set(windows)
        if not wanted:
            return {}
        rows = self._window_rows(wanted, refresh=refresh)
        totals = group_by_window(rows, self.window_us)
        return {key: value for key, value in totals.items() if key in wanted}

    def copies_in(self, windows: Iterable[WindowKey]) -> list[LedgerCopy]:
        """The counting ledger rows of these windows, in coordinate order."""
        wanted = set(windows)
        if not wanted:
            return []
        rows = self._window_rows(wanted, refresh=True)
        micros = timestamp_to_micros(rows.column("event_time"))
        copies = [
            LedgerCopy(tenant, event_id, meter, nanos, time_us, where)
            for tenant, event_id, meter, nanos, time_us, where in zip(
                rows.column("tenant_id").to_pylist(),
                rows.column("id").to_pylist(),
                rows.column("meter").to_pylist(),
                decimal_to_nanos(rows.column("quantity")),
                micros,
                zip(*(rows.column(c).to_pylist() for c in COORDINATES), strict=True),
                strict=True,
            )
            if (tenant, meter, time_us - time_us % self.window_us) in wanted
        ]
        return sorted(copies, key=lambda copy: copy.coordinates)

    def _window_rows(self, windows: set[WindowKey], *, refresh: bool) -> pa.Table:
        """Ledger rows of these windows' days and tenants (a superset), voided ones left out."""
        if refresh:
            self._events.update_incremental()
        days = sorted({day for key in windows for day in window_days(key[2], self.window_us)})
        tenants = pa.array(sorted({key[0] for key in windows}), pa.string())
        rows = self._events.to_pyarrow_dataset().to_table(
            columns=["tenant_id", "id", "meter", "event_time", "quantity", *COORDINATES],
            filter=pc.field("event_date").isin(pa.array(days, pa.int32()).cast(pa.date32()))
            & pc.field("tenant_id").isin(tenants),
        )
        voided = self.voided(tenants)
        if voided.num_rows == 0:
            return rows
        return rows.join(voided, keys=COORDINATES, join_type="left anti")

    def voided(self, tenants: pa.Array, *, refresh: bool = True) -> pa.Table:
        """Coordinates of the voided rows of these tenants."""
        if refresh:
            self._voided.update_incremental()
        return self._voided.to_pyarrow_dataset().to_table(
            columns=COORDINATES, filter=pc.field("tenant_id").isin(tenants)
        )

    def insert_late(
        self, late: list[LateEvent], *, counted_by: str, fence_version: int
    ) -> LateInsert:
        """Insert the late events whose keys the ledger lacks, and that their windows can take.

        Classification (new, already inserted, duplicate, conflicting) and the decimal(38, 9)
        bound are decided on the snapshot the append commits through; a racing insert by key
        makes the append fail and the whole decision is taken again (see the module
        docstring). Each inserted row carries the late event's own source coordinates.
        """

        def attempt() -> LateInsert:
            self._events.update_incremental()
            classified = classify_late_events(
                late, self.entries({e.key for e in late}, refresh=False)
            )
            if not classified.new:
                return LateInsert(classified, [], [])
            windows = {event.window for event in classified.new}
            start = {k: v[0] for k, v in self.window_totals(windows, refresh=False).items()}
            inserted, overflowing = fit_in_windows(
                classified.new,
                window_of=lambda e: e.window,
                quantity_of=lambda e: e.event.quantity_nanos,
                totals=start,
            )
            if inserted:
                write_deltalake(
                    self._events,
                    _ledger_rows(inserted, counted_by),
                    mode="append",
                    commit_properties=CommitProperties(
                        app_transactions=[Transaction(LEDGER_FENCE, fence_version)]
                    ),
                )
                self.stats.commits += 1
            return LateInsert(classified, inserted, overflowing)

        return retry_commit(attempt, "insert late events into the ledger", self.stats)

    def void(self, copies: list[LedgerCopy], *, void_id: str, reason: str) -> int:
        """List these ledger rows in ``voided_events``; return how many were not listed yet."""
        if not copies:
            return 0

        def attempt() -> int:
            self._voided.update_incremental()
            tenants = pa.array(sorted({c.tenant_id for c in copies}), pa.string())
            listed = self.voided(tenants, refresh=False)
            known = set(zip(*(listed.column(c).to_pylist() for c in COORDINATES), strict=True))
            fresh = [c for c in copies if c.coordinates not in known]
            if fresh:
                write_deltalake(
                    self._voided,
                    _voided_rows(fresh, void_id, reason),
                    mode="append",
                    commit_properties=CommitProperties(
                        app_transactions=[Transaction(VOID_FENCE, 0)]
                    ),
                )
                self.stats.commits += 1
            return len(fresh)

        return retry_commit(attempt, "void ledger rows", self.stats)


def _ledger_rows(events: list[LateEvent], counted_by: str) -> pa.Table:
    """Ledger rows for late events: each keeps the source coordinates the main flow read."""
    columns = event_columns([e.event for e in events])
    columns["origin"] = pa.array([e.origin for e in events], pa.string())
    columns["origin_partition"] = pa.array([e.origin_partition for e in events], pa.int32())
    columns["origin_offset"] = pa.array([e.origin_offset for e in events], pa.int64())
    columns["counted_by"] = pa.array([counted_by] * len(events), pa.string())
    return pa.Table.from_pydict(columns, schema=EVENTS.schema)


def _voided_rows(copies: list[LedgerCopy], void_id: str, reason: str) -> pa.Table:
    now = datetime.now(UTC)
    return pa.Table.from_pydict(
        {
            "tenant_id": pa.array([c.tenant_id for c in copies], pa.string()),
            "id": pa.array([c.id for c in copies], pa.string()),
            "meter": pa.array([c.meter for c in copies], pa.string()),
            "quantity": decimal_column([c.quantity_nanos for c in copies]),
            "event_time": pa.array([c.time_us for c in copies], pa.int64()).cast(TIMESTAMP),
            "origin": pa.array([c.coordinates[0] for c in copies], pa.string()),
            "origin_partition": pa.array([c.coordinates[1] for c in copies], pa.int32()),
            "origin_offset": pa.array([c.coordinates[2] for c in copies], pa.int64()),
            "void_id": pa.array([void_id] * len(copies), pa.string()),
            "reason": pa.array([reason] * len(copies), pa.string()),
            "voided_at": pa.array([now] * len(copies), TIMESTAMP),
        },
        schema=VOIDED_EVENTS.schema,
    )
