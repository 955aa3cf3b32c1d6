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
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from meterwax.operators.aggregates import (
    SUM,
    SliceKey,
    WindowKey,
    WindowValue,
    aggregate,
    sum_contributions,
)
from meterwax.operators.catalog import Catalog
from meterwax.operators.corrections import (
    CORRECTIONS_FLOW,
    LateClassification,
    LateEvent,
    LedgerEntry,
    classify_late_events,
    fit_in_windows,
)
from meterwax.operators.decode import Event
from meterwax.operators.dedupe import event_content
from meterwax.operators.timeline import DAY_US
from meterwax.operators.voids import VoidRule
from meterwax.operators.windows import window_days, window_start
from meterwax.sinks.arrow_rows import (
    decimal_to_nanos,
    event_columns,
    group_by_window,
    nullable_decimal_column,
    timestamp_to_micros,
)
from meterwax.sinks.delta_writes import CommitStats, retry_commit
from meterwax.sinks.lake import Lake
from meterwax.sinks.queries import plain_strings
from meterwax.sinks.schemas import EVENTS, TIMESTAMP, VOID_RULES, VOIDED_EVENTS
from meterwax.sinks.voids_table import VoidStore

LEDGER_FENCE = "meterwax.corrections.events"
"""The ``txn`` app id of every insert by key (corrections, replay): two such writers conflict."""
VOID_FENCE = "meterwax.voids.events"
SUPERSEDED = "superseded_late_copy"
"""The void id and reason of a late copy another late copy of its key precedes."""
"""The same for ``voided_events``."""
COORDINATES = ["origin", "origin_partition", "origin_offset"]
EVENT_COLUMNS = [
    "tenant_id",
    "id",
    "meter",
    "quantity",
    "event_time",
    "dimensions",
    "source",
    "data",
]
"""The columns an :class:`Event` is read back from."""
Coordinates = tuple[str, int, int]


@dataclass(frozen=True)
class LateInsert:
    """What inserting late events by key did."""

    classified: LateClassification
    inserted: list[LateEvent]
    """New keys now in the ledger."""
    overflowing: list[LateEvent]
    """New keys a ``sum`` window could not take within decimal(38, 9): not inserted."""
    superseded: list[LedgerCopy] = field(default_factory=list)
    """Late copies counted earlier whose key now counts by a copy with earlier coordinates:
    voided (and quarantined by the caller if what they billed differs)."""

    @property
    def counted(self) -> list[LateEvent]:
        """Late events counted by this insert or by an interrupted earlier one."""
        return sorted(self.inserted + self.classified.already_inserted, key=lambda e: e.coordinates)


@dataclass(frozen=True)
class LedgerCopy:
    """One ledger row: the event and where it was read."""

    event: Event
    coordinates: Coordinates

    @property
    def tenant_id(self) -> str:
        """The event's tenant."""
        return self.event.tenant_id


def events_of(table: pa.Table) -> list[Event]:
    """The events of ledger (or late_events) rows, read back exactly."""
    columns = table.column_names
    missing = [None] * table.num_rows
    dimensions = table.column("dimensions").to_pylist() if "dimensions" in columns else missing
    data = table.column("data").to_pylist() if "data" in columns else missing
    sources = table.column("source").to_pylist() if "source" in columns else missing
    return [
        Event(
            tenant,
            event_id,
            meter,
            quantity,
            time_us,
            dict(dims) if dims else None,
            source,
            dict(fields) if fields else None,
        )
        for tenant, event_id, meter, quantity, time_us, dims, source, fields in zip(
            table.column("tenant_id").to_pylist(),
            table.column("id").to_pylist(),
            table.column("meter").to_pylist(),
            decimal_to_nanos(table.column("quantity")),
            timestamp_to_micros(table.column("event_time")),
            dimensions,
            sources,
            data,
            strict=True,
        )
    ]


def rows_matching(table: pa.Table, other: pa.Table, keys: list[str], *, matching: bool) -> pa.Table:
    """The rows of ``table`` whose ``keys`` are (or, ``matching=False``, are not) in ``other``.

    A join on the key columns and a row index: Arrow cannot join tables with map columns
    (dimensions, data), so the rows themselves are taken by index, in their own order.
    """
    if other.num_rows == 0:
        return table if not matching else table.slice(0, 0)
    index = table.select(keys).append_column("_row", pa.array(range(table.num_rows), pa.int64()))
    found = index.join(
        other.select(keys).group_by(keys).aggregate([]),
        keys=keys,
        join_type="left semi" if matching else "left anti",
    )
    positions = np.sort(found.column("_row").to_numpy())
    return table.take(pa.array(positions, pa.int64()))


def voided_coordinates(
    voided: DeltaTable, rules: VoidStore, tenants: pa.Array | None = None
) -> pa.Table:
    """Coordinates of the ledger rows of ``tenants`` (None: all) that do not count.

    Those listed in ``voided_events`` by a void still in force, or by a repair (duplicate
    keys, overflow).
    """
    listed = voided.to_pyarrow_dataset().to_table(
        columns=[*COORDINATES, "void_id"],
        filter=pc.field("tenant_id").isin(tenants) if tenants is not None else None,
    )
    undone = rules.undone_ids()
    if undone and listed.num_rows:
        keep = pc.invert(pc.is_in(listed.column("void_id"), pa.array(sorted(undone))))
        listed = listed.filter(keep)
    return listed.select(COORDINATES)


class VoidedSlices:
    """Which slices (tenant, event meter, window start) hold ledger rows that do not count.

    The main flow forms a window's first total from the events it counted, voided ones
    included: it does not read voids, and a void of a window still open finds no row to
    correct. So after inserting first totals, the main flow asks this which of them hold
    voided rows, and flags those for the correction flow (``window_conflicts``). Read again
    only when ``voided_events`` or ``void_rules`` has a new version; a slice is kept whatever
    its age (the set is as large as the slices ever voided, not the rows).
    """

    def __init__(self, lake: Lake, window_us: int) -> None:
        self._lake = lake
        self._window_us = window_us
        self._voided = lake.table(VOIDED_EVENTS)
        self._rules: DeltaTable | None = None
        self._seen: tuple[int, int] | None = None
        self._slices: frozenset[SliceKey] = frozenset()

    def holding_voided(self, keys: Iterable[SliceKey]) -> set[SliceKey]:
        """Those of ``keys`` with a voided ledger row (by a void in force, or a repair)."""
        wanted = set(keys)
        if not wanted:
            return set()
        self._voided.update_incremental()
        version = (self._voided.version(), self._rules_version())
        if version != self._seen:
            self._slices = self._read()
            self._seen = version
        return wanted & self._slices

    def _rules_version(self) -> int:
        if self._rules is None:
            if not self._lake.exists(VOID_RULES):
                return -1
            self._rules = self._lake.table(VOID_RULES)
        self._rules.update_incremental()
        return self._rules.version()

    def _read(self) -> frozenset[SliceKey]:
        listed = self._voided.to_pyarrow_dataset().to_table(
            columns=["tenant_id", "meter", "event_time", "void_id"]
        )
        if listed.num_rows == 0:
            return frozenset()
        undone = VoidStore(self._lake).undone_ids()
        if undone:
            listed = listed.filter(
                pc.invert(pc.is_in(listed.column("void_id"), pa.array(sorted(undone))))
            )
        micros = listed.column("event_time").cast(TIMESTAMP).cast(pa.int64()).to_numpy()
        starts = window_start(micros, self._window_us).tolist()
        return frozenset(
            zip(
                listed.column("tenant_id").to_pylist(),
                listed.column("meter").to_pylist(),
                starts,
                strict=True,
            )
        )


def coordinates_of(table: pa.Table) -> list[Coordinates]:
    """(origin, partition, offset) of every row."""
    return list(zip(*(table.column(c).to_pylist() for c in COORDINATES), strict=True))


def slice_values(catalog: Catalog, rows: pa.Table, window_us: int) -> dict[WindowKey, WindowValue]:
    """Every meter window of these counting ledger rows, under ``catalog``.

    Without a catalog, the sums are formed in Arrow (decimal(76, 9), exact); under one, each
    event goes through the same accumulators as in the main flow (``aggregates``).
    """
    if catalog.is_legacy:
        return {
            (tenant, meter, start, ""): WindowValue(quantity, count)
            for (tenant, meter, start), (quantity, count) in group_by_window(
                rows, window_us
            ).items()
        }
    return {
        key: value for key, (_, value) in aggregate(catalog, events_of(rows), window_us).items()
    }


class Ledger:
    """Reads and by-key writes of one lake's ``events`` table (and ``voided_events``)."""

    def __init__(self, lake: Lake, window_us: int, stats: CommitStats) -> None:
        self.window_us = window_us
        self.stats = stats
        self._events = lake.table(EVENTS)
        self._voided = lake.table(VOIDED_EVENTS)
        self._void_rules = VoidStore(lake)

    def slice_of(self, copy: LedgerCopy) -> SliceKey:
        """The slice (tenant, event meter, window start) a ledger copy belongs to."""
        event = copy.event
        return (event.tenant_id, event.meter, event.time_us - event.time_us % self.window_us)

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
            columns=[*EVENT_COLUMNS, "counted_by", *COORDINATES],
            filter=pc.field("id").isin(ids),
        )
        entries: dict[tuple[str, str], LedgerEntry] = {}
        rows = sorted(
            zip(
                events_of(found),
                found.column("counted_by").to_pylist(),
                coordinates_of(found),
                strict=True,
            ),
            key=lambda row: row[2],
        )
        tenants = pa.array(sorted({tenant for tenant, _ in wanted}), pa.string())
        voided = set(coordinates_of(self.voided(tenants, refresh=refresh)))
        for event, counted_by, where in rows:
            key = (event.tenant_id, event.id)
            if key in wanted and key not in entries:
                content = event_content(
                    event.meter, event.quantity_nanos, event.time_us, event.data
                )
                entries[key] = LedgerEntry(counted_by, where, content, where in voided)
        return entries

    def window_values(
        self,
        catalog: Catalog,
        slices: Iterable[SliceKey],
        *,
        refresh: bool = True,
        extra: Iterable[Event] = (),
        without: Iterable[Coordinates] = (),
    ) -> dict[WindowKey, WindowValue]:
        """Every meter window these slices' counting events make, voided copies left out.

        A dry run's what-if: ``extra`` events not in the ledger count as if they were, and
        rows at ``without`` coordinates do not count, as if they were voided.
        """
        wanted = set(slices)
        if not wanted:
            return {}
        extra = list(extra)
        excluded = list(without)
        if extra or excluded:
            rows = self._slice_rows(wanted, refresh=refresh, full=True)
            if excluded:
                origins, partitions, offsets = zip(*excluded, strict=True)
                table = pa.table(
                    {
                        "origin": pa.array(origins, pa.string()),
                        "origin_partition": pa.array(partitions, pa.int32()),
                        "origin_offset": pa.array(offsets, pa.int64()),
                    }
                )
                rows = rows_matching(rows, table, COORDINATES, matching=False)
            events = [*events_of(rows), *extra]
            found = aggregate(catalog, events, self.window_us)
            return {key: value for key, (_, value) in found.items()}
        rows = self._slice_rows(wanted, refresh=refresh, full=not catalog.is_legacy)
        return slice_values(catalog, rows, self.window_us)

    def copies_in(self, slices: Iterable[SliceKey]) -> list[LedgerCopy]:
        """The counting ledger rows of these slices, in coordinate order."""
        wanted = set(slices)
        if not wanted:
            return []
        rows = self._slice_rows(wanted, refresh=True, full=True)
        copies = [
            LedgerCopy(event, where)
            for event, where in zip(events_of(rows), coordinates_of(rows), strict=True)
        ]
        return sorted(copies, key=lambda copy: copy.coordinates)

    def _slice_rows(self, slices: set[SliceKey], *, refresh: bool, full: bool) -> pa.Table:
        """Counting ledger rows of exactly these slices (voided ones left out).

        ``full``: every column an event is read back from (catalog meters read dimensions and
        data); otherwise what a sum needs.
        """
        if refresh:
            self._events.update_incremental()
        window_us = self.window_us
        days = sorted({day for key in slices for day in window_days(key[2], window_us)})
        tenants = pa.array(sorted({key[0] for key in slices}), pa.string())
        rows = self._events.to_pyarrow_dataset().to_table(
            columns=self._event_columns(full=full),
            filter=pc.field("event_date").isin(pa.array(days, pa.int32()).cast(pa.date32()))
            & pc.field("tenant_id").isin(tenants),
        )
        micros = rows.column("event_time").cast(TIMESTAMP).cast(pa.int64()).to_numpy()
        starts = micros - micros % window_us
        keep = [
            (tenant, meter, start) in slices
            for tenant, meter, start in zip(
                rows.column("tenant_id").to_pylist(),
                rows.column("meter").to_pylist(),
                starts.tolist(),
                strict=True,
            )
        ]
        rows = rows.filter(pa.array(keep, pa.bool_()))
        return rows_matching(rows, self.voided(tenants), COORDINATES, matching=False)

    def voided(self, tenants: pa.Array, *, refresh: bool = True) -> pa.Table:
        """Coordinates of the voided rows of these tenants (voids undone since left out)."""
        if refresh:
            self._voided.update_incremental()
        return voided_coordinates(self._voided, self._void_rules, tenants)

    def voided_by(self, void_id: str) -> list[LedgerCopy]:
        """The ledger rows a void listed (for undoing it)."""
        self._voided.update_incremental()
        listed = self._voided.to_pyarrow_dataset().to_table(
            columns=["tenant_id", *COORDINATES], filter=pc.field("void_id") == void_id
        )
        if listed.num_rows == 0:
            return []
        tenants = pa.array(sorted(set(listed.column("tenant_id").to_pylist())), pa.string())
        self._events.update_incremental()
        rows = self._events.to_pyarrow_dataset().to_table(
            columns=self._event_columns(full=True), filter=pc.field("tenant_id").isin(tenants)
        )
        rows = rows_matching(rows, listed, COORDINATES, matching=True)
        return [
            LedgerCopy(e, c) for e, c in zip(events_of(rows), coordinates_of(rows), strict=True)
        ]

    def copies_matching(self, rule: VoidRule) -> list[LedgerCopy]:
        """Every ledger row ``rule`` selects (voided ones included), in coordinate order."""
        self._events.update_incremental()
        condition = pc.field("tenant_id") == rule.tenant_id
        if rule.is_range:
            # A range, not a list of days: a void over centuries reads as fast as one over a day.
            first = pa.scalar((rule.from_us or 0) // DAY_US, pa.int32()).cast(pa.date32())
            last = pa.scalar(((rule.to_us or 0) - 1) // DAY_US, pa.int32()).cast(pa.date32())
            condition &= (pc.field("event_date") >= first) & (pc.field("event_date") <= last)
        else:
            condition &= pc.field("id").isin(pa.array(list(rule.ids), pa.string()))
        rows = self._events.to_pyarrow_dataset().to_table(
            columns=self._event_columns(full=True), filter=condition
        )
        copies = [
            LedgerCopy(event, where)
            for event, where in zip(events_of(rows), coordinates_of(rows), strict=True)
            if rule.matches(event)
        ]
        return sorted(copies, key=lambda copy: copy.coordinates)

    def appended(self, after: int, through: int) -> list[LedgerCopy]:
        """Ledger rows appended in versions (after, through] (its change feed)."""
        if through <= after:
            return []
        reader = self._events.load_cdf(starting_version=after + 1, ending_version=through)
        rows = plain_strings(pa.table(reader.read_all()))
        if rows.num_rows == 0:
            return []
        rows = rows.filter(pc.equal(rows.column("_change_type"), "insert"))
        return [
            LedgerCopy(e, c) for e, c in zip(events_of(rows), coordinates_of(rows), strict=True)
        ]

    def _event_columns(self, *, full: bool) -> list[str]:
        """Columns to read: every one an event is rebuilt from, or only what a sum needs.

        A ledger written before a column existed lacks it; only present columns are asked for.
        """
        wanted = (
            [*EVENT_COLUMNS, *COORDINATES]
            if full
            else [
                "tenant_id",
                "meter",
                "event_time",
                "quantity",
                *COORDINATES,
            ]
        )
        present = set(self._events.schema().to_arrow().names)
        return [c for c in wanted if c in present]

    def insert_late(
        self,
        late: list[LateEvent],
        *,
        catalog: Catalog,
        counted_by: str,
        fence_version: int,
    ) -> LateInsert:
        """Insert the late events whose keys the ledger lacks, and that their windows can take.

        Classification (new, already inserted, duplicate, conflicting) and the decimal(38, 9)
        bound of every ``sum`` window are decided on the snapshot the append commits through;
        a racing insert by key makes the append fail and the whole decision is taken again
        (see the module docstring). Each inserted row carries the late event's own source
        coordinates.
        """
        window_us = self.window_us

        def attempt() -> LateInsert:
            self._events.update_incremental()
            classified = classify_late_events(
                late, self.entries({e.key for e in late}, refresh=False)
            )
            if not classified.new:
                return LateInsert(classified, [], [])
            values = self.window_values(
                catalog, {event.slice for event in classified.new}, refresh=False
            )
            sums = {
                key: value.quantity_nanos or 0
                for key, value in values.items()
                if _is_sum(catalog, key)
            }
            inserted, overflowing = fit_in_windows(
                classified.new,
                contributions_of=lambda e: sum_contributions(catalog, e.event, window_us),
                totals=sums,
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

        outcome = retry_commit(attempt, "insert late events into the ledger", self.stats)
        # Late copies counted before with later coordinates stop counting: a copy inserted
        # now takes their place (also when an earlier run was interrupted right here).
        superseded = self.superseded_late_copies({e.key for e in outcome.counted})
        self.void(superseded, void_id=SUPERSEDED, reason=SUPERSEDED)
        return LateInsert(outcome.classified, outcome.inserted, outcome.overflowing, superseded)

    def superseded_late_copies(self, keys: set[tuple[str, str]]) -> list[LedgerCopy]:
        """Counting late copies of these keys that another copy precedes by coordinates."""
        if not keys:
            return []
        self._events.update_incremental()
        ids = pa.array(sorted({event_id for _, event_id in keys}), pa.string())
        found = self._events.to_pyarrow_dataset().to_table(
            columns=[*self._event_columns(full=True), "counted_by"],
            filter=pc.field("id").isin(ids),
        )
        tenants = pa.array(sorted({tenant for tenant, _ in keys}), pa.string())
        voided = set(coordinates_of(self.voided(tenants)))
        copies: dict[tuple[str, str], list[tuple[LedgerCopy, str]]] = {}
        for event, where, counted_by in zip(
            events_of(found),
            coordinates_of(found),
            found.column("counted_by").to_pylist(),
            strict=True,
        ):
            key = (event.tenant_id, event.id)
            if key in keys and where not in voided:
                copies.setdefault(key, []).append((LedgerCopy(event, where), counted_by))
        later = []
        for group in copies.values():
            group.sort(key=lambda entry: entry[0].coordinates)
            later += [copy for copy, by in group[1:] if by == CORRECTIONS_FLOW]
        return later

    def void(self, copies: list[LedgerCopy], *, void_id: str, reason: str) -> int:
        """List these ledger rows in ``voided_events``; return how many were not listed yet."""
        if not copies:
            return 0

        def attempt() -> int:
            self._voided.update_incremental()
            tenants = pa.array(sorted({c.tenant_id for c in copies}), pa.string())
            listed = self.voided(tenants, refresh=False)
            known = set(coordinates_of(listed))
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


def _is_sum(catalog: Catalog, key: WindowKey) -> bool:
    meter = catalog.meter(key[1])
    return meter is not None and meter.aggregation is SUM


def overflowing_copies(
    catalog: Catalog, copies: list[LedgerCopy], window_us: int
) -> list[LedgerCopy]:
    """The copies (in coordinate order) their ``sum`` windows cannot take within the bound.

    What is voided when a window fed by two partitions passes decimal(38, 9).
    """
    _, overflowing = fit_in_windows(
        copies,
        contributions_of=lambda c: sum_contributions(catalog, c.event, window_us),
        totals={},
    )
    return overflowing


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
    events = [c.event for c in copies]
    return pa.Table.from_pydict(
        {
            "tenant_id": pa.array([e.tenant_id for e in events], pa.string()),
            "id": pa.array([e.id for e in events], pa.string()),
            "meter": pa.array([e.meter for e in events], pa.string()),
            "quantity": nullable_decimal_column([e.quantity_nanos for e in events]),
            "event_time": pa.array([e.time_us for e in events], pa.int64()).cast(TIMESTAMP),
            "origin": pa.array([c.coordinates[0] for c in copies], pa.string()),
            "origin_partition": pa.array([c.coordinates[1] for c in copies], pa.int32()),
            "origin_offset": pa.array([c.coordinates[2] for c in copies], pa.int64()),
            "void_id": pa.array([void_id] * len(copies), pa.string()),
            "reason": pa.array([reason] * len(copies), pa.string()),
            "voided_at": pa.array([now] * len(copies), TIMESTAMP),
        },
        schema=VOIDED_EVENTS.schema,
    )
