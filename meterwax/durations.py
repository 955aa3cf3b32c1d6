"""Parse the human durations the command line accepts: ``90s``, ``5m``, ``1h``, ``1d``, ``PT5M``.

Durations are returned as whole microseconds because every time value inside the dataflow is
an integer count of microseconds since the Unix epoch (exact, cheap to compare).
"""

from __future__ import annotations

import re

from meterwax.errors import ConfigError
from meterwax.operators.timeline import SECOND_US as MICROS_PER_SECOND

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIMPLE = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)\s*$")
_ISO = re.compile(
    r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d{1,6})?)S)?)?$"
)


def parse_duration_us(text: str) -> int:
    """Return ``text`` as microseconds; raise ConfigError naming the value if it is not a duration.

    >>> parse_duration_us("90s"), parse_duration_us("PT5M")
    (90000000, 300000000)
    """
    if not isinstance(text, str):
        msg = f"duration must be a string like '90s', got {text!r}"
        raise ConfigError(msg)
    simple = _SIMPLE.match(text)
    if simple:
        number, unit = int(simple.group(1)), simple.group(2)
        if unit == "ms":
            return number * 1000
        return number * _UNIT_SECONDS[unit] * MICROS_PER_SECOND
    iso = _ISO.match(text.strip().upper())
    if iso and any(iso.groupdict().values()):
        parts = iso.groupdict()
        whole_seconds, _, fraction = (parts["s"] or "0").partition(".")
        seconds = (
            int(parts["d"] or 0) * 86400
            + int(parts["h"] or 0) * 3600
            + int(parts["m"] or 0) * 60
            + int(whole_seconds)
        )
        return seconds * MICROS_PER_SECOND + int(fraction.ljust(6, "0"))
    msg = (
        f"not a duration: {text!r} (use a number and a unit: 500ms, 90s, 5m, 1h, 1d, 1w, "
        "or ISO 8601 like PT5M)"
    )
    raise ConfigError(msg)


def format_duration_us(micros: int) -> str:
    """Render microseconds in the largest unit that divides them exactly (``60000000`` → ``1m``)."""
    if micros == 0:
        return "0s"
    for unit, seconds in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if micros % (seconds * MICROS_PER_SECOND) == 0:
            return f"{micros // (seconds * MICROS_PER_SECOND)}{unit}"
    if micros % 1000 == 0:
        return f"{micros // 1000}ms"
    return f"{micros}us"
