"""Tumbling event-time windows: arithmetic and the accumulator of open windows.

Windows are aligned to the Unix epoch, so 1-minute, 1-hour and 1-day windows start on UTC
minute, hour and day boundaries. A window covers ``[start, start + length)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from heapq import heapify, heappop, heappush
from typing import NamedTuple

from meterwax.operators.aggregates import (
    WindowValue,
    accumulate,
    contributions,
    copy_accumulator,
    fits,
    new_accumulator,
    value_of,
)
from meterwax.operators.catalog import Aggregation, Catalog
from meterwax.operators.contract import MAX_QUANTITY_NANOS
from meterwax.operators.event import Event
from meterwax.operators.timeline import DAY_US


def window_start(time_us: int, length_us: int) -> int:
    """The start of the window that contains ``time_us`` (ints or numpy arrays of them)."""
    return time_us - time_us % length_us


def window_days(start_us: int, length_us: int) -> range:
    """The UTC days (since the epoch) a window's events can fall on.

    A window that does not divide a day (7 minutes) or is longer than one (2 days) crosses
    midnight: its events are in more than one ``event_date`` partition of the ledger.
    """
    return range(start_us // DAY_US, (start_us + length_us - 1) // DAY_US + 1)


class ClosedWindow(NamedTuple):
    """The final on-time total of one (tenant, meter, window).

    A named tuple, not a frozen dataclass: one is built per window closed, and with many
    tenants that is nearly one per event (a tuple is built about three times faster).
    """

    tenant_id: str
    meter: str
    start_us: int
    end_us: int
    quantity_nanos: int
    event_count: int


class OpenWindows:
    """Running exact totals of the windows that are still open, grouped by window start.

    Totals are integer nano-units, so sums are exact. ``close_until`` hands back every window
    whose end is at or before a watermark, in a deterministic order.
    """

    def __init__(
        self, length_us: int, state: dict[int, dict[tuple[str, str], list[int]]] | None = None
    ) -> None:
        if length_us <= 0:
            msg = f"window length must be positive, got {length_us} µs"
            raise ValueError(msg)
        self.length_us = length_us
        self._by_start: dict[int, dict[tuple[str, str], list[int]]] = (
            state if state is not None else {}
        )
        self._starts = list(self._by_start)
        """The open windows' starts as a heap: closing is a pop, not a sort of every window."""
        heapify(self._starts)
        self.earliest_end_us: int | None = None
        """End of the earliest open window (None when nothing is open): a cheap "anything due?"."""
        self._refresh_earliest_end()

    def __len__(self) -> int:
        return sum(len(group) for group in self._by_start.values())

    def add(self, tenant_id: str, meter: str, start: int, quantity_nanos: int) -> bool:
        """Count one event into the window that starts at ``start`` (its :func:`window_start`).

        Returns False, and counts nothing, if the window's total would pass decimal(38, 9).
        The caller passes the start rather than the event time because it has just computed it
        to decide whether the window is still open.
        """
        group = self._by_start.get(start)
        if group is None:
            group = self._by_start[start] = {}
            heappush(self._starts, start)
            end = start + self.length_us
            if self.earliest_end_us is None or end < self.earliest_end_us:
                self.earliest_end_us = end
        totals = group.get((tenant_id, meter))
        if totals is None:
            group[(tenant_id, meter)] = [quantity_nanos, 1]
        elif totals[0] + quantity_nanos > MAX_QUANTITY_NANOS:
            return False
        else:
            totals[0] += quantity_nanos
            totals[1] += 1
        return True

    def open_starts(self) -> list[int]:
        """The starts of the open windows, in no particular order."""
        return list(self._starts)

    def close_until(self, watermark_us: int) -> list[ClosedWindow]:
        """Remove and return every window with ``end <= watermark_us``, sorted by key."""
        return list(self._emit(_pop_due(self._starts, watermark_us - self.length_us)))

    def close_all(self) -> list[ClosedWindow]:
        """Remove and return every open window (end of input)."""
        self._starts = []
        return list(self._emit(sorted(self._by_start)))

    def _emit(self, starts: Iterable[int]) -> Iterable[ClosedWindow]:
        for start in starts:
            group = self._by_start.pop(start)
            for (tenant_id, meter), (quantity, count) in sorted(group.items()):
                yield ClosedWindow(tenant_id, meter, start, start + self.length_us, quantity, count)
        self._refresh_earliest_end()

    def _refresh_earliest_end(self) -> None:
        self.earliest_end_us = self._starts[0] + self.length_us if self._starts else None

    def snapshot(self) -> dict[int, dict[tuple[str, str], list[int]]]:
        """A copy that later adds cannot change (totals are small lists, so copy them)."""
        return {
            start: {key: list(totals) for key, totals in group.items()}
            for start, group in self._by_start.items()
        }


@dataclass(frozen=True, slots=True)
class ClosedMeterWindow:
    """The final on-time value of one meter window under a catalog."""

    tenant_id: str
    meter: str
    start_us: int
    end_us: int
    group_key: str
    aggregation: Aggregation
    value: WindowValue


@dataclass(frozen=True, slots=True)
class TaintedSlice:
    """A slice (tenant, event meter, window) that was open when the catalog changed.

    Its events before the change were accumulated for the old meters, so its new meters'
    first values cannot be formed on the fly: the correction flow recomputes it from the
    ledger instead.
    """

    tenant_id: str
    event_meter: str
    start_us: int
    end_us: int


CatalogState = dict[int, dict[tuple[str, str, str, str], list]]
"""Open windows by start: (tenant_id, event meter, meter, group key) → accumulator."""


class CatalogWindows:
    """Open windows of every catalog meter: :class:`OpenWindows` for meter catalogs.

    ``add`` takes an event into every window its meters give it (or none, if one of its
    ``sum`` windows would pass decimal(38, 9): an event counts everywhere or nowhere).
    """

    def __init__(
        self,
        length_us: int,
        catalog: Catalog,
        state: CatalogState | None = None,
        tainted: dict[int, set[tuple[str, str]]] | None = None,
    ) -> None:
        if length_us <= 0:
            msg = f"window length must be positive, got {length_us} µs"
            raise ValueError(msg)
        self.length_us = length_us
        self.catalog = catalog
        self._by_start: CatalogState = state if state is not None else {}
        self._tainted: dict[int, set[tuple[str, str]]] = tainted if tainted is not None else {}
        self._starts = list(set(self._by_start) | set(self._tainted))
        """The starts of open windows and tainted slices, each once, as a heap."""
        heapify(self._starts)
        self.unmetered = 0
        """Events added that no meter takes (they are in the ledger all the same)."""
        self.unvalued = 0
        """Contributions a meter took without a value."""
        self.earliest_end_us: int | None = None
        self._refresh_earliest_end()

    def __len__(self) -> int:
        return sum(len(group) for group in self._by_start.values())

    def add(self, event: Event, start: int) -> bool:
        """Count ``event`` into its windows (which start at ``start``); False: it would overflow."""
        found = contributions(self.catalog, event)
        if not found:
            self.unmetered += 1
            return True
        group = self._by_start.get(start)
        if group is None:
            if start not in self._tainted:
                heappush(self._starts, start)
            group = self._by_start[start] = {}
            end = start + self.length_us
            if self.earliest_end_us is None or end < self.earliest_end_us:
                self.earliest_end_us = end
        tenant, event_meter = event.tenant_id, event.meter
        keyed = [
            ((tenant, event_meter, meter.name, key), meter, value) for meter, key, value in found
        ]
        for key, meter, value in keyed:
            accumulator = group.get(key)
            if accumulator is not None and not fits(accumulator, meter.aggregation, value):
                return False
        for key, meter, value in keyed:
            accumulator = group.get(key)
            if accumulator is None:
                accumulator = group[key] = new_accumulator(meter.aggregation)
            if value is None:
                self.unvalued += 1
            accumulate(accumulator, meter.aggregation, value, event)
        return True

    def taint_all(self, slices: dict[int, set[tuple[str, str]]]) -> None:
        """Mark these open slices tainted (see :class:`TaintedSlice`)."""
        for start, found in slices.items():
            if start not in self._tainted and start not in self._by_start:
                heappush(self._starts, start)
            self._tainted.setdefault(start, set()).update(found)
            end = start + self.length_us
            if self.earliest_end_us is None or end < self.earliest_end_us:
                self.earliest_end_us = end

    def open_starts(self) -> list[int]:
        """The starts of the open windows and tainted slices, in no particular order."""
        return list(self._starts)

    def close_until(self, watermark_us: int) -> tuple[list[ClosedMeterWindow], list[TaintedSlice]]:
        """Remove and return every window (and tainted slice) with ``end <= watermark_us``."""
        return self._emit(_pop_due(self._starts, watermark_us - self.length_us))

    def close_all(self) -> tuple[list[ClosedMeterWindow], list[TaintedSlice]]:
        """Remove and return every open window and tainted slice (end of input)."""
        self._starts = []
        return self._emit(sorted(set(self._by_start) | set(self._tainted)))

    def _emit(self, starts: list[int]) -> tuple[list[ClosedMeterWindow], list[TaintedSlice]]:
        closed: list[ClosedMeterWindow] = []
        tainted: list[TaintedSlice] = []
        for start in starts:
            end = start + self.length_us
            slices = self._tainted.pop(start, set())
            tainted += [TaintedSlice(t, m, start, end) for t, m in sorted(slices)]
            for (tenant, event_meter, name, key), accumulator in sorted(
                self._by_start.pop(start, {}).items()
            ):
                if (tenant, event_meter) in slices:
                    continue
                meter = self.catalog.meter(name)
                if meter is None:  # pragma: no cover - the state was made for this catalog
                    continue
                value = value_of(accumulator, meter.aggregation)
                closed.append(
                    ClosedMeterWindow(tenant, name, start, end, key, meter.aggregation, value)
                )
        self._refresh_earliest_end()
        return closed, tainted

    def _refresh_earliest_end(self) -> None:
        self.earliest_end_us = self._starts[0] + self.length_us if self._starts else None

    def snapshot(self) -> tuple[CatalogState, dict[int, set[tuple[str, str]]]]:
        """Copies later adds cannot change: the open windows and the tainted slices."""
        windows = {
            start: {key: copy_accumulator(acc) for key, acc in group.items()}
            for start, group in self._by_start.items()
        }
        return windows, {start: set(found) for start, found in self._tainted.items()}


def _pop_due(starts: list[int], last_start: int) -> list[int]:
    """Pop, in order, the starts of a heap that are at most ``last_start``."""
    due = []
    while starts and starts[0] <= last_start:
        due.append(heappop(starts))
    return due


def open_slices(
    windows: dict[int, dict[tuple, list]],
) -> dict[int, set[tuple[str, str]]]:
    """The (tenant, event meter) slices of open windows, by start, from either kind of state.

    Legacy state is keyed (tenant, meter) where the meter is the event meter; catalog state
    (tenant, event meter, meter, group key).
    """
    return {start: {(key[0], key[1]) for key in group} for start, group in windows.items() if group}
