"""Time as meterwax counts it: integers of microseconds since the Unix epoch, in UTC.

Every event time, window bound and duration inside the dataflow is such an integer: exact,
cheap to compare, free of time zones. ``datetime`` appears only at the edges (the contract's
parsing, table columns, reports), converted by the functions here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
SECOND_US = 1_000_000
MINUTE_US = 60 * SECOND_US
HOUR_US = 60 * MINUTE_US
DAY_US = 24 * HOUR_US
WEEK_US = 7 * DAY_US


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch of an aware ``datetime`` (floored, never rounded up)."""
    return (moment - EPOCH) // MICROSECOND


def from_micros(micros: int) -> datetime:
    """The aware UTC ``datetime`` of a count of microseconds since the epoch."""
    return EPOCH + micros * MICROSECOND


def format_micros(micros: int) -> str:
    """RFC 3339 in UTC with microseconds, e.g. ``2026-03-02T12:00:00.500000Z``."""
    return from_micros(micros).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_nanos(nanos: int) -> str:
    """A quantity of nano-units as the exact decimal it stands for (``1500000000`` → ``1.5``)."""
    whole, fraction = divmod(abs(nanos), 10**9)
    text = f"{whole}.{fraction:09d}".rstrip("0").rstrip(".")
    return f"-{text}" if nanos < 0 else text
