"""Usage rolled up by calendar period (and by group), exactly, for every aggregation.

A rollup combines the windows whose start falls in the requested range, per tenant, meter,
group and calendar period (see :mod:`meterwax.reports.periods`), the way each aggregation
combines:

================  ===========================================================================
aggregation       a period's value
================  ===========================================================================
sum, count        the sum of its windows' values
min, max          the least (greatest) of its windows' values
latest            the value of the window whose latest event has the greatest (time, id)
unique_count      the number of distinct values over the whole period: the union of its
                  windows' value sets, never the sum of their counts
================  ===========================================================================

A catalog meter's windows carry their groups (``group_by``): the rows have one column per
group. ``--group-by COLUMN`` keeps only that group column (combining the others).

In a lake without a catalog, windows have no groups, so ``--group-by DIMENSION`` totals come
from the ``events`` ledger: its events are grouped into the lake's windows (the window their
event time falls in, exactly as the flow does) and then rolled up the same way. The ledger
holds on-time events; late events enter it, and these totals, when the correction flow has
run — the same moment they enter ``usage_windows``.

A meter with a ``unit`` also gets ``unit`` and ``quantity_in_unit`` columns: the value
divided and rounded by the unit's rule at report time (the stored windows stay exact).

Money is exact. DataFusion's, Arrow's and polars' ``decimal(38, 9)`` sums silently wrap around
past 38 digits, so every sum here is over ``decimal(76, 9)``: quantities are below 10^29, so
fewer than 2^63 of them cannot reach 10^67. Nothing passes through a float.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa

from meterwax.errors import ConfigError, LakeError
from meterwax.operators.catalog import Catalog
from meterwax.operators.timeline import from_micros, to_micros
from meterwax.reports.periods import Granularity, PeriodIndex
from meterwax.reports.usage import UsageFilter
from meterwax.sinks.arrow_rows import timestamp_to_micros
from meterwax.sinks.catalog_table import CatalogStore
from meterwax.sinks.lake import Lake
from meterwax.sinks.queries import instant_literal, literal, sql, window_start_expression
from meterwax.sinks.schemas import EVENTS, TIMESTAMP, USAGE_WINDOWS, VOIDED_EVENTS
from meterwax.sinks.voids_table import VoidStore

FIXED_COLUMNS = ("tenant_id", "meter", "period_start", "quantity", "event_count")
_ADDITIVE = {None, "sum", "count"}


@dataclass(frozen=True)
class Rollup:
    """What to total: which windows (start inclusive, end exclusive), in which periods."""

    tz: ZoneInfo
    granularity: Granularity | None = None
    """None: one period per window of the lake."""
    tenant: str | None = None
    meter: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    group_by: str | None = None
    """A group column of catalog meters (or, in a lake without a catalog, an event dimension,
    a key of ``events.dimensions``, read from the ledger) to total by."""
    as_of: int | str | None = None
    """A table version or an RFC 3339 time: what the table read said then (time travel)."""

    def columns(self) -> list[str]:
        """The output columns without a catalog: the dimension (if any) follows ``meter``."""
        if self.group_by is None:
            return list(FIXED_COLUMNS)
        return [*FIXED_COLUMNS[:2], self.group_by, *FIXED_COLUMNS[2:]]


def report_columns(query: Rollup, rows: list[dict[str, Any]]) -> list[str]:
    """The columns of these rows, in order.

    The fixed ones, group columns after ``meter``, then what catalogs add (unvalued events,
    units) at the end.
    """
    present = {key for row in rows for key in row}
    base = query.columns()
    groups = sorted(present - set(base) - set(_TRAILING))
    return [*base[:2], *groups, *base[2:], *(c for c in _TRAILING if c in present)]


_TRAILING = ("unvalued_count", "unit", "quantity_in_unit")


def rollup(lake: Lake, query: Rollup) -> list[dict[str, Any]]:
    """The rollup, one dict per (tenant, meter, [groups,] period), ordered by those keys.

    ``period_start`` is an aware datetime in ``query.tz``; ``quantity`` an exact Decimal
    (None for a ``min``, ``max`` or ``latest`` period no event gave a value).
    Raises ConfigError when a window cannot be placed in a single period.
    """
    if query.group_by is not None and query.group_by in FIXED_COLUMNS:
        msg = f"--group-by {query.group_by!r} collides with an output column; it cannot be a key"
        raise ConfigError(msg)
    window_us = lake.window_us()
    if window_us is None:
        msg = f"lake {lake.root} has no usage_windows table (has `meterwax run` written to it?)"
        raise LakeError(msg)
    # A version number is usage_windows'; the ledger and the catalog have their own: they are
    # read as of that version's time.
    as_of = query.as_of
    moment = lake.commit_time(USAGE_WINDOWS, as_of) if isinstance(as_of, int) else as_of
    catalog = CatalogStore(lake).as_of(moment)
    from_ledger = query.group_by is not None and catalog.is_legacy
    if from_ledger and isinstance(query.as_of, int):
        query = replace(query, as_of=moment)
    windows = (
        _ledger_windows(lake, query, window_us) if from_ledger else _usage_windows(lake, query)
    )
    periods = _periods(windows, query, window_us)
    if from_ledger or _only_additive(windows):
        rows = _additive_rollup(windows, periods, query)
    else:
        rows = _catalog_rollup(windows, periods, query)
    for row in rows:
        _add_unit(row, catalog)
    return rows


def _periods(windows: pa.Table, query: Rollup, window_us: int) -> np.ndarray:
    """The period (start in µs) of every window."""
    # date_bin returns nanoseconds: normalise to microseconds, the lake's unit.
    starts = windows.column("window_start").cast(TIMESTAMP).cast(pa.int64()).to_numpy()
    if query.granularity is None:
        return starts
    # One zone computation per distinct window start, shared by every tenant and meter.
    index = PeriodIndex(query.granularity, query.tz, window_us)
    distinct = np.unique(starts)
    period_of = np.array([index.period_of_window(int(s)) for s in distinct], dtype=np.int64)
    return period_of[np.searchsorted(distinct, starts)]


def _only_additive(windows: pa.Table) -> bool:
    """True if every window is a plain sum or count without groups (the Arrow path)."""
    if "aggregation" not in windows.column_names:
        return True
    aggregations = set(windows.column("aggregation").unique().to_pylist())
    groups = set(windows.column("group_key").unique().to_pylist())
    return aggregations <= _ADDITIVE and groups <= {None, ""}


def _additive_rollup(windows: pa.Table, periods: np.ndarray, query: Rollup) -> list[dict]:
    totals = (
        windows.select(["tenant_id", "meter", "dimension", "quantity", "event_count"])
        .append_column("period", pa.array(periods, pa.int64()))
        .group_by(["tenant_id", "meter", "dimension", "period"], use_threads=False)
        .aggregate([("quantity", "sum"), ("event_count", "sum")])
        .to_pylist()
    )
    totals.sort(
        key=lambda t: (
            t["tenant_id"],
            t["meter"],
            t["period"],
            t["dimension"] is None,
            t["dimension"] or "",
        )
    )
    rows = []
    for total in totals:
        row: dict[str, Any] = {"tenant_id": total["tenant_id"], "meter": total["meter"]}
        if query.group_by is not None:
            row[query.group_by] = total["dimension"]
        row["period_start"] = from_micros(total["period"]).astimezone(query.tz)
        row["quantity"] = total["quantity_sum"]
        row["event_count"] = total["event_count_sum"]
        rows.append(row)
    return rows


class _Period:
    """One (tenant, meter, groups, period) being combined from its windows."""

    __slots__ = ("aggregation", "count", "distinct", "quantity", "rank", "unvalued")

    def __init__(self, aggregation: str) -> None:
        self.aggregation = aggregation
        self.quantity: Decimal | None = Decimal(0) if aggregation in _ADDITIVE else None
        self.count = 0
        self.unvalued = 0
        self.distinct: set[str] = set()
        self.rank: tuple[int, str] | None = None

    def add(self, window: dict[str, Any], rank: tuple[int, str] | None) -> None:
        self.count += window["event_count"]
        self.unvalued += window["unvalued_count"] or 0
        value = window["quantity"]
        kind = self.aggregation
        if kind == "unique_count":
            self.distinct.update(window["distinct_values"] or ())
        elif kind in _ADDITIVE:
            self.quantity = (self.quantity or Decimal(0)) + (value or 0)
        elif value is None:
            return
        elif kind == "min":
            self.quantity = value if self.quantity is None else min(self.quantity, value)
        elif kind == "max":
            self.quantity = value if self.quantity is None else max(self.quantity, value)
        elif kind == "latest" and rank is not None and (self.rank is None or rank > self.rank):
            self.quantity, self.rank = value, rank

    def value(self) -> Decimal | None:
        if self.aggregation == "unique_count":
            return Decimal(len(self.distinct))
        return self.quantity


def _catalog_rollup(windows: pa.Table, periods: np.ndarray, query: Rollup) -> list[dict]:
    latest_times = timestamp_to_micros(windows.column("latest_time"))
    combined: dict[tuple, _Period] = {}
    for window, period, latest_time in zip(
        windows.to_pylist(), periods.tolist(), latest_times, strict=True
    ):
        groups = json.loads(window["group_key"]) if window["group_key"] else {}
        if query.group_by is not None:
            groups = {query.group_by: groups.get(query.group_by)}
        key = (
            window["tenant_id"],
            window["meter"],
            tuple(sorted(groups.items())),
            period,
        )
        entry = combined.get(key)
        if entry is None:
            entry = combined[key] = _Period(window["aggregation"] or "sum")
        rank = (latest_time, window["latest_id"]) if latest_time is not None else None
        entry.add(window, rank)
    rows = []
    for (tenant, meter, groups, period), entry in sorted(
        combined.items(), key=lambda item: (item[0][0], item[0][1], item[0][3], _order(item[0][2]))
    ):
        row: dict[str, Any] = {"tenant_id": tenant, "meter": meter, **dict(groups)}
        row["period_start"] = from_micros(period).astimezone(query.tz)
        row["quantity"] = entry.value()
        row["event_count"] = entry.count
        row["unvalued_count"] = entry.unvalued
        rows.append(row)
    return rows


def _order(groups: tuple[tuple[str, str | None], ...]) -> tuple:
    return tuple((name, value is None, value or "") for name, value in groups)


def _add_unit(row: dict[str, Any], catalog: Catalog) -> None:
    meter = None if catalog.is_legacy else catalog.meter(row["meter"])
    if meter is None or meter.unit is None:
        return
    row["unit"] = meter.unit.name
    quantity = row["quantity"]
    row["quantity_in_unit"] = None if quantity is None else meter.unit.convert(quantity)


_CATALOG_COLUMNS = (
    "aggregation",
    "group_key",
    "unvalued_count",
    "distinct_values",
    "latest_time",
    "latest_id",
)


def _usage_windows(lake: Lake, query: Rollup) -> pa.Table:
    where = UsageFilter(query.tenant, query.meter, query.start, query.end).where_clause()
    table = lake.table(USAGE_WINDOWS, query.as_of)
    present = set(table.schema().to_arrow().names)
    extra = "".join(f", {c}" for c in _CATALOG_COLUMNS if c in present)
    return sql(
        lake,
        "SELECT tenant_id, meter, CAST(NULL AS VARCHAR) AS dimension, window_start, "
        f"{_WIDE_QUANTITY} AS quantity, event_count{extra} FROM usage_windows {where}",
        [USAGE_WINDOWS],
        version=query.as_of,
    )


def _window_ceiling(moment: datetime, window_us: int) -> datetime:
    """The first window start at or after ``moment``."""
    return from_micros(-(-to_micros(moment) // window_us) * window_us)


def _ledger_windows(lake: Lake, query: Rollup, window_us: int) -> pa.Table:
    # A window starts in [start, end) exactly when its events' times are in
    # [ceil(start), ceil(end)), ceil rounding up to a window start: the same windows as above.
    conditions = UsageFilter(query.tenant, query.meter).conditions()
    if query.start is not None:
        lower = _window_ceiling(query.start, window_us)
        conditions.append(f"event_time >= {instant_literal(lower)}")
        conditions.append(f"event_date >= DATE '{lower.date().isoformat()}'")
    if query.end is not None:
        upper = _window_ceiling(query.end, window_us)
        conditions.append(f"event_time < {instant_literal(upper)}")
        conditions.append(f"event_date <= DATE '{upper.date().isoformat()}'")
    window = window_start_expression("event_time", window_us)
    dimension = f"dimensions[{literal(query.group_by or '')}]"
    tables = [EVENTS]
    if lake.exists(VOIDED_EVENTS):
        # Voided copies do not count (voids undone since do).
        as_of = query.as_of if isinstance(query.as_of, str) else None
        undone = sorted(VoidStore(lake).undone_ids(as_of))
        still = f" AND v.void_id NOT IN ({', '.join(map(literal, undone))})" if undone else ""
        conditions.append(
            "NOT EXISTS (SELECT 1 FROM voided_events v WHERE v.origin = events.origin AND "
            "v.origin_partition = events.origin_partition AND "
            f"v.origin_offset = events.origin_offset{still})"
        )
        tables.append(VOIDED_EVENTS)
    return sql(
        lake,
        f"SELECT tenant_id, meter, {dimension} AS dimension, {window} AS window_start, "
        f"SUM({_WIDE_QUANTITY}) AS quantity, COUNT(*) AS event_count "
        f"FROM events WHERE {' AND '.join(conditions) or 'TRUE'} GROUP BY 1, 2, 3, 4",
        tables,
        version=query.as_of,
    )


_WIDE_QUANTITY = "CAST(quantity AS DECIMAL(76, 9))"
"""decimal(38, 9) widened: a sum of fewer than 2^63 such values cannot overflow 67 digits."""
