"""Tumbling event-time windows: arithmetic and the accumulator of open windows.

Windows are aligned to the Unix epoch, so 1-minute, 1-hour and 1-day windows start on UTC
minute, hour and day boundaries. A window covers ``[start, start + length)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from meterwax.operators.contract import MAX_QUANTITY_NANOS
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


@dataclass(frozen=True, slots=True)
class ClosedWindow:
    """The final on-time total of one (tenant, meter, window)."""

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

    def close_until(self, watermark_us: int) -> list[ClosedWindow]:
        """Remove and return every window with ``end <= watermark_us``, sorted by key."""
        due = sorted(start for start in self._by_start if start + self.length_us <= watermark_us)
        return list(self._emit(due))

    def close_all(self) -> list[ClosedWindow]:
        """Remove and return every open window (end of input)."""
        return list(self._emit(sorted(self._by_start)))

    def _emit(self, starts: Iterable[int]) -> Iterable[ClosedWindow]:
        for start in starts:
            group = self._by_start.pop(start)
            for (tenant_id, meter), (quantity, count) in sorted(group.items()):
                yield ClosedWindow(tenant_id, meter, start, start + self.length_us, quantity, count)
        self._refresh_earliest_end()

    def _refresh_earliest_end(self) -> None:
        self.earliest_end_us = min(self._by_start) + self.length_us if self._by_start else None

    def snapshot(self) -> dict[int, dict[tuple[str, str], list[int]]]:
        """A copy that later adds cannot change (totals are small lists, so copy them)."""
        return {
            start: {key: list(totals) for key, totals in group.items()}
            for start, group in self._by_start.items()
        }
