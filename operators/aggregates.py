"""Events → meter windows, for every aggregation of the catalog: one code for every path.

The main flow accumulates a window event by event as it reads (:class:`CatalogWindows`); the
correction flow, replay, reconcile and ``meters apply`` recompute windows from the ledger
(:func:`aggregate`). Both feed the same :func:`accumulate`, so a window recomputed from the
ledger equals the one the main flow wrote from the same events, whatever their order.

A window is keyed by :data:`WindowKey` (tenant, meter, start, group key). The ledger events
behind it are a *slice*, :data:`SliceKey` (tenant, event meter, start): the unit late events
and conflicts name, and the unit every correction recomputes, because one slice's events feed
every meter (and group) defined on its event meter.

An accumulator is a small list, ``[value, events, unvalued, extra]``: ``value`` is the running
sum (``sum``), least or greatest value (``min``, ``max``) or the latest value (``latest``, with
its ``(time, id)`` rank in ``extra``); ``unique_count`` keeps its distinct texts in ``extra``;
``count`` needs only ``events``. Lists, because the main flow updates one per event.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from meterwax.operators.catalog import (
    Aggregation,
    Catalog,
    MeterDefinition,
    field_text,
    group_key,
    matches,
    numeric_value,
)
from meterwax.operators.contract import MAX_QUANTITY_NANOS, NANOS_PER_UNIT
from meterwax.operators.event import Event

SliceKey = tuple[str, str, int]
"""(tenant_id, event meter, window start in µs): the ledger events of one window."""
WindowKey = tuple[str, str, int, str]
"""(tenant_id, meter, window start in µs, group key): one ``usage_windows`` row."""

SUM, COUNT, MIN, MAX, LATEST, UNIQUE_COUNT = (
    Aggregation.SUM,
    Aggregation.COUNT,
    Aggregation.MIN,
    Aggregation.MAX,
    Aggregation.LATEST,
    Aggregation.UNIQUE_COUNT,
)
_NO_VALUE = frozenset({MIN, MAX, LATEST})
"""Aggregations whose window has no value (NULL) until an event gives it one."""


class WindowValue(NamedTuple):
    """What a meter window holds: its value and how many events made it.

    ``quantity_nanos`` is the meter's value in nano-units: the sum, the count or the number of
    distinct values (× 10⁹), the least, greatest or latest value (None while no event has
    given one). ``event_count`` counts the events that contributed, ``unvalued_count`` those
    the meter took but could not value (the field was missing or not a decimal).
    """

    quantity_nanos: int | None
    event_count: int
    unvalued_count: int = 0
    distinct: tuple[str, ...] | None = None
    """``unique_count``: the distinct values, sorted (rollups count them over a period)."""
    latest: tuple[int, str] | None = None
    """``latest``: (event time, id) of the event whose value the window holds."""

    @property
    def summary(self) -> tuple[int | None, int, int]:
        """(quantity, events, unvalued): what an audit row records of a value."""
        return (self.quantity_nanos, self.event_count, self.unvalued_count)


def empty_value(aggregation: Aggregation) -> WindowValue:
    """A window of this aggregation that no event contributes to (any more)."""
    quantity = None if aggregation in _NO_VALUE else 0
    return WindowValue(quantity, 0, 0, () if aggregation is UNIQUE_COUNT else None, None)


Contribution = tuple[MeterDefinition, str, "int | str | None"]
"""(meter, group key, value): nano-units, a text for ``unique_count``, 0 for ``count``, or
None when the meter takes the event but cannot value it."""


def contributions(catalog: Catalog, event: Event) -> list[Contribution]:
    """What ``event`` gives to each meter of the catalog that takes it."""
    found: list[Contribution] = []
    for meter in catalog.meters_for(event.meter):
        if meter.filter and not matches(meter, event):
            continue
        aggregation = meter.aggregation
        if aggregation is COUNT:
            value: int | str | None = 0
        elif aggregation is UNIQUE_COUNT:
            value = field_text(event, meter.value)
        else:
            value = numeric_value(meter, event)
        found.append((meter, group_key(meter, event), value))
    return found


def new_accumulator(aggregation: Aggregation) -> list:
    """An accumulator with nothing in it (see the module docstring for its layout)."""
    return [0 if aggregation is SUM else None, 0, 0, set() if aggregation is UNIQUE_COUNT else None]


def fits(accumulator: list, aggregation: Aggregation, value: int | str | None) -> bool:
    """False if adding ``value`` would take a ``sum`` window past decimal(38, 9)."""
    return aggregation is not SUM or value is None or accumulator[0] + value <= MAX_QUANTITY_NANOS


def accumulate(
    accumulator: list, aggregation: Aggregation, value: int | str | None, event: Event
) -> None:
    """Add one event's contribution to an accumulator."""
    if value is None:
        accumulator[2] += 1
        return
    accumulator[1] += 1
    if aggregation is SUM:
        accumulator[0] += value
    elif aggregation is UNIQUE_COUNT:
        accumulator[3].add(value)
    elif aggregation is MAX:
        if accumulator[0] is None or value > accumulator[0]:
            accumulator[0] = value
    elif aggregation is MIN:
        if accumulator[0] is None or value < accumulator[0]:
            accumulator[0] = value
    elif aggregation is LATEST:
        rank = (event.time_us, event.id)
        if accumulator[3] is None or rank > accumulator[3]:
            accumulator[0], accumulator[3] = value, rank


def value_of(accumulator: list, aggregation: Aggregation) -> WindowValue:
    """The window value an accumulator stands for."""
    quantity, events, unvalued, extra = accumulator
    if aggregation is COUNT:
        return WindowValue(events * NANOS_PER_UNIT, events, unvalued)
    if aggregation is UNIQUE_COUNT:
        return WindowValue(len(extra) * NANOS_PER_UNIT, events, unvalued, tuple(sorted(extra)))
    if aggregation is LATEST:
        return WindowValue(quantity, events, unvalued, None, extra)
    return WindowValue(quantity, events, unvalued)


def copy_accumulator(accumulator: list) -> list:
    """A copy later updates cannot change (a snapshot)."""
    copied = list(accumulator)
    if isinstance(copied[3], set):
        copied[3] = set(copied[3])
    return copied


def aggregate(
    catalog: Catalog, events: Iterable[Event], window_us: int
) -> dict[WindowKey, tuple[MeterDefinition, WindowValue]]:
    """Every meter window of these (counted) events, from scratch.

    Sums are not bounded here: a window whose events add up past decimal(38, 9) comes back
    as it is, for the caller to void copies (see ``fit_in_windows``).
    """
    accumulators: dict[WindowKey, tuple[MeterDefinition, list]] = {}
    for event in events:
        start = event.time_us - event.time_us % window_us
        for meter, key, value in contributions(catalog, event):
            window = (event.tenant_id, meter.name, start, key)
            entry = accumulators.get(window)
            if entry is None:
                entry = accumulators[window] = (meter, new_accumulator(meter.aggregation))
            accumulate(entry[1], meter.aggregation, value, event)
    return {
        window: (meter, value_of(accumulator, meter.aggregation))
        for window, (meter, accumulator) in accumulators.items()
    }


def sum_contributions(
    catalog: Catalog, event: Event, window_us: int
) -> list[tuple[WindowKey, int]]:
    """The ``sum`` windows ``event`` adds to, and how much.

    What the decimal(38, 9) bound is checked on, everywhere a total is formed.
    """
    start = event.time_us - event.time_us % window_us
    return [
        ((event.tenant_id, meter.name, start, key), value)
        for meter, key, value in contributions(catalog, event)
        if meter.aggregation is SUM and value is not None
    ]
