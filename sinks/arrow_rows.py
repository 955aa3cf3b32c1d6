"""Build Arrow tables, column by column, from the processor's row objects.

Quantities arrive as exact integer nano-units and become ``decimal(38, 9)`` by writing the
128-bit two's-complement integers straight into an Arrow buffer: no Decimal objects, no floats.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import pyarrow as pa

from meterwax.operators.contract import MAX_QUANTITY_NANOS
from meterwax.operators.decode import Event
from meterwax.operators.records import LateRow, LedgerRow, QuarantineRow, SourcePartition, WindowRow
from meterwax.operators.timeline import DAY_US
from meterwax.sinks.schemas import (
    EVENTS,
    LATE_EVENTS,
    QUANTITY,
    QUARANTINE,
    TIMESTAMP,
    USAGE_WINDOWS,
    WINDOW_CONFLICTS,
)


def decimal_column(nanos: Sequence[int]) -> pa.Array:
    """``decimal(38, 9)`` array from integer nano-units (value × 10⁹), exactly.

    A decimal(38, 9) is its unscaled 128-bit integer, i.e. the nano-units. When they all fit
    in 64 bits (quantities below 9.2 billion units) numpy builds the column; otherwise each
    value is written as 16 little-endian bytes. Either way no value is ever rounded.
    """
    try:
        unscaled = np.asarray(nanos, dtype=np.int64)
    except OverflowError:
        too_large = [v for v in nanos if abs(v) > MAX_QUANTITY_NANOS]
        if too_large:  # a rule upstream failed: never store a value no reader can trust
            msg = f"{len(too_large)} value(s) past decimal(38, 9), e.g. {too_large[0]} nano-units"
            raise ValueError(msg) from None
        buffer = b"".join(value.to_bytes(16, "little", signed=True) for value in nanos)
        return pa.Array.from_buffers(QUANTITY, len(nanos), [None, pa.py_buffer(buffer)])
    return pa.array(unscaled).cast(pa.decimal128(38, 0)).view(QUANTITY)


WIDE_QUANTITY = pa.decimal256(76, 9)
"""What sums are computed in: no sum of fewer than 2^63 quantities can overflow it."""


def decimal_to_nanos(array: pa.Array | pa.ChunkedArray) -> list[int | None]:
    """Integer nano-units from a scale-9 decimal array, exactly (inverse of the above)."""
    chunks = array.chunks if isinstance(array, pa.ChunkedArray) else [array]
    values: list[int | None] = []
    for chunk in chunks:
        if chunk.type not in (QUANTITY, WIDE_QUANTITY):
            chunk = chunk.cast(WIDE_QUANTITY)
        width = chunk.type.byte_width
        data = chunk.buffers()[1]
        raw = memoryview(data)[chunk.offset * width : (chunk.offset + len(chunk)) * width]
        valid = chunk.is_valid().to_pylist() if chunk.null_count else None
        for i in range(len(chunk)):
            if valid is not None and not valid[i]:
                values.append(None)
            else:
                item = raw[i * width : (i + 1) * width]
                values.append(int.from_bytes(item, "little", signed=True))
    return values


def timestamp_to_micros(array: pa.Array | pa.ChunkedArray) -> list[int | None]:
    """Integer microseconds since the epoch from a timestamp array."""
    return array.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_pylist()


def timestamp_column(micros: Sequence[int | None]) -> pa.Array:
    """UTC microsecond timestamps from integer microseconds since the epoch."""
    return pa.array(micros, type=pa.int64()).cast(TIMESTAMP)


def date_column(micros: Sequence[int]) -> pa.Array:
    """The UTC calendar date of each timestamp (partition values)."""
    days = np.asarray(micros, dtype=np.int64) // DAY_US
    return pa.array(days.astype(np.int32)).cast(pa.date32())


def event_columns(events: Sequence[Event]) -> dict[str, pa.Array]:
    """The event's columns, shared by ``events`` (the ledger) and ``late_events``."""
    # Transpose once (in C) instead of one Python pass per column.
    tenants, ids, meters, nanos, times, dimensions, sources = (
        zip(*events, strict=True) if events else ((),) * 7
    )
    micros = np.asarray(times, dtype=np.int64)  # once, for both time columns
    return {
        "tenant_id": pa.array(tenants, pa.string()),
        "id": pa.array(ids, pa.string()),
        "meter": pa.array(meters, pa.string()),
        "quantity": decimal_column(nanos),
        "event_time": timestamp_column(micros),
        "event_date": date_column(micros),
        "dimensions": pa.array(dimensions, type=EVENTS.schema.field("dimensions").type),
        "source": pa.array(sources, pa.string()),
    }


def _origin_columns(where: SourcePartition, offsets: Sequence[int]) -> dict[str, pa.Array]:
    return {
        "origin": pa.array([where.source] * len(offsets), pa.string()),
        "origin_partition": pa.array([where.partition] * len(offsets), pa.int32()),
        "origin_offset": pa.array(offsets, pa.int64()),
    }


def ledger_table(where: SourcePartition, rows: Sequence[LedgerRow], counted_by: str) -> pa.Table:
    """Rows for the ``events`` ledger."""
    columns = event_columns([r.event for r in rows])
    columns.update(_origin_columns(where, [r.offset for r in rows]))
    columns["counted_by"] = pa.array([counted_by] * len(rows), pa.string())
    return pa.Table.from_pydict(columns, schema=EVENTS.schema)


def late_table(where: SourcePartition, rows: Sequence[LateRow]) -> pa.Table:
    """Rows for the ``late_events`` channel."""
    columns = event_columns([r.event for r in rows])
    columns.update(_origin_columns(where, [r.offset for r in rows]))
    columns["window_start"] = timestamp_column([r.window_start_us for r in rows])
    columns["watermark"] = timestamp_column([r.watermark_us for r in rows])
    return pa.Table.from_pydict(columns, schema=LATE_EVENTS.schema)


def quarantine_table(
    where: SourcePartition, rows: Sequence[QuarantineRow], *, flow: str, line_numbers: bool
) -> pa.Table:
    """Rows for ``quarantine``; ``line_numbers`` for file input (line = offset + 1)."""
    offsets = [r.offset for r in rows]
    columns = _origin_columns(where, offsets)
    columns["line_number"] = pa.array(
        [o + 1 for o in offsets] if line_numbers else [None] * len(rows), pa.int64()
    )
    columns["kafka_timestamp"] = timestamp_column(
        [r.kafka_timestamp_ms * 1000 if r.kafka_timestamp_ms is not None else None for r in rows]
    )
    columns["kafka_key"] = pa.array([r.key for r in rows], pa.binary())
    columns["raw"] = pa.array([r.raw for r in rows], pa.binary())
    columns["reason"] = pa.array([r.reason for r in rows], pa.string())
    columns["detail"] = pa.array([r.detail for r in rows], pa.string())
    columns["flow"] = pa.array([flow] * len(rows), pa.string())
    columns["tenant_id"] = pa.array([r.tenant_id for r in rows], pa.string())
    columns["event_id"] = pa.array([r.event_id for r in rows], pa.string())
    return pa.Table.from_pydict(columns, schema=QUARANTINE.schema)


def window_key_columns(
    keys: Sequence[tuple[str, str, int]], ends_us: Sequence[int]
) -> dict[str, pa.Array]:
    """The columns that name a window, from ``(tenant_id, meter, window_start_us)`` keys.

    tenant_id, meter, window_start, window_end and window_date: the leading columns of every
    table with a row per window (usage_windows, window_conflicts, usage_corrections).
    """
    starts = [key[2] for key in keys]
    return {
        "tenant_id": pa.array([key[0] for key in keys], pa.string()),
        "meter": pa.array([key[1] for key in keys], pa.string()),
        "window_start": timestamp_column(starts),
        "window_end": timestamp_column(ends_us),
        "window_date": date_column(starts),
    }


def _window_key_columns(rows: Sequence[WindowRow]) -> dict[str, pa.Array]:
    return window_key_columns(
        [(r.tenant_id, r.meter, r.window_start_us) for r in rows], [r.window_end_us for r in rows]
    )


def windows_table(rows: Sequence[WindowRow], *, revision: int, updated_at: datetime) -> pa.Table:
    """Rows for ``usage_windows``, all at one revision."""
    return pa.Table.from_pydict(
        {
            **_window_key_columns(rows),
            "quantity": decimal_column([r.quantity_nanos for r in rows]),
            "event_count": pa.array([r.event_count for r in rows], pa.int64()),
            "revision": pa.array([revision] * len(rows), pa.int64()),
            "updated_at": pa.array([updated_at] * len(rows), TIMESTAMP),
        },
        schema=USAGE_WINDOWS.schema,
    )


def conflicts_table(where: SourcePartition, rows: Sequence[WindowRow]) -> pa.Table:
    """Rows for ``window_conflicts``: the partial totals the main flow did not write."""
    return pa.Table.from_pydict(
        {
            **_window_key_columns(rows),
            "partial_quantity": decimal_column([r.quantity_nanos for r in rows]),
            "partial_event_count": pa.array([r.event_count for r in rows], pa.int64()),
            "origin": pa.array([where.source] * len(rows), pa.string()),
            "origin_partition": pa.array([where.partition] * len(rows), pa.int32()),
            "origin_position": pa.array([r.position for r in rows], pa.int64()),
        },
        schema=WINDOW_CONFLICTS.schema,
    )


def window_keys(table: pa.Table) -> list[tuple[str, str, int]]:
    """(tenant_id, meter, window start in µs) of every row of a table with those columns."""
    return list(
        zip(
            table.column("tenant_id").cast(pa.string()).to_pylist(),
            table.column("meter").cast(pa.string()).to_pylist(),
            timestamp_to_micros(table.column("window_start")),
            strict=True,
        )
    )


def group_by_window(
    events: pa.Table, window_us: int
) -> dict[tuple[str, str, int], tuple[int, int]]:
    """Exact (nano-units, count) per window of ledger rows.

    ``events`` has tenant_id, meter, event_time and quantity. Quantities are summed as
    decimal(76, 9): a decimal(38, 9) sum wraps around silently past 38 digits.
    """
    micros = events.column("event_time").cast(TIMESTAMP).cast(pa.int64()).to_numpy()
    grouped = (
        events.select(["tenant_id", "meter"])
        .append_column("quantity", events.column("quantity").cast(WIDE_QUANTITY))
        .append_column("window_start_us", pa.array(micros - micros % window_us, pa.int64()))
        .group_by(["tenant_id", "meter", "window_start_us"])
        .aggregate([("quantity", "sum"), ("quantity", "count")])
    )
    keys = zip(
        grouped.column("tenant_id").to_pylist(),
        grouped.column("meter").to_pylist(),
        grouped.column("window_start_us").to_pylist(),
        strict=True,
    )
    totals = zip(
        decimal_to_nanos(grouped.column("quantity_sum")),
        grouped.column("quantity_count").to_pylist(),
        strict=True,
    )
    return dict(zip(keys, totals, strict=True))
