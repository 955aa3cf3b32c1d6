"""``meterwax meters apply``: publish a new catalog version and recompute what it changes.

What a new version changes is decided per meter: a meter is *new* (no meter of that name
before), *changed* (same name, other counting: event meter, aggregation, value, filter or
groups; a unit changes reports only) or *unchanged*. A meter the lake has windows of and the
new version drops would orphan those windows (a rename does the same): refused unless the
operator retires it explicitly (its windows stay, as history, and are no longer updated).

Applying is, in order: store the version (``meter_catalog``), raise the fence on every table
(from then on no writer counts with an older version: see ``sinks.catalog_table``), then
recompute from the ledger every window of every new or changed meter, through the correction
sequence, so each changed window gets one ``usage_corrections`` row with ``reason =
meter_change`` and the catalog versions before and after. Work goes by window date, a batch
of days at a time. An apply that stops half-way (a crash, Ctrl-C) is finished by the next
apply, of the same file (the stored version is found) or of another one (it is planned
against the last version whose recomputation finished, and every version stored since):
the recomputation only writes differences. The version counts as applied once a marker says
so. Two applies at once end as the later version says: each recomputes, under the newest
version, every meter some version since the last finished one defined otherwise.

Every apply first computes what the new definitions give, writing nothing: that is the dry
run's report, and for a real apply the check that no new ``sum`` window passes decimal(38, 9)
(such a version is refused whole: counted events are never voided to fit a definition).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, Transaction, write_deltalake

from meterwax.errors import ConfigError
from meterwax.operators.aggregates import SliceKey
from meterwax.operators.catalog import LEGACY_VERSION, Catalog, MeterDefinition
from meterwax.operators.corrections import (
    ChangeReason,
    WindowChange,
    describe_windows,
    sums_past_bound,
)
from meterwax.operators.timeline import DAY_US
from meterwax.sinks.arrow_rows import timestamp_to_micros
from meterwax.sinks.catalog_table import CatalogStore
from meterwax.sinks.corrections_store import CorrectionStore
from meterwax.sinks.delta_writes import CommitStats, retry_commit
from meterwax.sinks.lake import Lake
from meterwax.sinks.queries import plain_strings
from meterwax.sinks.schemas import EVENTS, METER_CATALOG, TIMESTAMP, USAGE_WINDOWS, TableSpec

APPLIED = "meterwax.meters_apply.done"
"""The ``txn`` (on ``meter_catalog``) with the last version whose recomputation finished."""
DAYS_PER_BATCH = 7


@dataclass(frozen=True)
class CatalogPlan:
    """What applying a catalog file would do."""

    previous: Catalog
    proposed: Catalog
    """The version to publish (its number is the next one, or the stored one when resuming)."""
    new: list[str]
    changed: list[str]
    unchanged: list[str]
    retired: list[str]
    """Meters the lake has windows of that the proposed version drops (only with ``retire``)."""
    resuming: bool
    """The proposed version is stored already: an earlier apply stopped before finishing."""

    @property
    def recomputed(self) -> set[str]:
        """Meters whose windows are recomputed."""
        return set(self.new) | set(self.changed)

    @property
    def nothing_to_do(self) -> bool:
        """The file is the current version, fully applied."""
        return self.proposed.version == self.previous.version


@dataclass
class ApplyReport:
    """What an apply (or its dry run) changed, per meter."""

    plan: CatalogPlan
    changes: list[WindowChange] = field(default_factory=list)
    audited: int = 0
    slices: int = 0

    def per_meter(self) -> dict[str, Counter[str]]:
        """Per recomputed meter: windows new, changed and emptied."""
        counts: dict[str, Counter[str]] = {name: Counter() for name in self.plan.recomputed}
        for change in self.changes:
            kind = (
                "new"
                if change.previous is None
                else "emptied"
                if change.new.event_count == 0 and change.new.unvalued_count == 0
                else "changed"
            )
            counts.setdefault(change.key[1], Counter())[kind] += 1
        return counts


def plan_catalog(
    lake: Lake, meters: list[MeterDefinition], *, retire: Iterable[str] = ()
) -> CatalogPlan:
    """Compare the file's meters with the lake's catalog; ConfigError for orphaned windows.

    The comparison is with the last version whose recomputation finished (the windows were
    computed under it) and with every version stored since: a meter that differs from any of
    them is recomputed, so an apply interrupted before the one at hand is finished by it.
    """
    store = CatalogStore(lake)
    current = store.current()
    applied = applied_version(lake)
    candidate = Catalog(current.version + 1, tuple(meters))
    resuming = False
    if not current.is_legacy and current.to_json() == candidate.to_json():
        if applied >= current.version:
            return CatalogPlan(current, current, [], [], [m.name for m in meters], [], False)
        resuming = True
        candidate = current
    baseline = store.version(min(applied, current.version))
    since = _versions_between(store, baseline.version, candidate.version)
    new, changed, unchanged = [], [], []
    for meter in sorted(candidate.meters, key=lambda m: m.name):
        before = baseline.meter(meter.name)
        if baseline.is_legacy and meter.name not in _window_meters(lake):
            before = None  # a name no window has is new, whatever "no catalog" would make of it
        if before is None:
            new.append(meter.name)
        elif before.same_counting(meter) and all(
            (other := version.meter(meter.name)) is not None and other.same_counting(meter)
            for version in since
        ):
            unchanged.append(meter.name)
        else:
            changed.append(meter.name)
    dropped = _dropped(lake, current, candidate)
    retiring = set(retire)
    unknown = retiring - set(dropped)
    if unknown:
        msg = (
            f"--retire {', '.join(sorted(unknown))}: not a meter this version drops (dropped: "
            f"{', '.join(sorted(dropped)) or 'none'})"
        )
        raise ConfigError(msg)
    orphaned = {name: count for name, count in dropped.items() if name not in retiring}
    if orphaned:
        raise ConfigError(_orphan_message(orphaned, current, candidate))
    return CatalogPlan(baseline, candidate, new, changed, unchanged, sorted(retiring), resuming)


def _versions_between(store: CatalogStore, after: int, before: int) -> list[Catalog]:
    """The stored versions after ``after`` and before ``before``."""
    return [store.version(number) for number in range(after + 1, before)]


def applied_version(lake: Lake) -> int:
    """The last catalog version whose recomputation finished (0: none)."""
    if not lake.exists(METER_CATALOG):
        return LEGACY_VERSION
    version = lake.table(METER_CATALOG).transaction_version(APPLIED)
    return LEGACY_VERSION if version is None else version


def _window_meters(lake: Lake) -> dict[str, int]:
    """Meter name → number of usage_windows rows."""
    if not lake.exists(USAGE_WINDOWS):
        return {}
    rows = lake.table(USAGE_WINDOWS).to_pyarrow_dataset().to_table(columns=["meter"])
    counts = rows.group_by("meter").aggregate([("meter", "count")])
    return dict(
        zip(
            counts.column("meter").to_pylist(),
            counts.column("meter_count").to_pylist(),
            strict=True,
        )
    )


def _dropped(lake: Lake, current: Catalog, candidate: Catalog) -> dict[str, int]:
    """Meters with windows that ``current`` computes and ``candidate`` does not."""
    return {
        name: count
        for name, count in _window_meters(lake).items()
        if current.meter(name) is not None and candidate.meter(name) is None
    }


def _orphan_message(orphaned: dict[str, int], current: Catalog, candidate: Catalog) -> str:
    parts = []
    for name, count in sorted(orphaned.items()):
        before = current.meter(name)
        twins = [
            m.name
            for m in candidate.meters
            if before is not None and before.same_counting(m) and current.meter(m.name) is None
        ]
        rename = f" (renamed to {twins[0]!r}?)" if twins else ""
        parts.append(f"meter {name!r}{rename} has {count:,} windows")
    return (
        "this catalog drops meters the lake has windows of: "
        + "; ".join(parts)
        + ". Renaming or removing a meter would orphan its windows: keep the name (a new "
        "name is a new meter, recomputed from the ledger), or pass --retire NAME to keep "
        "the windows as history and stop computing them"
    )


def apply_catalog(
    lake: Lake,
    plan: CatalogPlan,
    *,
    source_format: str,
    note: str | None = None,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ApplyReport:
    """Publish ``plan.proposed`` and recompute its new and changed meters.

    With ``dry_run``, compute what that would change under the proposed catalog and write
    nothing.
    """
    report = ApplyReport(plan)
    if plan.nothing_to_do:
        return report
    if lake.window_us() is None:  # no run has written this lake yet: nothing to recompute
        if not dry_run:
            proposed = _publish(lake, plan, source_format, note)
            _mark_applied(lake, proposed.version)
        return report
    store = CorrectionStore(lake)
    meters = plan.recomputed
    batches = _slice_batches(lake, plan.proposed, meters, store.window_us)
    report.slices = sum(len(batch) for batch in batches)
    # First what the new definitions give, under the proposed catalog, writing nothing: the
    # dry run's report, and for a real apply the check that every new sum fits decimal(38, 9)
    # (a version is refused whole rather than void counted events it cannot represent).
    for number, batch in enumerate(batches, start=1):
        correction = store.correct_windows(
            {key: [ChangeReason.METER_CHANGE] for key in batch},
            only_meters=meters,
            dry_run=True,
            catalog=plan.proposed,
        )
        report.changes += correction.changes
        if progress is not None:
            progress(number, 2 * len(batches) if not dry_run else len(batches))
    if dry_run:
        return report
    _refuse_overflow(plan.proposed, report.changes)
    proposed = _publish(lake, plan, source_format, note)
    if proposed.version != plan.proposed.version:
        # Another apply stored a version in between: recompute every meter that differs from
        # what that one (or the baseline) defined, not only what this plan saw.
        meters |= _changed_since(CatalogStore(lake), proposed, plan.previous.version)
    # The slices again, now the fence is up: a flow still on the old version may have added
    # ledger rows since they were first listed, and can add none from here on.
    batches = _slice_batches(lake, proposed, meters, store.window_us)
    store.catalog = proposed
    report.changes = []
    for number, batch in enumerate(batches, start=1):
        correction = store.correct_windows(
            {key: [ChangeReason.METER_CHANGE] for key in batch},
            only_meters=meters,
        )
        report.changes += correction.changes
        report.audited += len(correction.audited)
        if progress is not None:
            progress(len(batches) + number, 2 * len(batches))
    _mark_applied(lake, proposed.version)
    return report


def _publish(lake: Lake, plan: CatalogPlan, source_format: str, note: str | None) -> Catalog:
    catalogs = CatalogStore(lake)
    stored = catalogs.append(plan.proposed, source_format=source_format, note=note)
    catalogs.publish(stored.version)
    return stored


def _changed_since(store: CatalogStore, catalog: Catalog, baseline: int) -> set[str]:
    """Meters of ``catalog`` that some version from ``baseline`` on defines otherwise."""
    versions = [store.version(baseline), *_versions_between(store, baseline, catalog.version)]
    return {
        meter.name
        for meter in catalog.meters
        if any(
            (other := version.meter(meter.name)) is None or not other.same_counting(meter)
            for version in versions
        )
    }


def _refuse_overflow(catalog: Catalog, changes: list[WindowChange]) -> None:
    """ConfigError if a ``sum`` window of the new definitions passes decimal(38, 9)."""
    over = sums_past_bound(catalog, {change.key: change.new for change in changes})
    if not over:
        return
    msg = (
        f"this catalog's sums would pass decimal(38, 9) (29 digits before the point) in "
        f"{len(over):,} windows, e.g. {describe_windows(over)}: the values are in another unit "
        "than the meter "
        "expects. Nothing was applied"
    )
    raise ConfigError(msg)


def _slice_batches(
    lake: Lake, catalog: Catalog, meters: set[str], window_us: int
) -> list[list[SliceKey]]:
    """The slices a recomputation of ``meters`` touches, in batches of a few window days.

    Every slice of the ledger events these meters read, and every slice that holds a window
    of theirs already (a window the ledger no longer feeds is set to the value of nothing).
    """
    definitions = [m for m in catalog.meters if m.name in meters]
    event_meters = sorted({m.event_meter for m in definitions})
    slices: set[SliceKey] = set()
    if event_meters and lake.exists(EVENTS):
        rows = (
            lake.table(EVENTS)
            .to_pyarrow_dataset()
            .to_table(
                columns=["tenant_id", "meter", "event_time"],
                filter=pc.field("meter").isin(pa.array(event_meters, pa.string())),
            )
        )
        micros = rows.column("event_time").cast(TIMESTAMP).cast(pa.int64()).to_numpy()
        slices.update(
            zip(
                rows.column("tenant_id").to_pylist(),
                rows.column("meter").to_pylist(),
                (micros - micros % window_us).tolist(),
                strict=True,
            )
        )
    event_meter_of = {m.name: m.event_meter for m in definitions}
    if lake.exists(USAGE_WINDOWS):
        windows = _rows_of_meters(
            lake, USAGE_WINDOWS, ["tenant_id", "meter", "window_start"], sorted(meters)
        )
        slices.update(
            (tenant, event_meter_of[meter], start)
            for tenant, meter, start in zip(
                windows.column("tenant_id").to_pylist(),
                windows.column("meter").to_pylist(),
                timestamp_to_micros(windows.column("window_start")),
                strict=True,
            )
        )
    by_batch: dict[int, list[SliceKey]] = defaultdict(list)
    for key in sorted(slices, key=lambda k: (k[2], k[0], k[1])):
        by_batch[key[2] // (DAYS_PER_BATCH * DAY_US)].append(key)
    return [by_batch[batch] for batch in sorted(by_batch)]


def _rows_of_meters(lake: Lake, spec: TableSpec, columns: list[str], meters: list[str]) -> pa.Table:
    """``columns`` of the rows of ``spec`` whose ``meter`` is one of ``meters``.

    Filtered after reading the three narrow columns: a dataset filter on a string column
    trips over statistics typed ``string_view`` in some Delta files.
    """
    rows = plain_strings(lake.table(spec).to_pyarrow_dataset().to_table(columns=columns))
    return rows.filter(pc.is_in(rows.column("meter"), pa.array(meters, pa.string())))


def _mark_applied(lake: Lake, version: int) -> None:
    """Record that ``version``'s recomputation finished (never lowering the marker)."""

    def attempt() -> None:
        table = lake.table(METER_CATALOG)
        if (table.transaction_version(APPLIED) or LEGACY_VERSION) >= version:
            return
        write_deltalake(
            table,
            METER_CATALOG.schema.empty_table(),
            mode="append",
            commit_properties=CommitProperties(app_transactions=[Transaction(APPLIED, version)]),
        )

    retry_commit(attempt, "record a finished catalog apply", CommitStats())
