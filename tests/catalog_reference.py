"""An independent computation of catalog meters, for the tests to check meterwax against.

Written from the semantics in the README, in the plainest Python: exact ``Decimal``s, one pass
per meter, nothing shared with ``operators/aggregates.py``. Events are plain dicts:
``tenant_id``, ``id``, ``meter``, ``quantity`` (Decimal or None), ``time`` (aware datetime),
``dimensions`` and ``data`` (dicts of text).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WindowId = tuple[str, str, datetime, str]
"""(tenant_id, meter, window start, group key as meterwax writes it: JSON or "")."""


def parse_event(payload: bytes) -> dict[str, Any]:
    """A valid message (native or CloudEvents) as the reference's event dict."""
    document = json.loads(payload, parse_float=Decimal)
    if "specversion" in document:
        data = dict(document.get("data") or {})
        quantity = data.pop("quantity", data.pop("value", None))
        dimensions = data.pop("dimensions", None) or {}
        extras = {k: _text(v) for k, v in data.items() if v is not None}
        return {
            "tenant_id": document["subject"],
            "id": document["id"],
            "meter": document["type"],
            "quantity": None if quantity is None else Decimal(str(quantity)),
            "time": _time(document["time"]),
            "dimensions": dimensions,
            "data": extras,
        }
    quantity = document.get("quantity")
    return {
        "tenant_id": document["tenant_id"],
        "id": document["id"],
        "meter": document["meter"],
        "quantity": None if quantity is None else Decimal(str(quantity)),
        "time": _time(document["timestamp"]),
        "dimensions": document.get("dimensions") or {},
        "data": {},
    }


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return str(value)
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _field(event: dict[str, Any], path: str) -> Any:
    if path == "quantity":
        return event["quantity"]
    group, _, key = path.partition(".")
    return (event["dimensions"] if group == "dimensions" else event["data"]).get(key)


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, Decimal):
        return _plain(value)
    return str(value)


def _plain(value: Decimal) -> str:
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def _number(value: Any) -> Decimal | None:
    """A value as a decimal the quantity rules accept (≥ 0, ≤ 9 places), else None."""
    if value is None:
        return None
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        return None
    if not number.is_finite() or number < 0 or number != number.quantize(Decimal("1e-9")):
        return None
    if number >= Decimal(10) ** 29:
        return None
    return number


def normalise(meter: dict[str, Any]) -> dict[str, Any]:
    """A meter of a catalog file (meterwax's or OpenMeter's form) as name, event_meter,
    aggregation, value, filter {path: values}, group_by {column: path}."""
    if "slug" in meter:
        group_by = {c: "data." + p[2:] for c, p in (meter.get("groupBy") or {}).items()}
        value = meter.get("valueProperty")
        return {
            "name": meter["slug"],
            "event_meter": meter["eventType"],
            "aggregation": meter["aggregation"].lower(),
            "value": "data." + value[2:] if value else "quantity",
            "filter": {},
            "group_by": group_by,
        }
    group_by = meter.get("group_by") or {}
    if isinstance(group_by, list):
        group_by = {c: f"dimensions.{c}" for c in group_by}
    filters = {
        (k if "." in k else f"dimensions.{k}"): [
            str(v) for v in (vs if isinstance(vs, list) else [vs])
        ]
        for k, vs in (meter.get("filter") or {}).items()
    }
    return {
        "name": meter["name"],
        "event_meter": meter["event_meter"],
        "aggregation": meter["aggregation"],
        "value": meter.get("value", "quantity"),
        "filter": filters,
        "group_by": group_by,
    }


def window_start(moment: datetime, window: timedelta) -> datetime:
    """The start of the epoch-aligned window that holds ``moment``."""
    return EPOCH + ((moment - EPOCH) // window) * window


def meter_windows(
    events: Iterable[dict[str, Any]], meters: list[dict[str, Any]], window: timedelta
) -> dict[WindowId, dict[str, Any]]:
    """Every meter window: {(tenant, meter, start, group key): {quantity, events, unvalued,
    values (distinct, for unique_count)}}."""
    events = list(events)
    found: dict[WindowId, dict[str, Any]] = {}
    for raw in meters:
        meter = normalise(raw)
        kind = meter["aggregation"]
        for event in events:
            if event["meter"] != meter["event_meter"]:
                continue
            if any(_as_text(_field(event, p)) not in vs for p, vs in meter["filter"].items()):
                continue
            groups = {c: _as_text(_field(event, p)) for c, p in meter["group_by"].items()}
            key = json.dumps(groups, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            window_id = (
                event["tenant_id"],
                meter["name"],
                window_start(event["time"], window),
                key if groups else "",
            )
            entry = found.setdefault(
                window_id,
                {"kind": kind, "valued": [], "events": 0, "unvalued": 0},
            )
            if kind == "count":
                entry["events"] += 1
                continue
            raw_value = _field(event, meter["value"])
            value = _as_text(raw_value) if kind == "unique_count" else _number(raw_value)
            if value is None:
                entry["unvalued"] += 1
                continue
            entry["events"] += 1
            entry["valued"].append((value, event["time"], event["id"]))
    return {key: _finish(entry) for key, entry in found.items()}


def _finish(entry: dict[str, Any]) -> dict[str, Any]:
    kind, valued = entry["kind"], entry["valued"]
    values = [v for v, _, _ in valued]
    if kind == "count":
        quantity: Decimal | None = Decimal(entry["events"])
    elif kind == "sum":
        quantity = sum(values, Decimal(0))
    elif kind == "unique_count":
        quantity = Decimal(len(set(values)))
    elif not values:
        quantity = None
    elif kind == "min":
        quantity = min(values)
    elif kind == "max":
        quantity = max(values)
    else:  # latest: the value of the greatest (time, id)
        quantity = max(valued, key=lambda v: (v[1], v[2]))[0]
    return {
        "quantity": quantity,
        "events": entry["events"],
        "unvalued": entry["unvalued"],
        "values": set(values) if kind == "unique_count" else None,
        "latest": max(((t, i) for _, t, i in valued), default=None),
        "kind": kind,
    }


def daily(windows: dict[WindowId, dict[str, Any]]) -> dict[tuple, Decimal | None]:
    """UTC day rollups: {(tenant, meter, group key, day start): value}, by aggregation."""
    days: dict[tuple, list[tuple[WindowId, dict[str, Any]]]] = {}
    for window_id, value in windows.items():
        tenant, meter, start, group = window_id
        day = datetime(start.year, start.month, start.day, tzinfo=UTC)
        days.setdefault((tenant, meter, group, day), []).append((window_id, value))
    result: dict[tuple, Decimal | None] = {}
    for key, members in days.items():
        kind = members[0][1]["kind"]
        values = [v for _, v in members]
        present = [v["quantity"] for v in values if v["quantity"] is not None]
        if kind in ("sum", "count"):
            result[key] = sum(present, Decimal(0))
        elif kind == "unique_count":
            result[key] = Decimal(len(set().union(*(v["values"] for v in values))))
        elif not present:
            result[key] = None
        elif kind == "min":
            result[key] = min(present)
        elif kind == "max":
            result[key] = max(present)
        else:
            ranked = [v for v in values if v["latest"] is not None]
            result[key] = max(ranked, key=lambda v: v["latest"])["quantity"]
    return result


def lake_windows(rows: Iterable[dict[str, Any]]) -> dict[WindowId, dict[str, Any]]:
    """usage_windows rows in the reference's shape (quantity, events, unvalued)."""
    return {
        (r["tenant_id"], r["meter"], r["window_start"], r.get("group_key") or ""): {
            "quantity": r["quantity"],
            "events": r["event_count"],
            "unvalued": r.get("unvalued_count") or 0,
        }
        for r in rows
    }


def comparable(windows: dict[WindowId, dict[str, Any]]) -> dict[WindowId, tuple]:
    """Windows as (quantity, events, unvalued), quantities normalised for comparison."""
    return {
        key: (
            None if v["quantity"] is None else Decimal(v["quantity"]).normalize(),
            v["events"],
            v["unvalued"],
        )
        for key, v in windows.items()
    }
