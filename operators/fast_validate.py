"""The event contract's fast path: accept a plainly valid event without pydantic.

Pydantic is the contract (``contract.py``): it produces the reason codes and the details that
name the field and the value. Running it on every event costs more than everything else the
flow does per event, so this module decodes the raw bytes straight into typed structs with
msgspec (JSON parsing and type checks in C), then applies the contract's own field functions.
It answers either "valid, here is the event" or "not sure" (``None``): anything not plainly
valid goes to pydantic, so the outcome is always exactly what the contract decides. A property
test checks that the two paths agree on arbitrary documents.

Quantities are taken as the raw JSON text of the value (``msgspec.Raw``), never as a float, so
``0.1`` is exactly one tenth whether it is written as a number or as a string.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated

import msgspec
from pydantic_core import PydanticCustomError

from meterwax.operators.contract import (
    MAX_DATA_FIELDS,
    MAX_DATA_VALUE_CHARS,
    MAX_DIMENSION_KEY_CHARS,
    MAX_DIMENSION_VALUE_CHARS,
    MAX_DIMENSIONS,
    MAX_FRACTION_DIGITS,
    MAX_ID_CHARS,
    MAX_METER_CHARS,
    MAX_SOURCE_CHARS,
    MAX_TENANT_CHARS,
    MAX_WHOLE_DIGITS,
    METER_CHARS,
    quantity_to_nanos,
    timestamp_to_micros,
)
from meterwax.operators.event import Event

_UNSET = msgspec.UNSET


# Length, pattern and size limits are checked by msgspec in C; the contract's own functions
# (quantity, timestamp) do the rest. ``\Z`` rather than ``$``: ``$`` also matches before a
# trailing newline.
_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS)]
_Tenant = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TENANT_CHARS)]
# The meter's character set is checked by ``_plain_meter`` against a cache instead: a
# pattern here runs a regular expression on every message (40% of msgspec's decode of a B1
# event), while a stream has a handful of meter names.
_Meter = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_METER_CHARS)]
_Source = Annotated[str, msgspec.Meta(max_length=MAX_SOURCE_CHARS)]
_Dimensions = Annotated[
    dict[
        Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_DIMENSION_KEY_CHARS)],
        Annotated[str, msgspec.Meta(max_length=MAX_DIMENSION_VALUE_CHARS)],
    ],
    msgspec.Meta(max_length=MAX_DIMENSIONS),
]


class _Native(msgspec.Struct):
    id: _Id
    tenant_id: _Tenant
    meter: _Meter
    quantity: msgspec.Raw
    timestamp: str
    dimensions: _Dimensions | None = None
    source: _Source | None = None
    # Keys that make a document something else (a CloudEvent, a control record): decoded only
    # to see whether they are there, which costs nothing when they are not.
    specversion: msgspec.Raw | msgspec.UnsetType = _UNSET
    meterwax_control: msgspec.Raw | msgspec.UnsetType = _UNSET


class _CloudEvent(msgspec.Struct):
    specversion: str
    id: _Id
    subject: _Tenant
    type: _Meter
    time: str
    data: dict[str, msgspec.Raw]
    source: _Source | None = None
    datacontenttype: str | None = None
    meterwax_control: msgspec.Raw | msgspec.UnsetType = _UNSET


_MAX_PLAIN_NESTING = 8
"""Braces and brackets in a plain event: the object, dimensions, a CloudEvent's data."""
_NESTING_CHECK_BYTES = 1024
"""Nesting deep enough for the contract's parsers to refuse takes two bytes a level: a
shorter message cannot have it, and is not counted for it (``bytes.find`` is several times
cheaper than ``in`` for these checks, and this runs once per message)."""
_NATIVE = msgspec.json.Decoder(_Native)
_CLOUDEVENT = msgspec.json.Decoder(_CloudEvent)


def fast_event(raw: bytes, *, quantity_required: bool = True) -> Event | None:
    """The event, if ``raw`` is a plainly valid event; ``None`` means "let pydantic decide".

    Anything the raw bytes cannot show plainly goes to the contract: a backslash (an escape
    could spell a control character, or a key such as ``specversion``), DEL or a C1 control
    character's lead byte, bytes that are not UTF-8 (msgspec does not check the keys it
    skips), more nesting than an event has (the contract's parsers refuse documents nested
    deeper than about a thousand levels), native fields mixed with a CloudEvents key, or a
    control record's marker. Native events are handled inline: this runs once per message,
    and every function call saved here is measurable.
    """
    if raw.isascii():
        unplain = raw.find(b"\\") >= 0 or raw.find(b"\x7f") >= 0
    else:
        unplain = (
            raw.find(b"\\") >= 0
            or raw.find(b"\x7f") >= 0
            or raw.find(b"\xc2") >= 0
            or not _is_utf8(raw)
        )
    if unplain or (
        len(raw) > _NESTING_CHECK_BYTES and raw.count(b"{") + raw.count(b"[") > _MAX_PLAIN_NESTING
    ):
        return None
    try:
        native = _NATIVE.decode(raw)
    except ValueError:  # msgspec.DecodeError, or bytes that are not UTF-8
        return _fast_cloudevent(raw, quantity_required)
    if native.specversion is not _UNSET or native.meterwax_control is not _UNSET:
        return None  # a CloudEvents key or a control record's: the contract decides
    if native.meter not in _PLAIN_METERS and not _plain_meter(native.meter):
        return None
    nanos = _nanos(bytes(native.quantity))
    if nanos is None:
        return None
    time_us = _micros(native.timestamp)
    if time_us is None:
        return None
    return Event(
        native.tenant_id,
        native.id,
        native.meter,
        nanos,
        time_us,
        native.dimensions or None,
        native.source,
    )


_METER = re.compile(METER_CHARS)
_PLAIN_METERS: set[str] = set()
"""Meter names seen to be made of the contract's characters only."""
_METER_CACHE_LIMIT = 10_000


def _plain_meter(meter: str) -> bool:
    """Whether ``meter`` is made of the contract's characters (remembered when it is)."""
    if _METER.fullmatch(meter) is None:
        return False
    if len(_PLAIN_METERS) >= _METER_CACHE_LIMIT:
        _PLAIN_METERS.clear()
    _PLAIN_METERS.add(meter)
    return True


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _fast_cloudevent(raw: bytes, quantity_required: bool) -> Event | None:
    try:
        envelope = _CLOUDEVENT.decode(raw)
    except ValueError:
        return None
    if envelope.meterwax_control is not _UNSET:
        return None
    if envelope.specversion != "1.0":
        return None
    if envelope.type not in _PLAIN_METERS and not _plain_meter(envelope.type):
        return None
    content_type = envelope.datacontenttype
    if content_type is not None and content_type != "application/json":
        return None
    data = envelope.data
    quantity = data.get("quantity") or data.get("value")
    if quantity is None:
        if quantity_required:
            return None
        nanos = None
    else:
        nanos = _nanos(bytes(quantity))
        if nanos is None:
            return None
    time_us = _micros(envelope.time)
    if time_us is None:
        return None
    dimensions = None
    extra: dict[str, str] | None = None
    for key, value in data.items():
        if key in _MAPPED_DATA:
            if key == "dimensions":
                try:
                    dimensions = _DIMENSIONS.decode(value)
                except ValueError:
                    return None
            continue
        text = _data_text(bytes(value))
        if text is _NOT_PLAIN or len(key) > MAX_DIMENSION_KEY_CHARS or not key:
            return None
        if text is not None:
            if extra is None:
                extra = {}
            extra[key] = text
    if extra is not None and len(extra) > MAX_DATA_FIELDS:
        return None
    return Event(
        envelope.subject,
        envelope.id,
        envelope.type,
        nanos,
        time_us,
        dimensions or None,
        envelope.source,
        extra,
    )


_MAPPED_DATA = frozenset({"quantity", "value", "dimensions"})
_DIMENSIONS = msgspec.json.Decoder(_Dimensions | None)
_NOT_PLAIN = "\0"
_PLAIN_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?")


def _data_text(value: bytes) -> str | None:
    """A data field's text as the contract gives it (None for null), or _NOT_PLAIN.

    The message holds no backslash, so a JSON string is the text between its quotes. Numbers
    keep their digits (as ``str(int)`` or ``str(Decimal)`` print them, which is what the
    contract's exact reading gives); objects, lists and exponents go to the contract.
    """
    if value[:1] == b'"':
        text = value[1:-1].decode()
    elif value == b"null":
        return None
    elif value in (b"true", b"false"):
        text = value.decode()
    else:
        if len(value) > MAX_DATA_VALUE_CHARS:  # before int(): Python refuses 4,300+ digits
            return _NOT_PLAIN
        match = _PLAIN_NUMBER.fullmatch(value)
        if match is None:
            return _NOT_PLAIN
        text = str(Decimal(value.decode())) if match.group(1) else str(int(value))
    return text if len(text) <= MAX_DATA_VALUE_CHARS else _NOT_PLAIN


_SCALE = tuple(10 ** (9 - digits) for digits in range(10))
"""Nano-units per unit of the last fraction digit, by number of fraction digits."""
_QUOTE = ord('"')


def _nanos(text: bytes) -> int | None:
    """Exact nano-units of a JSON number or decimal string, or None if not plainly valid."""
    if text and text[0] == _QUOTE:
        text = text[1:-1]
        if b"\\" in text:
            return None
    whole, dot, fraction = text.partition(b".")
    if (
        whole.isdigit()
        and len(whole) <= MAX_WHOLE_DIGITS
        and (not dot or (fraction.isdigit() and len(fraction) <= MAX_FRACTION_DIGITS))
    ):
        nanos = int(whole) * 1_000_000_000
        if fraction:
            nanos += int(fraction) * _SCALE[len(fraction)]
        return nanos
    try:  # exponent notation, trailing zeros beyond 9 places, …: the contract decides exactly
        return quantity_to_nanos(text.decode())
    except (PydanticCustomError, UnicodeDecodeError):
        return None


_SECONDS_OF: dict[str, int] = {}
"""``YYYY-MM-DDTHH:MM:SS`` → microseconds since the epoch at that second, UTC. Events of one
second share it, so a busy stream parses each second once."""
_CACHE_LIMIT = 100_000


def _micros(timestamp: str) -> int | None:
    """The contract's timestamp, with the common ``…SS[.fraction]Z`` shapes served from a cache.

    Anything else (an offset, a bad shape) goes to the contract's own function.
    """
    if len(timestamp) >= 20 and timestamp[-1] == "Z":
        head, tail = timestamp[:19], timestamp[19:-1]
        base = _SECONDS_OF.get(head)
        if base is None:
            base = _contract_micros(head + "Z")
            if base is None:
                return None
            if len(_SECONDS_OF) >= _CACHE_LIMIT:
                _SECONDS_OF.clear()
            _SECONDS_OF[head] = base
        if not tail:
            return base
        fraction = tail[1:]
        if tail[0] == "." and fraction.isascii() and fraction.isdigit():
            return base + int(fraction[:6].ljust(6, "0"))
    return _contract_micros(timestamp)


def _contract_micros(timestamp: str) -> int | None:
    try:
        return timestamp_to_micros(timestamp)
    except PydanticCustomError:
        return None
