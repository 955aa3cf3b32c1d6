"""``meterwax usage``: window totals from the lake, filtered, as a table or JSON."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

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
    """Every matching ``usage_windows`` row, ordered by tenant, meter and window."""
    columns = ", ".join(WINDOW_COLUMNS)
    table = sql(
        lake,
        f"SELECT {columns} FROM usage_windows {usage.where_clause()} "
        "ORDER BY tenant_id, meter, window_start",
        [USAGE_WINDOWS],
        version=usage.as_of,
    )
    return table.to_pylist()


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
