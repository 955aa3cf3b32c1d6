"""The pure decisions of the correction flow: which late events count, which windows change.

The correction flow (``flows/corrections.py``) reads late events and window conflicts from the
lake, asks the ledger what it already holds, and then relies on the functions here:

- :func:`classify_late_events`: a late event is *new* (insert it), was *already inserted* by an
  earlier, interrupted run of this same correction (the ledger row carries its coordinates), is
  a *duplicate* of an event counted before, however long ago, or a *conflicting* duplicate (the
  same key counted with another meter, quantity or time: quarantined).
- :func:`fit_in_windows`: which events their ``sum`` windows can take before a total passes
  decimal(38, 9), in source order; the rest are quarantined (late events) or voided (ledger
  copies of a window fed by two partitions).
- :func:`plan_window_changes`: given every affected window's value recomputed from the ledger
  and its current row, the changes to make, each one revision higher than the row it replaces.

Corrections work by *slice* (tenant, event meter, window start: see ``aggregates``): a late
event or a conflict names its slice, and recomputing a slice recomputes every meter window
(and group) its events feed, under the current catalog.
- :func:`reconcile_with_audit`: given audit rows that an interrupted run may already have
  written, which changes still need an audit row (so a retry never writes one twice and an
  audit row always describes the change that was applied).

All of it is deterministic: the same inputs give the same answers in the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TypeVar

from meterwax.operators.aggregates import SUM, SliceKey, WindowKey, WindowValue, empty_value
from meterwax.operators.catalog import Catalog
from meterwax.operators.contract import MAX_QUANTITY_NANOS
from meterwax.operators.decode import Event
from meterwax.operators.dedupe import UNKNOWN_CONTENT, event_content
from meterwax.operators.timeline import format_micros

__all__ = ["SliceKey", "WindowKey", "WindowValue"]

CORRECTIONS_FLOW = "corrections"
"""The ``counted_by`` value of ledger rows the correction flow inserted."""


class ChangeReason(StrEnum):
    """Why a window changed after its first write (the ``reason`` of an audit row)."""

    LATE_EVENTS = "late_events"
    WINDOW_CONFLICT = "window_conflict"
    RECONCILE_FIX = "reconcile_fix"
    REPLAY = "replay"
    DUPLICATE_KEY = "duplicate_key"
    """A key counted twice (a retry beyond the dedupe horizon): the later copy was voided."""
    WINDOW_OVERFLOW = "window_overflow"
    """Copies that would take the window past decimal(38, 9) were voided."""
    METER_CHANGE = "meter_change"
    """The meter's definition changed (``meters apply``), or the window was open when it did."""
    VOID = "void"
    """An operator voided events of the window (``meterwax void``); the audit row names it."""
    VOID_UNDONE = "void_undone"
    """A void was undone: its events count again."""


@dataclass(frozen=True, slots=True)
class LateEvent:
    """A row of ``late_events``: the event and where the main flow read it."""

    event: Event
    origin: str
    origin_partition: int
    origin_offset: int
    window_start_us: int

    @property
    def key(self) -> tuple[str, str]:
        """The idempotency key (tenant_id, id)."""
        return (self.event.tenant_id, self.event.id)

    @property
    def coordinates(self) -> tuple[str, int, int]:
        """Where it was read: (origin, partition, offset)."""
        return (self.origin, self.origin_partition, self.origin_offset)

    @property
    def slice(self) -> SliceKey:
        """(tenant_id, event meter, window start): the ledger events it joins."""
        return (self.event.tenant_id, self.event.meter, self.window_start_us)

    @property
    def content(self) -> int:
        """What the event bills, as the dedupe index fingerprints it."""
        event = self.event
        return event_content(event.meter, event.quantity_nanos, event.time_us, event.data)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """What the ledger holds for one key: who counted it, from where, and what."""

    counted_by: str
    coordinates: tuple[str, int, int]
    content: int = UNKNOWN_CONTENT
    """The counted copy's content fingerprint (``dedupe.event_content``)."""
    voided: bool = False
    """The copy was taken back (a void in force, or a repair): the key is never counted again,
    whichever copy comes later or from where."""


@dataclass(frozen=True, slots=True)
class LateClassification:
    """The late events of a batch, split by what becomes of them."""

    new: list[LateEvent]
    """Not in the ledger: insert them."""
    already_inserted: list[LateEvent]
    """In the ledger with their own source coordinates: the same message, counted by an
    earlier, interrupted run of this correction (or by a replay of its range)."""
    duplicates: list[LateEvent]
    """Counted before (by the main flow, another correction, or earlier in this batch)."""
    conflicting: list[LateEvent]
    """Counted before with other content: a producer bug, quarantined, never counted."""
    superseding: list[tuple[LateEvent, LedgerEntry]] = field(default_factory=list)
    """New late copies (also in ``new``) that take the place of a late copy the ledger counted
    with later source coordinates: among late copies of a key the first by coordinates
    counts, whenever the correction flow happens to see them."""

    @property
    def counted(self) -> list[LateEvent]:
        """Late events that this correction counts (inserted now or by its interrupted run)."""
        return sorted(self.new + self.already_inserted, key=lambda e: e.coordinates)


def classify_late_events(
    late: Iterable[LateEvent], ledger: Mapping[tuple[str, str], LedgerEntry]
) -> LateClassification:
    """Split late events into new, already inserted by this correction, and duplicates.

    Within the batch the first event of a key (by source coordinates) wins, and so it does
    against a late copy an earlier batch counted with later coordinates (``superseding``),
    unless that copy was voided: a voided key is not counted again through another copy. A
    copy whose content differs from the counted one (or from the batch's first) is
    conflicting, not a duplicate.
    """
    new: list[LateEvent] = []
    already: list[LateEvent] = []
    duplicates: list[LateEvent] = []
    conflicting: list[LateEvent] = []
    superseding: list[tuple[LateEvent, LedgerEntry]] = []
    first_content: dict[tuple[str, str], int] = {}
    for item in sorted(late, key=lambda e: e.coordinates):
        content = item.content
        known = first_content.get(item.key)
        if known is not None:
            (duplicates if known == content else conflicting).append(item)
            continue
        entry = ledger.get(item.key)
        if entry is None:
            first_content[item.key] = content
            new.append(item)
        elif entry.coordinates == item.coordinates:
            first_content[item.key] = content
            already.append(item)  # the very same message, counted by an earlier run (or replay)
        elif (
            entry.counted_by == CORRECTIONS_FLOW
            and item.coordinates < entry.coordinates
            and not entry.voided
        ):
            first_content[item.key] = content  # it comes first: it counts, in that one's place
            new.append(item)
            superseding.append((item, entry))
        else:
            first_content[item.key] = entry.content if entry.content != UNKNOWN_CONTENT else content
            same = entry.content in (content, UNKNOWN_CONTENT)
            (duplicates if same else conflicting).append(item)
    return LateClassification(new, already, duplicates, conflicting, superseding)


def sums_past_bound(catalog: Catalog, values: Mapping[WindowKey, WindowValue]) -> list[WindowKey]:
    """The ``sum`` windows among ``values`` whose total passes decimal(38, 9), by key.

    One test for every place that must refuse or repair such a total: a catalog change, an
    undo, and two partitions' shares of one window met in a correction.
    """
    return sorted(
        key
        for key, value in values.items()
        if (meter := catalog.meter(key[1])) is not None
        and meter.aggregation is SUM
        and (value.quantity_nanos or 0) > MAX_QUANTITY_NANOS
    )


def describe_windows(keys: Iterable[WindowKey], *, most: int = 5) -> str:
    """``meter of tenant at time`` for the first ``most`` windows, for an error message."""
    return ", ".join(
        f"{key[1]} of {key[0]} at {format_micros(key[2])}" for key in list(keys)[:most]
    )


Item = TypeVar("Item")
Key = TypeVar("Key")


def fit_in_windows(
    items: Iterable[Item],
    *,
    contributions_of: Callable[[Item], Iterable[tuple[Key, int]]],
    totals: Mapping[Key, int],
) -> tuple[list[Item], list[Item]]:
    """Split ``items`` (in the order given) into those their windows can take and the rest.

    Each item adds to some ``sum`` windows (``contributions_of``: window → nano-units). A
    window starts at ``totals`` (nano-units already in it); an item is taken if every window
    it adds to stays within decimal(38, 9), and then adds to all of them; otherwise it is
    left out, adds to none, and later, smaller items may still fit. The same rule as the main
    flow's, for every other place a total is formed.
    """
    running = dict(totals)
    kept: list[Item] = []
    left_out: list[Item] = []
    for item in items:
        adds = list(contributions_of(item))
        if any(running.get(key, 0) + amount > MAX_QUANTITY_NANOS for key, amount in adds):
            left_out.append(item)
            continue
        for key, amount in adds:
            running[key] = running.get(key, 0) + amount
        kept.append(item)
    return kept, left_out


@dataclass(frozen=True, slots=True)
class CurrentWindow:
    """A ``usage_windows`` row as it is now."""

    value: WindowValue
    revision: int
    catalog_version: int = 0
    aggregation: str = "sum"
    """How the value was formed (rows from before catalogs: sum)."""


@dataclass(frozen=True, slots=True)
class WindowChange:
    """One change to one window: the audit row and the new ``usage_windows`` row."""

    key: WindowKey
    window_end_us: int
    revision: int
    previous: WindowValue | None
    new: WindowValue
    late_event_ids: tuple[str, ...]
    reason: str
    aggregation: str = "sum"
    catalog_version_before: int | None = None
    catalog_version_after: int = 0
    void_id: str | None = None
    """The void(s) that caused the change, ``+``-joined (None: no void)."""

    @property
    def delta(self) -> tuple[int | None, int]:
        """New minus previous: (quantity in nano-units, or None if either has no value; count)."""
        before = self.previous or WindowValue(0, 0)
        quantity = (
            None
            if self.new.quantity_nanos is None or before.quantity_nanos is None
            else self.new.quantity_nanos - before.quantity_nanos
        )
        if self.previous is None and self.new.quantity_nanos is not None:
            quantity = self.new.quantity_nanos
        return (quantity, self.new.event_count - before.event_count)


def slice_of(catalog: Catalog, key: WindowKey) -> SliceKey | None:
    """The slice a window's events come from (None: its meter is not in ``catalog``)."""
    meter = catalog.meter(key[1])
    return None if meter is None else (key[0], meter.event_meter, key[2])


def plan_window_changes(
    recomputed: Mapping[WindowKey, WindowValue],
    current: Mapping[WindowKey, CurrentWindow],
    *,
    catalog: Catalog,
    window_us: int,
    late_ids: Mapping[SliceKey, Iterable[str]],
    reasons: Mapping[SliceKey, Iterable[ChangeReason]],
    void_ids: Mapping[SliceKey, Iterable[str]] | None = None,
) -> list[WindowChange]:
    """The changes that make every window equal its value recomputed from the ledger.

    ``recomputed`` and ``current`` hold the windows of the affected slices, under ``catalog``;
    a window the ledger no longer feeds (its events voided, or moved to another group) gets
    the value of no events. A window whose row already equals the ledger is left alone (no
    audit row); a window with no row and no events needs nothing. Ordered by key.
    """
    changes = []
    for key in sorted(set(recomputed) | set(current)):
        meter = catalog.meter(key[1])
        if meter is None:
            continue  # a meter the catalog no longer has: its windows are history
        empty = empty_value(meter.aggregation)
        new = recomputed.get(key, empty)
        row = current.get(key)
        if row is None and new == empty:
            continue
        if row is not None and row.value == new and row.aggregation == meter.aggregation.value:
            continue  # a value that is the same under another aggregation is relabelled
        where = (key[0], meter.event_meter, key[2])
        voids = sorted(set((void_ids or {}).get(where, ())))
        changes.append(
            WindowChange(
                key=key,
                window_end_us=key[2] + window_us,
                revision=row.revision + 1 if row is not None else 1,
                previous=row.value if row is not None else None,
                new=new,
                late_event_ids=tuple(sorted(set(late_ids.get(where, ())))),
                reason="+".join(sorted({r.value for r in reasons.get(where, ())})) or "unknown",
                aggregation=meter.aggregation.value,
                catalog_version_before=row.catalog_version if row is not None else None,
                catalog_version_after=catalog.version,
                void_id="+".join(voids) or None,
            )
        )
    return changes


Summary = tuple[int | None, int, int]
"""(quantity, events, unvalued) of an audit row's new value: see ``WindowValue.summary``."""


def reconcile_with_audit(
    changes: Iterable[WindowChange], audited: Mapping[tuple[WindowKey, int], Summary]
) -> tuple[list[WindowChange], list[WindowChange]]:
    """Split planned changes into (to audit and apply, to apply only).

    ``audited`` maps (key, revision) to the new values of audit rows already written. A change
    whose audit row exists with the same new value was audited by an interrupted run: apply
    it, don't audit it again. If the audit row exists with *another* value (the ledger moved in
    between), the audited change is taken as applied and the new change is chained after it,
    one revision higher, so the audit trail stays a gap-free sequence.
    """
    to_audit: list[WindowChange] = []
    apply_only: list[WindowChange] = []
    for change in changes:
        existing = audited.get((change.key, change.revision))
        if existing is None:
            to_audit.append(change)
        elif existing == change.new.summary:
            apply_only.append(change)
        else:
            chained = change
            while (chained.key, chained.revision) in audited:
                chained = replace(
                    chained,
                    revision=chained.revision + 1,
                    previous=WindowValue(*audited[(chained.key, chained.revision)]),
                )
            if chained.previous is not None and chained.previous.summary == chained.new.summary:
                apply_only.append(replace(chained, revision=chained.revision - 1))
            else:
                to_audit.append(chained)
    return to_audit, apply_only
