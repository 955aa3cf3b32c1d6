"""Usage rolled up by calendar period (and optionally by one event dimension), exactly.

Two sources, one arithmetic:

- **by tenant and meter**: the rows of ``usage_windows``. A rollup is the sum of the windows
  whose start falls in the requested range, grouped by the calendar period that holds each
  window (see :mod:`meterwax.reports.periods`).
- **by a dimension** (``region``, ``plan``…): ``usage_windows`` has no dimensions, so these
  totals come from the ``events`` ledger: its events are grouped into the lake's windows
  (the window their event time falls in, exactly as the flow does) and then rolled up the same
  way. The ledger holds on-time events; late events enter it, and these totals, when the
  correction flow has run — the same moment they enter ``usage_windows``.

Money is exact. DataFusion's, Arrow's and polars' ``decimal(38, 9)`` sums silently wrap around
past 38 digits, so every sum here is over ``decimal(76, 9)``: quantities are below 10^29, so
fewer than 2^63 of them cannot reach 10^67. Nothing passes through a float.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa

from meterwax.errors import ConfigError, LakeError
from meterwax.operators.timeline import from_micros, to_micros
from meterwax.reports.periods import Granularity, PeriodIndex
from meterwax.reports.usage import UsageFilter
from meterwax.sinks.lake import Lake
from meterwax.sinks.queries import instant_literal, literal, sql
from meterwax.sinks.schemas import EVENTS, TIMESTAMP, USAGE_WINDOWS

FIXED_COLUMNS = ("tenant_id", "meter", "period_start", "quantity", "event_count")


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
    """An event dimension (a key of ``events.dimensions``) to total by, from the ledger."""
    as_of: int | str | None = None
    """A table version or an RFC 3339 time: what the table read said then (time travel)."""

    def columns(self) -> list[str]:
        """The output columns, in order: the dimension (if any) follows ``meter``."""
        if self.group_by is None:
            return list(FIXED_COLUMNS)
        return [*FIXED_COLUMNS[:2], self.group_by, *FIXED_COLUMNS[2:]]


def rollup(lake: Lake, query: Rollup) -> list[dict[str, Any]]:
    """The totals, one dict per (tenant, meter, [dimension,] period), ordered by those keys.

    ``period_start`` is an aware datetime in ``query.tz``; ``quantity`` an exact Decimal.
    Raises ConfigError when a window cannot be placed in a single period.
    """
    if query.group_by is not None and query.group_by in FIXED_COLUMNS:
        msg = f"--group-by {query.group_by!r} collides with an output column; it cannot be a key"
        raise ConfigError(msg)
    window_us = lake.window_us()
    if window_us is None:
        msg = f"lake {lake.root} has no usage_windows table (has `meterwax run` written to it?)"
        raise LakeError(msg)
    windows = (
        _ledger_windows(lake, query, window_us)
        if query.group_by is not None
        else _usage_windows(lake, query)
    )
    # date_bin returns nanoseconds: normalise to microseconds, the lake's unit.
    starts = windows.column("window_start").cast(TIMESTAMP).cast(pa.int64()).to_numpy()
    if query.granularity is None:
        periods = starts
    else:
        # One zone computation per distinct window start, shared by every tenant and meter.
        index = PeriodIndex(query.granularity, query.tz, window_us)
        distinct = np.unique(starts)
        period_of = np.array([index.period_of_window(int(s)) for s in distinct], dtype=np.int64)
        periods = period_of[np.searchsorted(distinct, starts)]
    totals = (
        windows.append_column("period", pa.array(periods, pa.int64()))
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


def _usage_windows(lake: Lake, query: Rollup) -> pa.Table:
    where = UsageFilter(query.tenant, query.meter, query.start, query.end).where_clause()
    return sql(
        lake,
        "SELECT tenant_id, meter, CAST(NULL AS VARCHAR) AS dimension, window_start, "
        f"{_WIDE_QUANTITY} AS quantity, event_count FROM usage_windows {where}",
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
    window = f"date_bin(INTERVAL '{window_us} microseconds', event_time, {_EPOCH_LITERAL})"
    dimension = f"dimensions[{literal(query.group_by or '')}]"
    return sql(
        lake,
        f"SELECT tenant_id, meter, {dimension} AS dimension, {window} AS window_start, "
        f"SUM({_WIDE_QUANTITY}) AS quantity, COUNT(*) AS event_count "
        f"FROM events WHERE {' AND '.join(conditions) or 'TRUE'} GROUP BY 1, 2, 3, 4",
        [EVENTS],
        version=query.as_of,
    )


_EPOCH_LITERAL = "TIMESTAMP '1970-01-01T00:00:00Z'"
_WIDE_QUANTITY = "CAST(quantity AS DECIMAL(76, 9))"
"""decimal(38, 9) widened: a sum of fewer than 2^63 such values cannot overflow 67 digits."""
