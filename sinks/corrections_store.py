"""The correction flow's reads and writes of the lake (no decisions: those are in operators).

Reads: new rows of ``late_events`` and ``window_conflicts`` (their change data feed, so a
compaction never replays rows), what the ledger holds for some keys, ledger totals and current
rows of some windows, and audit rows an interrupted run may have written.

Writes, always in this order, so every step is safe to repeat after a crash:

1. late events the ledger lacks → ``events`` (``counted_by = corrections``, carrying the late
   event's own source coordinates, which is how a rerun recognises them; see ``ledger``);
   late copies that conflict with the counted one, or that their window cannot take within
   decimal(38, 9), → ``quarantine``;
2. one ``usage_corrections`` row per window change (the audit row is written *before* the
   change, so no change can exist without its explanation);
3. the changed rows → ``usage_windows`` (MERGE, only a higher revision replaces a row);
4. progress: a commit on ``usage_corrections`` whose ``txn`` versions name the last
   ``late_events`` and ``window_conflicts`` versions fully applied.

Every write that two correction flows could make at once (ledger inserts, quarantine rows,
audit rows) is fenced: it is decided on, and committed through, one table snapshot with a
``txn`` app id all such writers share, so a racing writer's commit makes it start over. A
correction flow started while another runs is therefore safe: neither inserts, quarantines
or audits anything twice.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from meterwax.errors import LakeError
from meterwax.faults import crash_point
from meterwax.operators.aggregates import SliceKey, WindowValue
from meterwax.operators.catalog import Catalog
from meterwax.operators.corrections import (
    ChangeReason,
    CurrentWindow,
    LateClassification,
    LateEvent,
    Summary,
    WindowChange,
    WindowKey,
    classify_late_events,
    plan_window_changes,
    reconcile_with_audit,
    slice_of,
    sums_past_bound,
)
from meterwax.operators.decode import Event
from meterwax.operators.reasons import Reason, conflict_detail, overflow_detail
from meterwax.operators.records import QuarantineRow, SourcePartition
from meterwax.sinks.arrow_rows import (
    CATALOG_CHANGE,
    VOIDED_WHILE_OPEN,
    nullable_decimal_column,
    quarantine_table,
    timestamp_to_micros,
    window_key_columns,
    window_keys,
    window_value_columns,
    window_values,
)
from meterwax.sinks.catalog_table import CatalogStore, published_version
from meterwax.sinks.delta_writes import CommitStats, retry_commit
from meterwax.sinks.lake import Lake
from meterwax.sinks.ledger import (
    COORDINATES,
    Coordinates,
    LateInsert,
    Ledger,
    LedgerCopy,
    coordinates_of,
    events_of,
    overflowing_copies,
)
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
from meterwax.sinks.voids_table import UNDO, VOID, RecordedVoid, VoidStore
from meterwax.sinks.windows_table import (
    existing_windows,
    merge_revised_totals,
    rows_of_windows,
    window_dates,
)

PROGRESS_APPS = (
    "meterwax.corrections.progress.late_events",
    "meterwax.corrections.progress.window_conflicts",
    "meterwax.corrections.progress.events",
    "meterwax.corrections.progress.void_rules",
)
"""The ``txn`` app ids (on usage_corrections) of the input versions fully applied."""


_CONFLICT_REASONS = {
    CATALOG_CHANGE: ChangeReason.METER_CHANGE,
    VOIDED_WHILE_OPEN: ChangeReason.VOID,
}
"""Why a slice of ``window_conflicts`` is recomputed (any other: a second writer)."""


class InputVersions(NamedTuple):
    """Versions of the correction flow's inputs (-1: the table has none yet)."""

    late: int
    conflicts: int
    ledger: int
    """events: new ledger rows are held against the voids in force."""
    voids: int
    """void_rules: new voids and undone ones."""


AUDIT_FENCE = "meterwax.corrections.audit"
"""The ``txn`` app id of every audit append: two correction writers conflict (see
:meth:`CorrectionStore.correct_windows`)."""
QUARANTINE_FENCE = "meterwax.corrections.quarantine"
VOID_OVERFLOW = "window_overflow"
"""The void id of copies voided because their window could not take them."""


@dataclass(frozen=True)
class VoidOutcome:
    """What applying a void found and did."""

    matched: list[LedgerCopy]
    """Every ledger row the void selects."""
    voided: list[LedgerCopy]
    """Those it took back now (the others were voided already)."""
    correction: Correction


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
        self.rules = lake.rules()
        # A lake an older meterwax wrote lacks tables and columns this one writes: add them
        # (nothing is rewritten; a no-op once they are there).
        lake.ensure_tables(None)
        self.window_us = self.rules.window_us
        self.ledger = Ledger(lake, self.window_us, self.stats)
        self.catalogs = CatalogStore(lake)
        self.catalog: Catalog = self.catalogs.current()
        self.voids = VoidStore(lake, self.stats)
        self._events = lake.table(EVENTS)
        self._windows = lake.table(USAGE_WINDOWS)
        self._audit = lake.table(USAGE_CORRECTIONS)
        self._late = lake.table(LATE_EVENTS)
        self._conflicts = lake.table(WINDOW_CONFLICTS)
        self._quarantine = lake.table(QUARANTINE)

    # --- where the flow stands -------------------------------------------------------------

    def follow_catalog(self) -> Catalog:
        """The catalog to compute with: reloaded when a newer version has been published.

        Checked at the start of every fenced attempt (see ``catalog_table``): a version
        published during an attempt makes its commit fail, and the retry computes anew.
        """
        self._audit.update_incremental()
        if published_version(self._audit) > self.catalog.version:
            self.catalog = self.catalogs.current()
        return self.catalog

    def progress(self) -> InputVersions:
        """Versions of the inputs fully applied (-1: none yet)."""
        self._audit.update_incremental()
        found = [self._audit.transaction_version(app) for app in PROGRESS_APPS]
        return InputVersions(*(-1 if v is None else v for v in found))

    def pending(self) -> tuple[int, int]:
        """Late events and window conflicts appended since the applied progress.

        Rows, not versions: a compaction makes a version and appends nothing.
        """
        after, now = self.progress(), self.input_versions()
        return (
            self._changes(self._late, after.late, now.late).num_rows,
            self._changes(self._conflicts, after.conflicts, now.conflicts).num_rows,
        )

    def input_versions(self) -> InputVersions:
        """Current versions of the inputs: late_events, window_conflicts, events, void_rules."""
        for table in (self._late, self._conflicts, self._events):
            table.update_incremental()
        return InputVersions(
            self._late.version(),
            self._conflicts.version(),
            self._events.version(),
            self.voids.version(),
        )

    def record_progress(self, versions: InputVersions) -> None:
        """Commit that everything up to these input versions is applied."""
        marker = CommitProperties(
            app_transactions=[
                Transaction(app, version)
                for app, version in zip(PROGRESS_APPS, versions, strict=True)
                if version >= 0
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
        events = events_of(table)
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

    def read_conflicts(self, after: int, through: int) -> list[tuple[SliceKey, ChangeReason]]:
        """Slices flagged in window_conflicts in versions (after, through], and why.

        A second writer's partial values are a window conflict; a slice that was open when
        the meter catalog changed is a meter change.
        """
        table = self._changes(self._conflicts, after, through)
        if table.num_rows == 0:
            return []
        missing = [None] * table.num_rows
        meters = table.column("meter").to_pylist()
        names = table.column_names
        event_meters = (
            table.column("event_meter").to_pylist() if "event_meter" in names else missing
        )
        reasons = table.column("reason").to_pylist() if "reason" in names else missing
        return [
            (
                (tenant, event_meter or meter, start),
                _CONFLICT_REASONS.get(reason, ChangeReason.WINDOW_CONFLICT),
            )
            for tenant, meter, event_meter, start, reason in zip(
                table.column("tenant_id").to_pylist(),
                meters,
                event_meters,
                timestamp_to_micros(table.column("window_start")),
                reasons,
                strict=True,
            )
        ]

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

    def quarantined_offsets(
        self, origin: str, partition: int, offsets: list[int], *, refresh: bool = True
    ) -> set[int]:
        """Which of these offsets of one source partition already have a quarantine row."""
        if not offsets:
            return set()
        if refresh:
            self._quarantine.update_incremental()
        found = self._quarantine.to_pyarrow_dataset().to_table(
            columns=["origin_offset"],
            filter=(pc.field("origin") == origin)
            & (pc.field("origin_partition") == partition)
            & pc.field("origin_offset").isin(pa.array(offsets, pa.int64())),
        )
        return set(found.column("origin_offset").to_pylist())

    def quarantine(self, where: SourcePartition, rows: list[QuarantineRow], *, flow: str) -> None:
        """Append quarantine rows whose coordinates are not there yet.

        The check and the append go through one snapshot with a shared ``txn`` app id, so
        two writers (two correction flows, a replay) cannot both append the same message.
        """
        if not rows:
            return

        def attempt() -> None:
            self._quarantine.update_incremental()
            known = self.quarantined_offsets(
                where.source, where.partition, [r.offset for r in rows], refresh=False
            )
            fresh = [r for r in rows if r.offset not in known]
            if not fresh:
                return
            write_deltalake(
                self._quarantine,
                quarantine_table(where, fresh, flow=flow, line_numbers=False),
                mode="append",
                commit_properties=CommitProperties(
                    app_transactions=[Transaction(QUARANTINE_FENCE, 0)]
                ),
            )
            self.stats.commits += 1

        retry_commit(attempt, "quarantine rejected messages", self.stats)

    # --- the ledger --------------------------------------------------------------------------

    def late_classification(self, late: list[LateEvent]) -> LateClassification:
        """What inserting ``late`` would find in the ledger (for dry runs; writes nothing)."""
        return classify_late_events(late, self.ledger.entries({e.key for e in late}))

    def insert_late(
        self, late: list[LateEvent], *, counted_by: str, fence_version: int
    ) -> LateInsert:
        """Insert the late events the ledger lacks (see :meth:`Ledger.insert_late`).

        Then quarantine the conflicting copies and those their window cannot take.
        """
        outcome = self.ledger.insert_late(
            late,
            catalog=self.follow_catalog(),
            counted_by=counted_by,
            fence_version=fence_version,
        )
        crash_point("corrections.after_ledger")
        winners = {e.key: e for e in outcome.counted}
        rejected = (
            [
                (event, Reason.CONFLICTING_DUPLICATE, conflict_detail(event.event))
                for event in outcome.classified.conflicting
            ]
            + [
                (late, Reason.CONFLICTING_DUPLICATE, conflict_detail(copy.event))
                for copy in outcome.superseded
                if (late := self._as_late(copy)).content != winners.get(late.key, late).content
            ]
            + [
                (event, Reason.WINDOW_OVERFLOW, overflow_detail(event.event))
                for event in outcome.overflowing
            ]
        )
        self.quarantine_late(rejected, flow=counted_by)
        return outcome

    def _as_late(self, copy: LedgerCopy) -> LateEvent:
        """A ledger copy as the late event it was."""
        event = copy.event
        start = event.time_us - event.time_us % self.window_us
        return LateEvent(event, *copy.coordinates, start)

    def quarantine_late(self, rejected: list[tuple[LateEvent, Reason, str]], *, flow: str) -> None:
        """Quarantine late events a rule rejected, once per source coordinates."""
        by_partition: dict[tuple[str, int], list[QuarantineRow]] = defaultdict(list)
        for event, reason, detail in rejected:
            by_partition[(event.origin, event.origin_partition)].append(
                QuarantineRow(
                    event.origin_offset,
                    reason.value,
                    detail,
                    None,
                    tenant_id=event.event.tenant_id,
                    event_id=event.event.id,
                )
            )
        for (origin, partition), rows in by_partition.items():
            self.quarantine(SourcePartition(origin, partition), rows, flow=flow)

    # --- windows and their audit trail ------------------------------------------------------

    def current_windows(
        self, slices: Iterable[SliceKey], catalog: Catalog
    ) -> dict[WindowKey, CurrentWindow]:
        """The usage_windows rows of these slices' meters (under ``catalog``) as they are now."""
        wanted = set(slices)
        existing = existing_windows(
            self._windows, window_dates(wanted), tenants={key[0] for key in wanted}
        )
        return {key: row for key, row in existing.items() if slice_of(catalog, key) in wanted}

    def audited(
        self, windows: Iterable[WindowKey], *, refresh: bool = True
    ) -> dict[tuple[WindowKey, int], Summary]:
        """Audit rows already written for these windows: (key, revision) → new value."""
        wanted = set(windows)
        if not wanted:
            return {}
        table = rows_of_windows(
            self._audit,
            [
                "tenant_id",
                "meter",
                "window_start",
                "group_key",
                "revision",
                "new_quantity",
                "new_event_count",
                "new_unvalued_count",
            ],
            window_dates(wanted),
            tenants={key[0] for key in wanted},
            refresh=refresh,
        )
        found = {}
        for key, revision, value in zip(
            window_keys(table),
            table.column("revision").to_pylist(),
            window_values(table, prefix="new_"),
            strict=True,
        ):
            if key in wanted:
                found[(key, revision)] = value.summary
        return found

    def correct_windows(
        self,
        reasons: Mapping[SliceKey, Iterable[ChangeReason]],
        *,
        late_ids: Mapping[SliceKey, Iterable[str]] | None = None,
        not_in_ledger_yet: Iterable[Event] = (),
        dry_run: bool = False,
        only_meters: set[str] | None = None,
        catalog: Catalog | None = None,
        void_ids: Mapping[SliceKey, Iterable[str]] | None = None,
        not_counting: Iterable[Coordinates] = (),
    ) -> Correction:
        """The correction sequence: make every window of these slices equal its ledger value.

        Each slice is recomputed from the ledger under the current catalog, for every meter
        (and group) its events feed (voided copies left out; plus ``not_in_ledger_yet``:
        events a dry run would have inserted), compared with the current rows, and the
        differences planned one revision higher (operators' :func:`plan_window_changes`);
        then, unless ``dry_run``, the audit rows are written, then the windows.
        ``only_meters`` limits the changes to some meters, and ``catalog`` (a dry run of
        ``meters apply``) computes under a catalog not published yet. The correction flow,
        replay, ``reconcile --fix``, ``meters apply`` and ``void`` change windows only through
        here. ``void_ids`` name the voids behind a slice's change in its audit rows;
        ``not_counting`` (a dry run of a void) leaves those ledger rows out.

        **Fenced.** The plan and its audit rows are one attempt: the audit rows already there
        are read, and the new ones appended, through one snapshot of ``usage_corrections``
        with a ``txn`` app id every correction writer shares. If another writer audited in
        between, the append fails and the attempt starts over, reading the ledger, the windows
        and the audit trail again; so two correction flows never audit one revision twice, and
        a plan made from an older ledger never lands after a newer one. The windows are then
        merged (a row is replaced only by a higher revision). A ``sum`` window whose ledger
        copies add up past decimal(38, 9) (two source partitions fed it) first has the copies
        that do not fit, in source order, voided.
        """
        affected = set(reasons)
        extra = list(not_in_ledger_yet)
        excluded = list(not_counting)

        def attempt() -> tuple[list[WindowChange], list[WindowChange], list[WindowChange]]:
            computing = catalog or self.follow_catalog()
            recomputed = self.ledger.window_values(
                computing, affected, extra=extra, without=excluded
            )
            # The bound is checked on what this attempt read: rows another partition's flush
            # added since any earlier check are in it. Voiding is idempotent; read again.
            # (Not for a catalog change: ``meters apply`` refuses a version whose sums
            # overflow; it never voids counted events.)
            while (
                not dry_run
                and only_meters is None
                and self._void_overflowing(computing, recomputed)
            ):
                recomputed = self.ledger.window_values(computing, affected, extra=extra)
            current = self.current_windows(affected, computing)
            if only_meters is not None:
                recomputed = {k: v for k, v in recomputed.items() if k[1] in only_meters}
                current = {k: v for k, v in current.items() if k[1] in only_meters}
            changes = plan_window_changes(
                recomputed,
                current,
                catalog=computing,
                window_us=self.window_us,
                late_ids=late_ids or {},
                reasons=reasons,
                void_ids=void_ids,
            )
            if dry_run:
                return changes, [], []
            to_audit, apply_only = reconcile_with_audit(
                changes, self.audited((c.key for c in changes), refresh=False)
            )
            if to_audit:
                write_deltalake(
                    self._audit,
                    _audit_table(to_audit, datetime.now(UTC)),
                    mode="append",
                    commit_properties=CommitProperties(
                        app_transactions=[Transaction(AUDIT_FENCE, 0)]
                    ),
                )
                self.stats.commits += 1
            return changes, to_audit, apply_only

        changes, to_audit, apply_only = retry_commit(attempt, "audit window changes", self.stats)
        if not dry_run:
            crash_point("corrections.after_audit")
            self.apply_to_windows(to_audit + apply_only)
        return Correction(changes, to_audit)

    # --- voids ------------------------------------------------------------------------------

    def apply_void(self, void: RecordedVoid, *, dry_run: bool = False) -> VoidOutcome:
        """Take back every ledger row ``void`` selects, and correct their windows.

        The rows are listed in ``voided_events`` (the ledger is not touched), then every slice
        they were in is recomputed with audit rows naming the void. Rows another void in force
        already took back are left as they are. Safe to repeat: a repeat finds nothing new.
        With ``dry_run``, computes the same windows as if the rows were voided, writes nothing.
        """
        copies = self.ledger.copies_matching(void.rule)
        voided = self._voided_coordinates(copies)
        fresh = [c for c in copies if c.coordinates not in voided]
        # Every slice of every row it selects, voided now or before: a run interrupted after
        # listing the rows and before correcting their windows is finished here.
        slices = {self.ledger.slice_of(c) for c in copies}
        if not dry_run:
            self.ledger.void(fresh, void_id=void.void_id, reason=ChangeReason.VOID)
            crash_point("void.after_voided_events")
        correction = self.correct_windows(
            {key: [ChangeReason.VOID] for key in slices},
            void_ids={key: [void.void_id] for key in slices},
            dry_run=dry_run,
            not_counting=[c.coordinates for c in fresh] if dry_run else (),
        )
        return VoidOutcome(copies, fresh, correction)

    def undo_void(self, void_id: str) -> Correction:
        """Recompute the windows of a void that was undone: its rows count again.

        Unless another void in force selects them too: those are voided again, by it.
        """
        copies = self.ledger.voided_by(void_id)
        reasons: dict[SliceKey, set[ChangeReason]] = defaultdict(set)
        voids: dict[SliceKey, set[str]] = defaultdict(set)
        for copy in copies:
            key = self.ledger.slice_of(copy)
            reasons[key].add(ChangeReason.VOID_UNDONE)
            voids[key].add(void_id)
        self._void_matching(copies, self.voids.active(), reasons, voids)
        return self.correct_windows(reasons, void_ids=voids)

    def undo_overflows(self, void_id: str) -> list[WindowKey]:
        """The ``sum`` windows that would pass decimal(38, 9) if this void's rows counted again.

        Events counted since the void can fill a window its rows left room in; counting them
        back would then void other, billed events instead (the overflow rule), so
        ``void --undo`` refuses. Rows another void in force selects stay voided and are not
        counted here.
        """
        others = [v for v in self.voids.active() if v.void_id != void_id]
        back = [
            copy
            for copy in self.ledger.voided_by(void_id)
            if not any(v.rule.matches(copy.event) for v in others)
        ]
        if not back:
            return []
        catalog = self.follow_catalog()
        slices = {self.ledger.slice_of(copy) for copy in back}
        values = self.ledger.window_values(catalog, slices, extra=[c.event for c in back])
        return sums_past_bound(catalog, values)

    def sweep_voids(
        self, rule_changes: list[tuple[str, str]], appended: list[LedgerCopy]
    ) -> tuple[dict[SliceKey, set[ChangeReason]], dict[SliceKey, set[str]], int]:
        """Apply new voids and undos, and the voids in force to rows new in the ledger.

        Returns the slices to recompute, with their reasons and void ids, and how many rows
        were voided (the correction flow recomputes them with its other work).
        """
        reasons: dict[SliceKey, set[ChangeReason]] = defaultdict(set)
        voids: dict[SliceKey, set[str]] = defaultdict(set)
        active = self.voids.active()
        by_id = {v.void_id: v for v in active}
        count = 0
        for void_id, action in rule_changes:
            if action == UNDO and void_id not in by_id:
                copies = self.ledger.voided_by(void_id)
                for copy in copies:
                    key = self.ledger.slice_of(copy)
                    reasons[key].add(ChangeReason.VOID_UNDONE)
                    voids[key].add(void_id)
                count += self._void_matching(copies, active, reasons, voids)
            elif action == VOID and void_id in by_id:
                copies = self.ledger.copies_matching(by_id[void_id].rule)
                count += self._void_matching(copies, [by_id[void_id]], reasons, voids)
        count += self._void_matching(appended, active, reasons, voids)
        return reasons, voids, count

    def unapplied_voids(self) -> int:
        """Ledger rows a void in force selects that are not voided yet.

        Events that arrived after their void (on time, replayed) count until the correction
        flow's next round lists them; ``reconcile`` reports them instead of calling the lake
        clean.
        """
        count = 0
        for void in self.voids.active():
            copies = self.ledger.copies_matching(void.rule)
            voided = self._voided_coordinates(copies)
            count += sum(1 for copy in copies if copy.coordinates not in voided)
        return count

    def _void_matching(
        self,
        copies: list[LedgerCopy],
        active: list[RecordedVoid],
        reasons: dict[SliceKey, set[ChangeReason]],
        voids: dict[SliceKey, set[str]],
    ) -> int:
        """Void the copies a void in force selects (the first such void, by record time).

        Returns how many were voided now; the slices of all the selected copies are added to
        ``reasons`` and ``voids``.
        """
        if not copies or not active:
            return 0
        voided = self._voided_coordinates(copies)
        taken: dict[str, list[LedgerCopy]] = defaultdict(list)
        for copy in copies:
            void = next((v for v in active if v.rule.matches(copy.event)), None)
            if void is None:
                continue
            # Its window is recomputed even if the row was voided already: a round interrupted
            # between listing rows and correcting windows is finished by the next one.
            key = self.ledger.slice_of(copy)
            reasons[key].add(ChangeReason.VOID)
            voids[key].add(void.void_id)
            if copy.coordinates not in voided:
                taken[void.void_id].append(copy)
        return sum(
            self.ledger.void(chosen, void_id=void_id, reason=ChangeReason.VOID)
            for void_id, chosen in taken.items()
        )

    def voided_among(self, late: list[LateEvent]) -> set[Coordinates]:
        """The coordinates of those late events that are voided now."""
        if not late:
            return set()
        tenants = pa.array(sorted({e.event.tenant_id for e in late}), pa.string())
        listed = set(coordinates_of(self.ledger.voided(tenants)))
        return {e.coordinates for e in late} & listed

    def _voided_coordinates(self, copies: list[LedgerCopy]) -> set[Coordinates]:
        """Which of these rows are voided now (by a void in force, or a duplicate fix)."""
        if not copies:
            return set()
        tenants = pa.array(sorted({c.tenant_id for c in copies}), pa.string())
        listed = self.ledger.voided(tenants)
        return set(zip(*(listed.column(c).to_pylist() for c in COORDINATES), strict=True))

    def _void_overflowing(self, catalog: Catalog, values: Mapping[WindowKey, WindowValue]) -> bool:
        """Void the ledger copies a ``sum`` window cannot take within decimal(38, 9).

        In source order. Only a window fed by more than one source partition can get there
        (each partition's processor keeps its own share within the bound), so the copies are
        read only for slices with a window past the bound. True if anything was voided.
        """
        over = {
            where
            for key in sums_past_bound(catalog, values)
            if (where := slice_of(catalog, key)) is not None
        }
        if not over:
            return False
        copies = self.ledger.copies_in(over)
        overflowing = overflowing_copies(catalog, copies, self.window_us)
        voided = self.ledger.void(
            overflowing, void_id=VOID_OVERFLOW, reason=ChangeReason.WINDOW_OVERFLOW
        )
        if not voided and overflowing:  # pragma: no cover - a void that cannot take effect
            msg = f"windows {sorted(over)} stay past decimal(38, 9) after voiding"
            raise LakeError(msg)
        return bool(overflowing)

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


def _audit_table(changes: list[WindowChange], now: datetime) -> pa.Table:
    previous = [c.previous for c in changes]
    return pa.Table.from_pydict(
        {
            **window_key_columns([c.key for c in changes], [c.window_end_us for c in changes]),
            "revision": pa.array([c.revision for c in changes], pa.int64()),
            "previous_quantity": nullable_decimal_column(
                [None if p is None else p.quantity_nanos for p in previous]
            ),
            "previous_event_count": pa.array(
                [None if p is None else p.event_count for p in previous], pa.int64()
            ),
            "previous_unvalued_count": pa.array(
                [None if p is None else p.unvalued_count for p in previous], pa.int64()
            ),
            "new_quantity": nullable_decimal_column([c.new.quantity_nanos for c in changes]),
            "new_event_count": pa.array([c.new.event_count for c in changes], pa.int64()),
            "new_unvalued_count": pa.array([c.new.unvalued_count for c in changes], pa.int64()),
            "delta_quantity": nullable_decimal_column([c.delta[0] for c in changes]),
            "delta_event_count": pa.array([c.delta[1] for c in changes], pa.int64()),
            "late_event_ids": pa.array(
                [list(c.late_event_ids) for c in changes], pa.list_(pa.string())
            ),
            "reason": pa.array([c.reason for c in changes], pa.string()),
            "corrected_at": pa.array([now] * len(changes), TIMESTAMP),
            "aggregation": pa.array([c.aggregation for c in changes], pa.string()),
            "catalog_version_before": pa.array(
                [c.catalog_version_before for c in changes], pa.int64()
            ),
            "catalog_version_after": pa.array(
                [c.catalog_version_after for c in changes], pa.int64()
            ),
            "void_id": pa.array([c.void_id for c in changes], pa.string()),
        },
        schema=USAGE_CORRECTIONS.schema,
    )


def _window_rows(changes: list[WindowChange], now: datetime) -> pa.Table:
    return pa.Table.from_pydict(
        {
            **window_key_columns([c.key for c in changes], [c.window_end_us for c in changes]),
            "quantity": nullable_decimal_column([c.new.quantity_nanos for c in changes]),
            "event_count": pa.array([c.new.event_count for c in changes], pa.int64()),
            "revision": pa.array([c.revision for c in changes], pa.int64()),
            "updated_at": pa.array([now] * len(changes), TIMESTAMP),
            **window_value_columns([c.new for c in changes]),
            "aggregation": pa.array([c.aggregation for c in changes], pa.string()),
            "catalog_version": pa.array([c.catalog_version_after for c in changes], pa.int64()),
        },
        schema=USAGE_WINDOWS.schema,
    )
