"""Calendar periods (minute, hour, day, month) in an IANA time zone, for usage rollups.

A day or a month is a calendar label: every instant at which the zone's wall clock shows that
date (or month) belongs to it, and it starts at the first of them, when the clock first shows
its first moment (``00:00``, or ``00:00`` on the 1st) or, when a daylight-saving jump skips
that moment, at the jump. In America/Havana, where the autumn change goes from 01:00 back to
00:00, midnight happens twice and the day starts at the first one: one period, 25 hours long.
An hour or a minute is a span of elapsed time: when the clock shows an hour twice, two hours
of usage happened, and they are two periods. A period ends where the next one starts. So in
Europe/Berlin the spring day has 23 hours and the autumn day 25; on the autumn day the wall
hour ``02:00`` happens twice and is two hourly periods (``02:00+02:00`` and ``02:00+01:00``),
on the spring day it never happens. Periods are labelled by their start, in the zone's offset
at that instant.

Windows are rolled up by the period that holds them, never split: a window that crosses a
period boundary (a 1-hour window in Asia/Kolkata, +05:30, crosses every local hour) cannot be
rolled up exactly, and :meth:`PeriodIndex.period_of_window` refuses it.

Pure functions of ``zoneinfo`` data: no I/O, no wall-clock reads.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from meterwax.durations import format_duration_us
from meterwax.errors import ConfigError
from meterwax.operators.timeline import (
    DAY_US,
    HOUR_US,
    MICROSECOND,
    MINUTE_US,
    from_micros,
    to_micros,
)


class Granularity(StrEnum):
    """The calendar units usage can be rolled up to."""

    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"
    MONTH = "month"

    @property
    def nominal_us(self) -> int:
        """The usual length of the unit; a longer window can never fit in one period."""
        return {
            Granularity.MINUTE: MINUTE_US,
            Granularity.HOUR: HOUR_US,
            Granularity.DAY: DAY_US,
            Granularity.MONTH: 31 * DAY_US,
        }[self]


def zone(name: str) -> ZoneInfo:
    """The IANA zone called ``name``; ConfigError naming it if there is none."""
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        msg = f"--tz {name!r} is not an IANA time zone (e.g. UTC, Europe/Berlin, America/New_York)"
        raise ConfigError(msg) from None


def _truncate(wall: datetime, unit: Granularity) -> datetime:
    """The first wall-clock moment of ``wall``'s unit (naive in, naive out)."""
    wall = wall.replace(second=0, microsecond=0)
    if unit is Granularity.MINUTE:
        return wall
    wall = wall.replace(minute=0)
    if unit is Granularity.HOUR:
        return wall
    wall = wall.replace(hour=0)
    return wall if unit is Granularity.DAY else wall.replace(day=1)


def _wall(moment: datetime, tz: ZoneInfo) -> datetime:
    return moment.astimezone(tz).replace(tzinfo=None, fold=0)


def period_start(moment: datetime, unit: Granularity, tz: ZoneInfo) -> datetime:
    """The start of the period holding ``moment`` (aware), as an aware time in ``tz``."""
    moment = moment.astimezone(UTC)
    first = _truncate(_wall(moment, tz), unit)
    # The wall clock shows `first` once, twice (a repeated autumn hour or midnight) or never
    # (skipped by a spring-forward jump). A day or month began at its first showing, an hour
    # or minute at the latest showing up to `moment` (each showing is an hour of its own).
    shown = []
    for fold in (0, 1):
        candidate = first.replace(tzinfo=tz, fold=fold).astimezone(UTC)
        if candidate <= moment and _wall(candidate, tz) == first:
            shown.append(candidate)
    if shown:
        label = unit in (Granularity.DAY, Granularity.MONTH)
        return (min(shown) if label else max(shown)).astimezone(tz)
    return _last_jump(first.replace(tzinfo=tz, fold=1).astimezone(UTC), moment, tz).astimezone(tz)


def _last_jump(before: datetime, moment: datetime, tz: ZoneInfo) -> datetime:
    """The instant in ``(before, moment]`` where the zone's offset last changed (bisection)."""
    offset = moment.astimezone(tz).utcoffset()
    low, high = before, moment  # offset differs at `low`, equals at `high`
    while high - low > MICROSECOND:
        middle = low + (high - low) // 2
        if middle.astimezone(tz).utcoffset() == offset:
            high = middle
        else:
            low = middle
    return high


def rfc3339(moment: datetime) -> str:
    """``moment`` in RFC 3339 with its own offset (``Z`` for UTC itself)."""
    text = moment.isoformat()
    return text[:-6] + "Z" if moment.tzinfo is UTC else text


class PeriodIndex:
    """Maps window starts to period starts in one zone and unit, caching each distinct start.

    A lake has few distinct window starts (one per window length of time, shared by every
    tenant and meter), so rolling up many rows costs one zone computation per distinct start.
    """

    def __init__(self, unit: Granularity, tz: ZoneInfo, window_us: int) -> None:
        if window_us > unit.nominal_us:
            msg = (
                f"the lake holds {format_duration_us(window_us)} windows, longer than a "
                f"{unit.value}: windows are never split, so use a coarser --granularity"
            )
            raise ConfigError(msg)
        self.unit = unit
        self.tz = tz
        self.window_us = window_us
        self._starts: dict[int, int] = {}

    def period_of(self, time_us: int) -> int:
        """The start (µs since the epoch) of the period holding ``time_us``."""
        found = self._starts.get(time_us)
        if found is None:
            start = period_start(from_micros(time_us), self.unit, self.tz)
            found = self._starts[time_us] = to_micros(start)
        return found

    def period_of_window(self, start_us: int) -> int:
        """The period holding the window ``[start_us, start_us + window)``; refuse a straddler."""
        period = self.period_of(start_us)
        if self.period_of(start_us + self.window_us - 1) != period:
            first = from_micros(start_us)
            last = from_micros(start_us + self.window_us)
            offset = first.astimezone(self.tz).strftime("%z")
            msg = (
                f"the window {rfc3339(first)}–{rfc3339(last)} spans two {self.unit.value}s in "
                f"{self.tz.key} (UTC{offset[:3]}:{offset[3:]}): windows are never split, so "
                f"{format_duration_us(self.window_us)} windows cannot be rolled up by "
                f"{self.unit.value} in that zone; use a coarser --granularity or another --tz"
            )
            raise ConfigError(msg)
        return period
