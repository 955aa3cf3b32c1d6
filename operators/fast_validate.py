"""The event contract's fast path: accept a plainly valid event without pydantic.

Pydantic is the contract (``contract.py``): it produces the reason codes and the details that
name the field and the value. Running it on every event costs more than everything else the
flow does per event, so this module applies the same rules with plain Python and answers
either "valid, here is the event" or "not sure" (``None``). Anything not plainly valid (a
rejection, an unusual but valid shape such as a quantity in exponent notation) goes to
pydantic, so the outcome is always exactly what pydantic decides; a property test checks that
the two paths agree on arbitrary documents.

A quantity written as a JSON number with a fraction is read by orjson as a binary float,
which cannot hold most decimals. Its exact digits are taken from the raw bytes instead, when
that is unambiguous: the payload has no backslash (so no key can be escaped and no string can
hide a quote) and the key appears exactly once with a number after it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from meterwax.operators.contract import (
    MAX_DIMENSION_KEY_CHARS,
    MAX_DIMENSION_VALUE_CHARS,
    MAX_DIMENSIONS,
    MAX_QUANTITY_NANOS,
    MAX_SOURCE_CHARS,
)
from meterwax.operators.event import Event

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_METER = re.compile(r"[a-z0-9_.\-]+")
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
_PLAIN_DECIMAL = re.compile(r"(\d+)(?:\.(\d{1,9}))?")
_NUMBER_AFTER = {
    key: re.compile(rb'"' + key.encode() + rb'"\s*:\s*(-?\d[\d.eE+\-]*)')
    for key in ("quantity", "value")
}
_MAX_WHOLE_UNITS = MAX_QUANTITY_NANOS // 10**9


def fast_event(document: dict[str, Any], raw: bytes) -> Event | None:
    """The event, if ``document`` is plainly valid; ``None`` means "let pydantic decide"."""
    if "specversion" in document:
        return _fast_cloudevent(document, raw)
    return _build(
        document.get("id"),
        document.get("tenant_id"),
        document.get("meter"),
        _quantity(document.get("quantity"), raw, "quantity"),
        document.get("timestamp"),
        document.get("dimensions"),
        document.get("source"),
    )


def _fast_cloudevent(envelope: dict[str, Any], raw: bytes) -> Event | None:
    if envelope.get("specversion") != "1.0":
        return None
    content_type = envelope.get("datacontenttype")
    if content_type is not None and not str(content_type).startswith("application/json"):
        return None
    data = envelope.get("data")
    if not isinstance(data, dict):
        return None
    key = "quantity" if "quantity" in data else "value"
    return _build(
        envelope.get("id"),
        envelope.get("subject"),
        envelope.get("type"),
        _quantity(data.get(key), raw, key),
        envelope.get("time"),
        data.get("dimensions"),
        envelope.get("source"),
    )


def _build(
    event_id: Any,
    tenant: Any,
    meter: Any,
    nanos: int | None,
    timestamp: Any,
    dimensions: Any,
    source: Any,
) -> Event | None:
    if nanos is None:
        return None
    if type(event_id) is not str or not 0 < len(event_id) <= 256:
        return None
    if type(tenant) is not str or not 0 < len(tenant) <= 128:
        return None
    if type(meter) is not str or not 0 < len(meter) <= 128 or not _METER.fullmatch(meter):
        return None
    if source is not None and (type(source) is not str or len(source) > MAX_SOURCE_CHARS):
        return None
    if dimensions is not None and not _plain_dimensions(dimensions):
        return None
    time_us = _micros(timestamp)
    if time_us is None:
        return None
    return Event(tenant, event_id, meter, nanos, time_us, dimensions or None, source)


def _quantity(value: Any, raw: bytes, key: str) -> int | None:
    kind = type(value)
    if kind is int:
        return value * 10**9 if 0 <= value <= _MAX_WHOLE_UNITS else None
    if kind is str:
        return _decimal_text(value)
    if kind is float:
        literal = _literal(raw, key)
        if literal is None or float(literal) != value:
            return None
        return _decimal_text(literal)
    return None


def _decimal_text(text: str) -> int | None:
    """Exact nano-units of ``123`` or ``123.456``; anything else (exponents…) → None."""
    match = _PLAIN_DECIMAL.fullmatch(text)
    if match is None:
        return None
    whole, fraction = match.group(1), match.group(2) or ""
    nanos = int(whole) * 10**9 + int(fraction.ljust(9, "0") or 0)
    return nanos if nanos <= MAX_QUANTITY_NANOS else None


def _literal(raw: bytes, key: str) -> str | None:
    if b"\\" in raw:
        return None
    found = _NUMBER_AFTER[key].findall(raw)
    return found[0].decode() if len(found) == 1 else None


def _micros(timestamp: Any) -> int | None:
    if type(timestamp) is not str or not _RFC3339.fullmatch(timestamp):
        return None
    try:
        parsed = datetime.fromisoformat(timestamp)
    except ValueError:
        return None
    return (parsed - _EPOCH) // _MICROSECOND


def _plain_dimensions(dimensions: Any) -> bool:
    if type(dimensions) is not dict or len(dimensions) > MAX_DIMENSIONS:
        return False
    for key, value in dimensions.items():
        if type(value) is not str or len(value) > MAX_DIMENSION_VALUE_CHARS:
            return False
        if not key or len(key) > MAX_DIMENSION_KEY_CHARS:
            return False
    return True
