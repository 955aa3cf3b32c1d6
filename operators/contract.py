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

import json
import math
import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictStr
from pydantic_core import ErrorDetails, PydanticCustomError

from meterwax.operators.reasons import Reason
from meterwax.operators.timeline import to_micros

NANOS_PER_UNIT = 10**9
"""Quantities are stored as decimal(38, 9): nine digits after the point."""
MAX_QUANTITY_NANOS = 10**38 - 1
"""The largest decimal(38, 9) value, in nano-units (29 digits before the point)."""
MAX_WHOLE_DIGITS = 29
MAX_FRACTION_DIGITS = 9
HEARTBEAT_MARKER = "meterwax_control"
"""A JSON object with ``{"meterwax_control": "heartbeat", "timestamp": …}`` is a heartbeat; an
object whose ``meterwax_control`` is anything but null is a control record, never an event."""
MAX_DIMENSIONS = 16
MAX_DIMENSION_KEY_CHARS = 64
MAX_DIMENSION_VALUE_CHARS = 256
MAX_SOURCE_CHARS = 256
MAX_ID_CHARS = 256
MAX_TENANT_CHARS = 128
MAX_METER_CHARS = 128
METER_CHARS = r"[a-z0-9_.\-]+"
"""What a meter name may be made of (the fast path in fast_validate.py uses it too)."""
EARLIEST_EVENT_TIME = "1970-01-01T00:00:00Z"
LATEST_EVENT_TIME = "3000-01-01T00:00:00Z"
"""Event times are instants in [EARLIEST, LATEST). Later instants would overflow what readers
of the tables can hold (Python's datetime ends in year 9999, a window or a period after an
event ends later still, and date partitions past year 9999 cannot be read back); earlier
ones are a producer's zero or a sign error, never usage."""
MIN_EVENT_US = 0
MAX_EVENT_US = to_micros(datetime.fromisoformat(LATEST_EVENT_TIME))

_METER_PATTERN = re.compile(METER_CHARS)
# RFC 3339 date-time with a mandatory offset ("naive times are invalid"). ASCII digits only:
# Python's \d also matches other scripts' digits.
_RFC3339 = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]([0-9]{2}:[0-9]{2}:[0-9]{2})(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_NAIVE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?")
_DECIMAL_STRING = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?(?:[eE]([+-]?)([0-9]+))?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
"""Control characters (Unicode category Cc): never part of an id, a name or a value."""
_MAX_EXPONENT_DIGITS = 6
"""An exponent longer than this cannot leave a non-zero value inside decimal(38, 9)."""


def quantity_to_nanos(value: object) -> int:
    """Return a JSON quantity as exact nano-units, or raise an ``invalid_quantity`` error.

    Accepts an int, a Decimal (what the decoder produces for JSON numbers with a fraction or
    integers too long for Python's int parser), a decimal string (ASCII digits), or a float
    taken at its shortest round-tripping repr. Total: no input raises anything else, however
    long its digits or exponent, and nothing is rounded: a value that needs more than 9
    digits after the point, or more than 29 before it, is refused.
    """
    if isinstance(value, bool):
        _quantity_error("must be a number or a decimal string, not a boolean")
    if isinstance(value, int):
        if value < 0:
            _quantity_error("must be ≥ 0")
        if value >= 10**MAX_WHOLE_DIGITS:
            _quantity_error(f"has more than {MAX_WHOLE_DIGITS} digits before the decimal point")
        return value * NANOS_PER_UNIT
    if isinstance(value, float):
        if not math.isfinite(value):
            _quantity_error("must be finite")
        value = Decimal(repr(value))
    if isinstance(value, Decimal):
        sign, digits, exponent = value.as_tuple()
        if not isinstance(exponent, int):
            _quantity_error("must be finite")
        return _scaled_nanos(bool(sign), "".join(map(str, digits)), exponent)
    if isinstance(value, str):
        match = _DECIMAL_STRING.fullmatch(value)
        if match is None:
            _quantity_error("is not a decimal number")
        minus, whole, fraction, exponent_sign, exponent_digits = match.groups()
        fraction = fraction or ""
        exponent = _bounded_exponent(exponent_sign, exponent_digits or "0", whole + fraction)
        return _scaled_nanos(minus == "-", whole + fraction, exponent - len(fraction))
    _quantity_error("must be a number or a decimal string")
    raise AssertionError("unreachable")  # pragma: no cover


def _bounded_exponent(sign: str, digits: str, mantissa: str) -> int:
    """The exponent as an int, or one just outside the range if it is absurdly long.

    A 60,000-digit exponent must not reach ``int()`` (Python refuses more than 4,300 digits);
    any exponent longer than a few digits leaves a non-zero mantissa outside decimal(38, 9)
    (the caller then says which side), and a zero mantissa at zero.
    """
    digits = digits.lstrip("0") or "0"
    if len(digits) <= _MAX_EXPONENT_DIGITS:
        return -int(digits) if sign == "-" else int(digits)
    if not mantissa.strip("0"):
        return 0
    return -(10**_MAX_EXPONENT_DIGITS) if sign == "-" else 10**_MAX_EXPONENT_DIGITS


def _scaled_nanos(negative: bool, digits: str, exponent: int) -> int:
    """``±digits × 10^exponent`` in nano-units, checked against decimal(38, 9) first."""
    significant = digits.lstrip("0")
    if not significant:
        return 0  # zero, however it is written ("-0", "0e99", "0.0000000000")
    if negative:
        _quantity_error("must be ≥ 0")
    trimmed = significant.rstrip("0")
    exponent += len(significant) - len(trimmed)
    if exponent < -MAX_FRACTION_DIGITS:
        _quantity_error(f"has more than {MAX_FRACTION_DIGITS} digits after the decimal point")
    if len(trimmed) + exponent > MAX_WHOLE_DIGITS:
        _quantity_error(f"has more than {MAX_WHOLE_DIGITS} digits before the decimal point")
    # Now at most 38 digits: int() and the power are cheap and exact.
    return int(trimmed) * 10 ** (exponent + MAX_FRACTION_DIGITS)


def _quantity_error(problem: str) -> None:
    raise PydanticCustomError(Reason.INVALID_QUANTITY.value, problem)


def timestamp_to_micros(value: object) -> int:
    """Return an RFC 3339 timestamp as microseconds since the epoch (UTC), or raise.

    ``T``/``t``/space separate date and time, ``Z``/``z`` or ``±hh:mm`` is the offset (RFC 3339
    allows each). Fractions finer than a microsecond are truncated (Python's datetime
    resolution). The instant must be in [``EARLIEST_EVENT_TIME``, ``LATEST_EVENT_TIME``).
    """
    if not isinstance(value, str):
        raise PydanticCustomError(
            Reason.INVALID_TIMESTAMP.value,
            "must be an RFC 3339 string such as 2026-01-31T12:00:00Z",
        )
    match = _RFC3339.fullmatch(value)
    if match is None:
        problem = (
            "has no UTC offset (naive times are ambiguous; add Z or +hh:mm)"
            if _NAIVE.fullmatch(value)
            else "is not an RFC 3339 date-time such as 2026-01-31T12:00:00Z"
        )
        raise PydanticCustomError(Reason.INVALID_TIMESTAMP.value, problem)
    day, clock, fraction, offset = match.groups()
    canonical = f"{day}T{clock}{(fraction or '')[:7]}{'Z' if offset in 'Zz' else offset}"
    try:
        micros = to_micros(datetime.fromisoformat(canonical))
    except (ValueError, OverflowError) as error:
        raise PydanticCustomError(
            Reason.INVALID_TIMESTAMP.value, f"is not a valid date-time ({error})"
        ) from None
    if not MIN_EVENT_US <= micros < MAX_EVENT_US:
        raise PydanticCustomError(
            Reason.INVALID_TIMESTAMP.value,
            f"is outside the supported range of event times, {EARLIEST_EVENT_TIME} up to "
            f"(not including) {LATEST_EVENT_TIME}",
        )
    return micros


def check_characters(value: str | None, what: str = "") -> str | None:
    """Refuse a string holding a control character (``invalid_characters``).

    ``what`` prefixes the problem (``dimension 'region'``) when the field name alone would
    not say where the character is.
    """
    found = _CONTROL.search(value) if value is not None else None
    if found is not None:
        prefix = f"{what} " if what else ""
        raise PydanticCustomError(
            Reason.INVALID_CHARACTERS.value,
            f"{prefix}holds the control character U+{ord(found.group()):04X} at position "
            f"{found.start()}",
        )
    return value


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
        check_characters(key, "a dimension key")
        check_characters(item, f"dimension {key!r}")
    return value


Quantity = Annotated[int, BeforeValidator(quantity_to_nanos)]
Timestamp = Annotated[int, BeforeValidator(timestamp_to_micros)]
Meter = Annotated[
    StrictStr, Field(min_length=1, max_length=MAX_METER_CHARS), BeforeValidator(_check_meter)
]
Dimensions = Annotated[dict[str, str] | None, BeforeValidator(_check_dimensions)]
NoControls = AfterValidator(check_characters)
"""Refuses a string with control characters; after the length checks, so those keep their
own reason codes (``empty_field``, ``field_too_long``)."""


class UsageEvent(BaseModel):
    """One valid usage event, normalised: exact integer quantity and time.

    ``quantity`` is in nano-units (``Decimal("1.5")`` → ``1_500_000_000``) and ``timestamp`` in
    microseconds since 1970-01-01T00:00:00Z. Unknown fields are ignored.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_CHARS), NoControls]
    tenant_id: Annotated[StrictStr, Field(min_length=1, max_length=MAX_TENANT_CHARS), NoControls]
    meter: Meter
    quantity: Quantity
    timestamp: Timestamp
    dimensions: Dimensions = None
    source: Annotated[StrictStr | None, Field(max_length=MAX_SOURCE_CHARS), NoControls] = None
    data: Annotated[dict[str, str] | None, BeforeValidator(_lenient_data)] = None
    """Without a catalog a CloudEvent's other data fields decide nothing: kept (for a catalog
    applied later) when they keep the limits, left out when not."""


class CatalogUsageEvent(UsageEvent):
    """An event under a meter catalog.

    ``quantity`` may be absent (its meters read other fields), and its data fields must keep
    the limits (meters read them).
    """

    quantity: Quantity | None = None  # type: ignore[assignment]
    data: Annotated[dict[str, str] | None, BeforeValidator(_check_data)] = None


CLOUDEVENT_FIELDS = {
    "tenant_id": "subject",
    "meter": "type",
    "timestamp": "time",
    "quantity": "data.quantity",
    "dimensions": "data.dimensions",
}
"""Where each native field comes from in a CloudEvent, used to name fields in error details."""


def is_json_media_type(value: object) -> bool:
    """True for ``application/json``, with parameters or not (``; charset=utf-8``).

    Compared as a media type, not a prefix: ``application/jsonx`` is another type.
    """
    return isinstance(value, str) and value.split(";", 1)[0].strip().lower() == "application/json"


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
    if content_type is not None and not is_json_media_type(content_type):
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
    extra = {k: v for k, v in data.items() if k not in _MAPPED_DATA and v is not None}
    if extra:
        native["data"] = extra
    return native


_MAPPED_DATA = frozenset({"quantity", "value", "dimensions"})
MAX_DATA_FIELDS = 64
MAX_DATA_VALUE_CHARS = 1024


def data_text(value: object) -> str:
    """A CloudEvent data value as the text a meter compares and parses.

    A string is itself; anything else is its JSON text, with numbers in the digits they were
    written with (the decoder reads them exactly, as ints and Decimals) and object keys sorted.
    """
    return value if isinstance(value, str) else _json_text(value)


def _json_text(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, dict):
        fields = (f"{_json_text(str(k))}:{_json_text(v)}" for k, v in sorted(value.items()))
        return "{" + ",".join(fields) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_json_text(item) for item in value) + "]"
    return "null" if value is None else json.dumps(value)


def _lenient_data(value: object) -> object:
    """:func:`_check_data`, but fields that break a rule leave ``data`` out instead."""
    try:
        return _check_data(value)
    except PydanticCustomError:
        return None


def _check_data(value: object) -> object:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise PydanticCustomError(Reason.INVALID_DATA.value, "must be a JSON object")
    if len(value) > MAX_DATA_FIELDS:
        raise PydanticCustomError(
            Reason.INVALID_DATA.value,
            f"has {len(value)} fields besides quantity and dimensions, at most {MAX_DATA_FIELDS}",
        )
    texts = {}
    for key, item in value.items():
        text = data_text(item)
        if not key or len(key) > MAX_DIMENSION_KEY_CHARS or len(text) > MAX_DATA_VALUE_CHARS:
            raise PydanticCustomError(
                Reason.INVALID_DATA.value,
                f"field {key[:80]!r} must have a name of 1–{MAX_DIMENSION_KEY_CHARS} characters "
                f"and a value of at most {MAX_DATA_VALUE_CHARS}",
            )
        check_characters(key, "a data field name")
        check_characters(text, f"data field {key!r}")
        texts[key] = text
    return texts


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
