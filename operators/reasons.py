"""Stable reason codes for rejected input.

These strings are a contract: they are stored in the ``quarantine`` table, exported as metric
labels and documented in the README. Add codes freely; never rename or reuse one. The details
of the rules every path applies (main flow, corrections, replay) are written here once, so a
message rejected by any of them reads the same.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from meterwax.operators.timeline import format_micros, format_nanos

if TYPE_CHECKING:
    from meterwax.operators.event import Event


class Reason(StrEnum):
    """Why an input message was quarantined instead of counted."""

    EMPTY_PAYLOAD = "empty_payload"
    """The message had no bytes (a Kafka tombstone, or an empty value)."""
    PAYLOAD_TOO_LARGE = "payload_too_large"
    """The message is larger than the configured maximum event size."""
    MALFORMED_JSON = "malformed_json"
    """The bytes are not one valid UTF-8 JSON document."""
    NOT_AN_OBJECT = "not_an_object"
    """The JSON document is not an object (an array, a string, a number…)."""
    MISSING_FIELD = "missing_field"
    """A required field is absent."""
    INVALID_TYPE = "invalid_type"
    """A field has the wrong JSON type (a number where a string is required…)."""
    EMPTY_FIELD = "empty_field"
    """A required string field is empty."""
    FIELD_TOO_LONG = "field_too_long"
    """A string field (or a dimension key or value) is longer than its limit."""
    INVALID_METER = "invalid_meter"
    """The meter name uses characters outside ``[a-z0-9_.-]``."""
    INVALID_QUANTITY = "invalid_quantity"
    """The quantity is not a finite, non-negative decimal that fits decimal(38, 9)."""
    INVALID_TIMESTAMP = "invalid_timestamp"
    """The timestamp is not an RFC 3339 date-time with a UTC offset, or its instant is outside
    the supported range of event times (1970-01-01T00:00:00Z up to 3000-01-01T00:00:00Z)."""
    TOO_MANY_DIMENSIONS = "too_many_dimensions"
    """The event carries more dimensions than allowed."""
    INVALID_DIMENSIONS = "invalid_dimensions"
    """``dimensions`` is not an object of string keys to string values."""
    INVALID_CLOUDEVENT = "invalid_cloudevent"
    """A CloudEvent envelope that is not structured-mode JSON CloudEvents 1.0."""
    FUTURE_TIMESTAMP = "future_timestamp"
    """The event time is further ahead of the partition's clock than allowed."""
    TOO_LATE = "too_late"
    """The event time is behind the watermark by more than the correction horizon."""
    INVALID_CHARACTERS = "invalid_characters"
    """A string field (id, tenant_id, source, a dimension key or value) holds a control
    character (U+0000–U+001F, U+007F–U+009F)."""
    INVALID_DATA = "invalid_data"
    """A CloudEvent's ``data`` holds more than 64 other fields, or one whose name or value is
    too long (64 and 1,024 characters)."""
    WINDOW_OVERFLOW = "window_overflow"
    """Counting the event would take a window's total past decimal(38, 9) (under a catalog:
    any ``sum`` window it feeds): the window keeps the events before it, in offset order, and
    this one is not counted anywhere."""
    CONFLICTING_DUPLICATE = "conflicting_duplicate"
    """Its (tenant_id, id) was counted before with another meter, quantity or time: a
    producer bug billing must see. The counted copy stays in ``events``."""


def conflict_detail(event: Event) -> str:
    """The detail of a conflicting duplicate: this copy's billed content."""
    if event.quantity_nanos is not None:
        billed = f"quantity {format_nanos(event.quantity_nanos)}"
    else:
        billed = f"data {event.data or {}}"
    return (
        f"id {event.id!r} of tenant {event.tenant_id!r} was counted before with another meter, "
        f"quantity or time (the counted copy is in events); this copy: meter {event.meter}, "
        f"{billed}, timestamp {format_micros(event.time_us)}"
    )


def overflow_detail(event: Event) -> str:
    """The detail of an event its window could not take."""
    return (
        f"counting id {event.id!r} would take one of its sum windows past decimal(38, 9) "
        f"(quantity {format_nanos(event.quantity_nanos or 0)})"
    )
