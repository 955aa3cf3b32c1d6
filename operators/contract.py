"""The usage-event contract (docs/contracts.md), as pydantic models.

Two envelopes are accepted and normalised to one shape, :class:`UsageEvent`:

- native: ``{"id", "tenant_id", "meter", "quantity", "timestamp", "dimensions"?, "source"?}``
- CloudEvents 1.0 structured JSON: ``subject``→tenant_id, ``type``→meter, ``time``→timestamp,
  ``data.quantity`` (or ``data.value``)→quantity, ``data.dimensions``→dimensions, ``id``,
  ``source``.

Quantities become integer *nano-units* (value × 10⁹) and timestamps integer microseconds since
the Unix epoch, UTC. Both are exact, so sums never pass through float.

Every rule failure is a pydantic error whose ``type`` is a quarantine reason code
(or a built-in pydantic type that :func:`reason_for_error` maps to one).
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from decimal import Context, Decimal
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr
from pydantic_core import ErrorDetails, PydanticCustomError

from meterwax.operators.reasons import Reason
from meterwax.operators.timeline import to_micros

NANOS_PER_UNIT = 10**9
"""Quantities are stored as decimal(38, 9): nine digits after the point."""
MAX_QUANTITY_NANOS = 10**38 - 1
"""The largest decimal(38, 9) value, in nano-units (29 digits before the point)."""
MAX_DIMENSIONS = 16
MAX_DIMENSION_KEY_CHARS = 64
MAX_DIMENSION_VALUE_CHARS = 256
MAX_SOURCE_CHARS = 256
MAX_ID_CHARS = 256
MAX_TENANT_CHARS = 128
MAX_METER_CHARS = 128
METER_CHARS = r"[a-z0-9_.\-]+"
"""What a meter name may be made of (the fast path in fast_validate.py uses it too)."""

_METER_PATTERN = re.compile(METER_CHARS)
# RFC 3339 date-time; the offset is mandatory ("naive times are invalid").
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
_NAIVE = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?")
_DECIMAL_STRING = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?")
# Wide enough that no decimal(38, 9) value is ever rounded while being checked.
_EXACT = Context(prec=200, Emax=10**6, Emin=-(10**6))


def quantity_to_nanos(value: object) -> int:
    """Return a JSON quantity as exact nano-units, or raise an ``invalid_quantity`` error.

    Accepts an int, a Decimal (what the decoder produces for JSON numbers with a fraction), a
    decimal string, or a float taken at its shortest round-tripping repr.
    """
    if isinstance(value, bool):
        _quantity_error("must be a number or a decimal string, not a boolean", value)
    if isinstance(value, int):
        decimal = Decimal(value)
    elif isinstance(value, Decimal):
        decimal = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            _quantity_error("must be finite", value)
        decimal = Decimal(repr(value))
    elif isinstance(value, str):
        if not _DECIMAL_STRING.fullmatch(value):
            _quantity_error("is not a decimal number", value)
        decimal = Decimal(value)
    else:
        _quantity_error("must be a number or a decimal string", value)
    if not decimal.is_finite():
        _quantity_error("must be finite", value)
    if decimal < 0:
        _quantity_error("must be ≥ 0", value)
    scaled = _EXACT.scaleb(decimal, 9)
    if scaled != _EXACT.to_integral_value(scaled):
        _quantity_error("has more than 9 digits after the decimal point", value)
    nanos = int(scaled)
    if nanos > MAX_QUANTITY_NANOS:
        _quantity_error("has more than 29 digits before the decimal point", value)
    return nanos


def _quantity_error(problem: str, value: object) -> None:
    raise PydanticCustomError(Reason.INVALID_QUANTITY.value, problem)


def timestamp_to_micros(value: object) -> int:
    """Return an RFC 3339 timestamp as microseconds since the epoch (UTC), or raise.

    Fractions finer than a microsecond are truncated (Python's datetime resolution).
    """
    if not isinstance(value, str):
        raise PydanticCustomError(
            Reason.INVALID_TIMESTAMP.value,
            "must be an RFC 3339 string such as 2026-01-31T12:00:00Z",
        )
    if not _RFC3339.fullmatch(value):
        problem = (
            "has no UTC offset (naive times are ambiguous; add Z or +hh:mm)"
            if _NAIVE.fullmatch(value)
            else "is not an RFC 3339 date-time such as 2026-01-31T12:00:00Z"
        )
        raise PydanticCustomError(Reason.INVALID_TIMESTAMP.value, problem)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as error:
        raise PydanticCustomError(
            Reason.INVALID_TIMESTAMP.value, f"is not a valid date-time ({error})"
        ) from None
    return to_micros(parsed)


def _check_meter(value: str) -> str:
    if isinstance(value, str) and value and not _METER_PATTERN.fullmatch(value):
        raise PydanticCustomError(
            Reason.INVALID_METER.value,
            "may only use lower-case letters, digits, '_', '.' and '-'",
        )
    return value


def _check_dimensions(value: object) -> object:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise PydanticCustomError(
            Reason.INVALID_DIMENSIONS.value, "must be an object of strings to strings"
        )
    if len(value) > MAX_DIMENSIONS:
        raise PydanticCustomError(
            Reason.TOO_MANY_DIMENSIONS.value,
            f"has {len(value)} dimensions, at most {MAX_DIMENSIONS} are allowed",
        )
    for key, item in value.items():
        if not isinstance(item, str):
            raise PydanticCustomError(
                Reason.INVALID_DIMENSIONS.value,
                f"dimension {key[:80]!r} must be a string, got {type(item).__name__}",
            )
        if not key:
            raise PydanticCustomError(
                Reason.INVALID_DIMENSIONS.value, "dimension keys must not be empty"
            )
        if len(key) > MAX_DIMENSION_KEY_CHARS:
            raise PydanticCustomError(
                Reason.FIELD_TOO_LONG.value,
                f"dimension key {key[:80]!r} is longer than {MAX_DIMENSION_KEY_CHARS} characters",
            )
        if len(item) > MAX_DIMENSION_VALUE_CHARS:
            raise PydanticCustomError(
                Reason.FIELD_TOO_LONG.value,
                f"dimension {key!r} is longer than {MAX_DIMENSION_VALUE_CHARS} characters",
            )
    return value


Quantity = Annotated[int, BeforeValidator(quantity_to_nanos)]
Timestamp = Annotated[int, BeforeValidator(timestamp_to_micros)]
Meter = Annotated[
    StrictStr, Field(min_length=1, max_length=MAX_METER_CHARS), BeforeValidator(_check_meter)
]
Dimensions = Annotated[dict[str, str] | None, BeforeValidator(_check_dimensions)]


class UsageEvent(BaseModel):
    """One valid usage event, normalised: exact integer quantity and time.

    ``quantity`` is in nano-units (``Decimal("1.5")`` → ``1_500_000_000``) and ``timestamp`` in
    microseconds since 1970-01-01T00:00:00Z. Unknown fields are ignored.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_CHARS)]
    tenant_id: Annotated[StrictStr, Field(min_length=1, max_length=MAX_TENANT_CHARS)]
    meter: Meter
    quantity: Quantity
    timestamp: Timestamp
    dimensions: Dimensions = None
    source: Annotated[StrictStr | None, Field(max_length=MAX_SOURCE_CHARS)] = None


CLOUDEVENT_FIELDS = {
    "tenant_id": "subject",
    "meter": "type",
    "timestamp": "time",
    "quantity": "data.quantity",
    "dimensions": "data.dimensions",
}
"""Where each native field comes from in a CloudEvent, used to name fields in error details."""


def cloudevent_to_native(envelope: dict[str, Any]) -> dict[str, Any]:
    """Map a structured-mode CloudEvents 1.0 object onto the native field names.

    Absent fields stay absent, so validation reports them as missing. Raises a pydantic custom
    error (``invalid_cloudevent``) for an envelope that is not CloudEvents 1.0 JSON.
    """
    if envelope.get("specversion") != "1.0":
        raise PydanticCustomError(
            Reason.INVALID_CLOUDEVENT.value,
            f'specversion must be "1.0", got {envelope.get("specversion")!r:.80}',
        )
    content_type = envelope.get("datacontenttype")
    if content_type is not None and not str(content_type).startswith("application/json"):
        raise PydanticCustomError(
            Reason.INVALID_CLOUDEVENT.value,
            f"datacontenttype must be application/json, got {content_type!r:.80}",
        )
    data = envelope.get("data", {})
    if not isinstance(data, dict):
        raise PydanticCustomError(
            Reason.INVALID_CLOUDEVENT.value, "data must be a JSON object holding quantity or value"
        )
    native: dict[str, Any] = {}
    for native_name, ce_name in (
        ("id", "id"),
        ("source", "source"),
        ("tenant_id", "subject"),
        ("meter", "type"),
        ("timestamp", "time"),
    ):
        if ce_name in envelope:
            native[native_name] = envelope[ce_name]
    if "quantity" in data:
        native["quantity"] = data["quantity"]
    elif "value" in data:
        native["quantity"] = data["value"]
    if "dimensions" in data:
        native["dimensions"] = data["dimensions"]
    return native


_PYDANTIC_TYPE_REASONS = {
    "missing": Reason.MISSING_FIELD,
    "string_too_short": Reason.EMPTY_FIELD,
    "string_too_long": Reason.FIELD_TOO_LONG,
}


def reason_for_error(error: ErrorDetails) -> Reason:
    """Map one pydantic error to the quarantine reason code it stands for."""
    kind = error["type"]
    if kind in Reason._value2member_map_:
        return Reason(kind)
    return _PYDANTIC_TYPE_REASONS.get(kind, Reason.INVALID_TYPE)


def describe_error(error: ErrorDetails, *, cloudevent: bool = False) -> str:
    """Render one pydantic error as ``field: problem (got value)`` for a human reader."""
    field = ".".join(str(part) for part in error["loc"]) or "event"
    if cloudevent:
        field = CLOUDEVENT_FIELDS.get(field, field)
    kind = error["type"]
    if kind == "missing":
        return f"{field}: required field is missing"
    message = error["msg"]
    if kind == "string_type":
        message = "must be a string"
    got = error.get("input")
    shown = str(got) if isinstance(got, Decimal) else repr(got)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"{field}: {message} (got {shown})"
