"""``meterwax usage``: window totals from the lake, filtered, as a table or JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from meterwax.sinks.catalog_table import CatalogStore
from meterwax.sinks.lake import Lake
from meterwax.sinks.queries import instant_literal, literal, sql
from meterwax.sinks.schemas import USAGE_WINDOWS

WINDOW_COLUMNS = (
    "tenant_id",
    "meter",
    "window_start",
    "window_end",
    "quantity",
    "event_count",
    "revision",
)


@dataclass(frozen=True)
class UsageFilter:
    """Which windows to read: ``start`` inclusive and ``end`` exclusive, on window_start."""

    tenant: str | None = None
    meter: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    as_of: int | str | None = None
    """A table version or an RFC 3339 time: what the table said then (Delta time travel)."""

    def where_clause(self) -> str:
        """The SQL WHERE clause (or an empty string)."""
        conditions = self.conditions()
        return ("WHERE " + " AND ".join(conditions)) if conditions else ""

    def conditions(self) -> list[str]:
        """The SQL conditions, to be joined with AND."""
        conditions = []
        if self.tenant is not None:
            conditions.append(f"tenant_id = {literal(self.tenant)}")
        if self.meter is not None:
            conditions.append(f"meter = {literal(self.meter)}")
        if self.start is not None:
            conditions.append(f"window_start >= {instant_literal(self.start)}")
        if self.end is not None:
            conditions.append(f"window_start < {instant_literal(self.end)}")
        return conditions


def window_rows(lake: Lake, usage: UsageFilter) -> list[dict[str, Any]]:
    """Every matching ``usage_windows`` row, ordered by tenant, meter, window and group.

    A catalog meter's window also has its group columns (one per ``group_by`` column), its
    ``aggregation`` and ``unvalued_count``, and, for a meter with a unit, ``unit`` and
    ``quantity_in_unit`` (converted at report time).
    """
    present = set(lake.table(USAGE_WINDOWS, usage.as_of).schema().to_arrow().names)
    extra = [c for c in ("group_key", "aggregation", "unvalued_count") if c in present]
    columns = ", ".join([*WINDOW_COLUMNS, *extra])
    order = "tenant_id, meter, window_start" + (", group_key" if extra else "")
    table = sql(
        lake,
        f"SELECT {columns} FROM usage_windows {usage.where_clause()} ORDER BY {order}",
        [USAGE_WINDOWS],
        version=usage.as_of,
    )
    rows = table.to_pylist()
    as_of = usage.as_of
    moment = lake.commit_time(USAGE_WINDOWS, as_of) if isinstance(as_of, int) else as_of
    catalog = CatalogStore(lake).as_of(moment)
    if catalog.is_legacy:
        for row in rows:
            for column in extra:
                row.pop(column, None)
        return rows
    for row in rows:
        key = row.pop("group_key", None)
        row.update(json.loads(key) if key else {})
        row["aggregation"] = row.get("aggregation") or "sum"
        row["unvalued_count"] = row.get("unvalued_count") or 0
        meter = catalog.meter(row["meter"])
        if meter is not None and meter.unit is not None:
            row["unit"] = meter.unit.name
            quantity = row["quantity"]
            row["quantity_in_unit"] = None if quantity is None else meter.unit.convert(quantity)
    return rows


def window_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The columns of :func:`window_rows`: group columns follow ``meter``."""
    present = {key for row in rows for key in row}
    trailing = [c for c in _TRAILING if c in present]
    groups = sorted(present - set(WINDOW_COLUMNS) - set(trailing))
    return [*WINDOW_COLUMNS[:2], *groups, *WINDOW_COLUMNS[2:], *trailing]


_TRAILING = ("aggregation", "unvalued_count", "unit", "quantity_in_unit")


def tenant_totals(lake: Lake, usage: UsageFilter) -> list[dict[str, Any]]:
    """Totals per (tenant, meter) over the matching windows."""
    table = sql(
        lake,
        "SELECT tenant_id, meter, COUNT(*) AS windows, SUM(event_count) AS event_count, "
        "SUM(CAST(quantity AS DECIMAL(76, 9))) AS quantity "
        f"FROM usage_windows {usage.where_clause()} "
        "GROUP BY tenant_id, meter ORDER BY tenant_id, meter",
        [USAGE_WINDOWS],
        version=usage.as_of,
    )
    return table.to_pylist()
