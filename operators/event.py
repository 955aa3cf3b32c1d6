"""What decoding a message gives: a valid event, a heartbeat, or a rejection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from meterwax.operators.reasons import Reason


class Event(NamedTuple):
    """A valid usage event. ``quantity_nanos`` = quantity × 10⁹; ``time_us`` is UTC epoch µs.

    A named tuple rather than a frozen dataclass: one is built per event on the hot path, and
    a tuple is built about three times faster.
    """

    tenant_id: str
    id: str
    meter: str
    quantity_nanos: int
    time_us: int
    dimensions: dict[str, str] | None = None
    source: str | None = None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A control record that says "this partition's event time has reached ``time_us``"."""

    time_us: int


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message was not counted: a stable ``reason`` code and a human ``detail``."""

    reason: Reason
    detail: str
