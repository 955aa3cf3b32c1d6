"""Turning option text into values: times, ranges, versions, offsets, host lists.

Every function raises :class:`~meterwax.errors.ConfigError` with a message that names the
option and quotes the bad text, so a command can print it as one line.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

from meterwax.errors import ConfigError


def host_port_problem(entry: str) -> str | None:
    """Why ``entry`` is not ``HOST:PORT`` (a ``scheme://`` prefix allowed), or None if it is."""
    host, _, port = entry.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return f"{entry!r} is not HOST:PORT"
    return None


def parse_host_list(text: str, *, separator: str, what: str) -> str:
    """A ``HOST:PORT`` list checked entry by entry, returned without spaces around entries.

    ``what`` names the list in the error (``brokers``, ``addresses``).
    """
    entries = [entry.strip() for entry in text.split(separator)]
    for entry in entries:
        problem = host_port_problem(entry)
        if problem is not None:
            msg = f"{problem} (in {what} {text!r}; entries are HOST:PORT{separator}HOST:PORT…)"
            raise ConfigError(msg)
    return separator.join(entries)


def parse_brokers(text: str) -> str:
    """A Kafka bootstrap list ``HOST:PORT[,HOST:PORT…]`` (librdkafka allows ``scheme://``)."""
    return parse_host_list(text, separator=",", what="brokers")


def parse_instant(text: str, *, option: str) -> datetime:
    """An RFC 3339 time or a date (midnight UTC), for ``--from``/``--to`` style options."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        msg = f"{option} {text!r} is not a date or an RFC 3339 time (e.g. 2026-01-31T12:00:00Z)"
        raise ConfigError(msg) from None
    if value.tzinfo is None:
        if len(text.strip()) > 10:
            msg = f"{option} {text!r} has no UTC offset; add Z or +hh:mm"
            raise ConfigError(msg)
        value = value.replace(tzinfo=UTC)
    return _in_utc(value, text, option)


def _in_utc(value: datetime, text: str, option: str) -> datetime:
    """``value`` in UTC; ConfigError when that falls outside years 1–9999."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        msg = f"{option} {text!r} is outside years 1–9999 in UTC"
        raise ConfigError(msg) from None


def parse_bound(text: str, *, option: str, tz: ZoneInfo) -> datetime:
    """``--from``/``--to`` of a report: an RFC 3339 time, or a date meaning its start in ``tz``."""
    stripped = text.strip()
    if len(stripped) == 10:
        try:
            day = date.fromisoformat(stripped)
        except ValueError:
            pass
        else:
            # fold=0 puts a midnight skipped by a DST jump at the jump itself.
            return _in_utc(datetime.combine(day, time(), tz), text, option)
    return parse_instant(text, option=option)


def time_range(
    lower: datetime | None, upper: datetime | None, *, options: tuple[str, str]
) -> tuple[datetime | None, datetime | None]:
    """``(lower, upper)`` checked to be a range: an empty one is a typo, not an empty answer.

    Raises ConfigError naming both options when ``lower`` is not before ``upper``.
    """
    if lower is not None and upper is not None and lower >= upper:
        msg = (
            f"{options[0]} {lower.isoformat()} is not before {options[1]} {upper.isoformat()}: "
            "the range is empty"
        )
        raise ConfigError(msg)
    return lower, upper


def parse_as_of(text: str) -> int | str:
    """``--as-of``: a Delta table version (a number) or an RFC 3339 time."""
    stripped = text.strip()
    if stripped.isdigit():
        return int(stripped)
    moment = parse_instant(stripped, option="--as-of")
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_offsets(text: str, *, option: str) -> dict[int, int]:
    """``0:1200,1:950`` → ``{0: 1200, 1: 950}`` (Kafka partition → offset)."""
    offsets: dict[int, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        partition, _, offset = part.partition(":")
        if not partition.isdigit() or not offset.isdigit():
            msg = f"{option} expects PARTITION:OFFSET pairs like 0:1200,1:950; got {part!r}"
            raise ConfigError(msg)
        offsets[int(partition)] = int(offset)
    if not offsets:
        msg = f"{option} names no partition"
        raise ConfigError(msg)
    return offsets
