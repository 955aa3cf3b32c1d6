"""Raw message bytes → a validated :class:`Event`, a :class:`Heartbeat`, or a :class:`Rejection`.

Decoding never raises on bad input: whatever the bytes, the caller gets a value, and a
rejection carries a stable reason code and a detail that names the field and the value.

A plainly valid event is accepted by the fast path (``fast_validate``, msgspec). Everything
else is read with orjson and decided by the pydantic contract (``contract``). When that
happens to a quantity written as a JSON number with a fraction (which orjson reads as a binary
float), the document is read again with the standard library and ``parse_float=Decimal``,
which keeps the digits exactly as written; integers beyond 64 bits and other documents orjson
refuses take the same exact path.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
from pydantic import ValidationError
from pydantic_core import PydanticCustomError

from meterwax.operators.contract import (
    HEARTBEAT_MARKER,
    CatalogUsageEvent,
    UsageEvent,
    cloudevent_to_native,
    describe_error,
    reason_for_error,
    timestamp_to_micros,
)
from meterwax.operators.event import Event, Heartbeat, Rejection, Truncated
from meterwax.operators.fast_validate import fast_event
from meterwax.operators.reasons import Reason

DEFAULT_MAX_EVENT_BYTES = 64 * 1024
"""Larger messages are quarantined as ``payload_too_large`` (the raw bytes are kept)."""


Decoded = Event | Heartbeat | Rejection


def decode(
    raw: bytes | None,
    *,
    max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    fast: bool = True,
    quantity_required: bool = True,
) -> Decoded:
    """Decode and validate one message. Never raises for bad input.

    ``fast=False`` skips the fast path, so the pydantic contract decides everything (the
    tests use it to show both paths agree). ``quantity_required=False`` is the contract under
    a meter catalog, whose meters may read other fields.
    """
    if not raw:
        return Rejection(Reason.EMPTY_PAYLOAD, "message has no payload (tombstone or empty value)")
    size = raw.full_length if type(raw) is Truncated else len(raw)
    if size > max_bytes:
        kept = f"; its first {len(raw):,} are kept" if type(raw) is Truncated else ""
        return Rejection(
            Reason.PAYLOAD_TOO_LARGE,
            f"message is {size:,} bytes, the limit is {max_bytes:,} (max event size){kept}",
        )
    if fast:
        event = fast_event(raw, quantity_required=quantity_required)
        if event is not None:
            return event
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        # Big integers, NaN, odd encodings: let the standard library have a say.
        document = _read_json_exactly(raw, check_unicode=True)
        if isinstance(document, Rejection):
            return document
    else:
        if _has_fractional_quantity(document):
            # orjson accepted the bytes, so they are valid UTF-8 without lone surrogates.
            document = _read_json_exactly(raw, check_unicode=False)
    if not isinstance(document, dict):
        return Rejection(
            Reason.NOT_AN_OBJECT, f"expected a JSON object, got a JSON {_json_kind(document)}"
        )
    if document.get(HEARTBEAT_MARKER) is not None:
        return _heartbeat(document)
    return validate(document, quantity_required=quantity_required)


def validate(document: dict[str, Any], *, quantity_required: bool = True) -> Event | Rejection:
    """Validate an already-parsed JSON object against the contract (native or CloudEvents).

    Only a CloudEvent has ``data`` fields besides quantity and dimensions: a native event's
    own ``data`` key, if any, is ignored like every other unknown key.
    """
    is_cloudevent = "specversion" in document
    model = UsageEvent if quantity_required else CatalogUsageEvent
    try:
        if is_cloudevent:
            fields = cloudevent_to_native(document)
        elif "data" in document:
            fields = {key: value for key, value in document.items() if key != "data"}
        else:
            fields = document
        event = model.model_validate(fields)
    except PydanticCustomError as error:
        return Rejection(Reason(error.type), error.message())
    except ValidationError as error:
        problems = error.errors(include_url=False)
        detail = "; ".join(
            describe_error(problem, cloudevent=is_cloudevent) for problem in problems
        )
        return Rejection(reason_for_error(problems[0]), detail)
    return Event(
        tenant_id=event.tenant_id,
        id=event.id,
        meter=event.meter,
        quantity_nanos=event.quantity,
        time_us=event.timestamp,
        dimensions=event.dimensions or None,
        source=event.source,
        data=event.data or None,
    )


def _read_json_exactly(raw: bytes, *, check_unicode: bool) -> Any:
    """Parse with the standard library, keeping numbers with a fraction as exact Decimals."""
    try:
        text = raw.decode("utf-8")
        document = json.loads(text, parse_float=_exact_float, parse_int=_exact_int)
    except UnicodeDecodeError as error:
        return Rejection(
            Reason.MALFORMED_JSON,
            f"payload is not valid UTF-8: {error.reason} at byte {error.start}",
        )
    except (ValueError, RecursionError) as error:
        return Rejection(Reason.MALFORMED_JSON, f"payload is not valid JSON: {_short(str(error))}")
    if check_unicode and _has_lone_surrogate(document):
        return Rejection(
            Reason.MALFORMED_JSON, "payload has a \\u escape that is not valid Unicode"
        )
    return document


def _exact_float(text: str) -> Decimal:
    """A JSON number with a fraction or an exponent, exactly as written.

    An exponent Decimal cannot hold (``0.0e1000000000000000001``) is clamped far outside
    decimal(38, 9), where the contract rejects it, or kept at zero for a zero mantissa: the
    value is then still what the text says for every purpose the contract has.
    """
    try:
        return Decimal(text)
    except InvalidOperation:
        mantissa, _, exponent = text.lower().partition("e")
        if not mantissa.strip("-0."):
            return Decimal(0)
        return Decimal(f"{mantissa}E{'-' if exponent.startswith('-') else ''}{_FAR_EXPONENT}")


_FAR_EXPONENT = 10**9


def _exact_int(text: str) -> int | Decimal:
    """A JSON integer: an int, or a Decimal when it is too long for Python's int parser."""
    return int(text) if len(text) <= _INT_DIGITS_LIMIT else Decimal(text)


_INT_DIGITS_LIMIT = 4000
"""Below Python's 4,300-digit limit on parsing (and printing) an int."""


def _has_fractional_quantity(document: Any) -> bool:
    """True if orjson read a number the contract needs exactly as a binary float.

    The quantity (native or CloudEvents), and any number among a CloudEvent's ``data`` fields
    (meters may read them as values).
    """
    if not isinstance(document, dict):
        return False
    if isinstance(document.get("quantity"), float):
        return True
    data = document.get("data")
    return isinstance(data, dict) and _holds_float(data)


def _holds_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_holds_float(item) for item in value.values())
    if isinstance(value, list):
        return any(_holds_float(item) for item in value)
    return False


def _has_lone_surrogate(value: Any) -> bool:
    """True if any string holds a lone UTF-16 surrogate (orjson rejects those; json does not)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(item) for item in value)
    return False


def _heartbeat(document: dict[str, Any]) -> Heartbeat | Rejection:
    if document[HEARTBEAT_MARKER] != "heartbeat":
        return Rejection(
            Reason.INVALID_TYPE,
            f"{HEARTBEAT_MARKER}: unknown control record {document[HEARTBEAT_MARKER]!r:.80}",
        )
    try:
        return Heartbeat(timestamp_to_micros(document.get("timestamp")))
    except PydanticCustomError as error:
        return Rejection(Reason.INVALID_TIMESTAMP, f"heartbeat timestamp: {error.message()}")


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
