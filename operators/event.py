"""What decoding a message gives: a valid event, a heartbeat, or a rejection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Self

from meterwax.operators.reasons import Reason


class Event(NamedTuple):
    """A valid usage event. ``quantity_nanos`` = quantity × 10⁹; ``time_us`` is UTC epoch µs.

    A named tuple rather than a frozen dataclass: one is built per event on the hot path, and
    a tuple is built about three times faster.
    """

    tenant_id: str
    id: str
    meter: str
    quantity_nanos: int | None
    """None only under a meter catalog, for an event that carries no quantity (its meters
    read other fields, e.g. an OpenMeter event's ``data``)."""
    time_us: int
    dimensions: dict[str, str] | None = None
    source: str | None = None
    data: dict[str, str] | None = None
    """A CloudEvent's other ``data`` fields, as text (JSON numbers exactly as written):
    what meter definitions may read with ``data.<key>``."""


class Truncated(bytes):
    """The start of a message too large to hold, with the length the whole message has.

    A source that will not read a gigabyte line into memory passes its first bytes (more than
    the size limit) as this: decoding rejects it as too large by ``full_length``, and
    quarantine keeps only these bytes.
    """

    full_length: int

    def __new__(cls, start: bytes, full_length: int) -> Self:  # noqa: D102
        made = super().__new__(cls, start)
        made.full_length = full_length
        return made

    def __reduce__(self) -> tuple:
        return (Truncated, (bytes(self), self.full_length))


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A control record that says "this partition's event time has reached ``time_us``"."""

    time_us: int


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message was not counted: a stable ``reason`` code and a human ``detail``."""

    reason: Reason
    detail: str
