"""Build Arrow tables, column by column, from the processor's row objects.

Quantities arrive as exact integer nano-units and become ``decimal(38, 9)`` by writing the
128-bit two's-complement integers straight into an Arrow buffer: no Decimal objects, no floats.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from meterwax.operators.aggregates import WindowValue
from meterwax.operators.catalog import groups_of
from meterwax.operators.contract import MAX_EVENT_US, MAX_QUANTITY_NANOS, MIN_EVENT_US
from meterwax.operators.decode import Event
from meterwax.operators.records import (
    LateRow,
    LedgerRow,
    QuarantineRow,
    RecomputeRow,
    SourcePartition,
    WindowRow,
)
from meterwax.operators.timeline import DAY_US
from meterwax.sinks.schemas import (
    EVENTS,
    GROUPS,
    LATE_EVENTS,
    QUANTITY,
    QUARANTINE,
    TIMESTAMP,
    USAGE_WINDOWS,
    WINDOW_CONFLICTS,
)


def nullable_decimal_column(nanos: Sequence[int | None]) -> pa.Array:
    """:func:`decimal_column` where a value may be None (a null)."""
    if None not in nanos:  # the common case, checked in C
        return decimal_column(nanos)  # type: ignore[arg-type]
    present = decimal_column([0 if value is None else value for value in nanos])
    missing = pa.array([value is None for value in nanos], pa.bool_())
    return pc.if_else(missing, pa.scalar(None, QUANTITY), present)


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
    tenants, ids, meters, nanos, times, dimensions, sources, data = (
        zip(*events, strict=True) if events else ((),) * 8
    )
    micros = np.asarray(times, dtype=np.int64)  # once, for both time columns
    map_type = EVENTS.schema.field("dimensions").type
    return {
        "tenant_id": pa.array(tenants, pa.string()),
        "id": pa.array(ids, pa.string()),
        "meter": pa.array(meters, pa.string()),
        "quantity": nullable_decimal_column(nanos),
        "event_time": timestamp_column(micros),
        "event_date": date_column(micros),
        "dimensions": pa.array(dimensions, type=map_type),
        "source": pa.array(sources, pa.string()),
        "data": pa.nulls(len(data), map_type)
        if data.count(None) == len(data)
        else pa.array(data, type=map_type),
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
    columns["kafka_timestamp"] = timestamp_column([_kafka_timestamp_us(r) for r in rows])
    columns["kafka_key"] = pa.array([r.key for r in rows], pa.binary())
    columns["raw"] = pa.array([r.raw for r in rows], pa.binary())
    columns["reason"] = pa.array([r.reason for r in rows], pa.string())
    columns["detail"] = pa.array([r.detail for r in rows], pa.string())
    columns["flow"] = pa.array([flow] * len(rows), pa.string())
    columns["tenant_id"] = pa.array([r.tenant_id for r in rows], pa.string())
    columns["event_id"] = pa.array([r.event_id for r in rows], pa.string())
    return pa.Table.from_pydict(columns, schema=QUARANTINE.schema)


def _kafka_timestamp_us(row: QuarantineRow) -> int | None:
    """The row's Kafka timestamp in microseconds; None when there is none or it is absurd.

    A topic may accept any 64-bit timestamp a producer sets. One outside the instants event
    times may have (1970 to 3000) cannot be read back by every reader of the table, and one
    past about the year 292,000 does not even fit the column: the row keeps the message's
    coordinates and raw bytes, so the message itself can still be found.
    """
    stamp = row.kafka_timestamp_ms
    if stamp is None or not MIN_EVENT_US <= stamp * 1000 < MAX_EVENT_US:
        return None
    return stamp * 1000


def window_key_columns(
    keys: Sequence[tuple[str, str, int, str]], ends_us: Sequence[int]
) -> dict[str, pa.Array]:
    """The columns that name a window, from ``(tenant_id, meter, window_start_us, group_key)``.

    tenant_id, meter, window_start, window_end and window_date (the leading columns of every
    table with a row per window: usage_windows, window_conflicts, usage_corrections), and its
    group_key and groups.
    """
    tenants, meters, starts, group_keys = zip(*keys, strict=True) if keys else ((),) * 4
    return _key_columns(tenants, meters, starts, ends_us, group_keys)


def _key_columns(
    tenants: Sequence[str],
    meters: Sequence[str],
    starts: Sequence[int],
    ends_us: Sequence[int],
    group_keys: Sequence[str],
) -> dict[str, pa.Array]:
    """:func:`window_key_columns` from its columns."""
    return {
        "tenant_id": pa.array(tenants, pa.string()),
        "meter": pa.array(meters, pa.string()),
        "window_start": timestamp_column(starts),
        "window_end": timestamp_column(ends_us),
        "window_date": date_column(starts),
        "group_key": pa.array(group_keys, pa.string()),
        "groups": pa.array([groups_of(key) for key in group_keys], GROUPS)
        if any(group_keys)
        else pa.nulls(len(group_keys), GROUPS),  # no meter groups: every groups_of is None
    }


def window_value_columns(values: Sequence[WindowValue]) -> dict[str, pa.Array]:
    """What a meter window holds besides its quantity and count (see ``schemas``)."""
    return _value_columns(
        [value.unvalued_count for value in values],
        [value.distinct for value in values],
        [value.latest for value in values],
    )


def _value_columns(
    unvalued: Sequence[int],
    distinct: Sequence[tuple[str, ...] | None],
    latest: Sequence[tuple[int, str] | None],
) -> dict[str, pa.Array]:
    """:func:`window_value_columns` from its columns; all-null ones are made as such."""
    count = len(unvalued)
    no_latest = latest.count(None) == count
    return {
        "unvalued_count": pa.array(unvalued, pa.int64()),
        "distinct_values": pa.nulls(count, pa.list_(pa.string()))
        if distinct.count(None) == count
        else pa.array([None if d is None else list(d) for d in distinct], pa.list_(pa.string())),
        "latest_time": pa.nulls(count, TIMESTAMP)
        if no_latest
        else timestamp_column([None if x is None else x[0] for x in latest]),
        "latest_id": pa.nulls(count, pa.string())
        if no_latest
        else pa.array([None if x is None else x[1] for x in latest], pa.string()),
    }


def _row_key(row: WindowRow) -> tuple[str, str, int, str]:
    return (row.tenant_id, row.meter, row.window_start_us, row.group_key)


def row_value(row: WindowRow) -> WindowValue:
    """The :class:`WindowValue` a window row carries."""
    return WindowValue(
        row.quantity_nanos, row.event_count, row.unvalued_count, row.distinct, row.latest
    )


def windows_table(
    rows: Sequence[WindowRow], *, revision: int, updated_at: datetime, catalog_version: int
) -> pa.Table:
    """Rows for ``usage_windows``, all at one revision.

    The rows are transposed once (in C): with many tenants there is about a window per event,
    and a pass per column cost more than the insert itself.
    """
    (
        tenants,
        meters,
        starts,
        ends,
        nanos,
        counts,
        _positions,
        group_keys,
        unvalued,
        aggregations,
        distinct,
        latest,
        _event_meters,
    ) = zip(*rows, strict=True) if rows else ((),) * len(WindowRow._fields)
    count = len(rows)
    return pa.Table.from_pydict(
        {
            **_key_columns(tenants, meters, starts, ends, group_keys),
            "quantity": nullable_decimal_column(nanos),
            "event_count": pa.array(counts, pa.int64()),
            "revision": pa.array([revision] * count, pa.int64()),
            "updated_at": pa.array([updated_at] * count, TIMESTAMP),
            **_value_columns(unvalued, distinct, latest),
            "aggregation": pa.array(aggregations, pa.string()),
            "catalog_version": pa.array([catalog_version] * count, pa.int64()),
        },
        schema=USAGE_WINDOWS.schema,
    )


def conflicts_table(
    where: SourcePartition,
    rows: Sequence[WindowRow],
    recompute: Sequence[RecomputeRow] = (),
    voided: Sequence[RecomputeRow] = (),
) -> pa.Table:
    """Rows for ``window_conflicts``.

    Partial values the main flow did not write (``second_writer``), slices whose first
    values it could not form (``catalog_change``), and slices whose first values took in
    events a void had taken back (``voided_while_open``).
    """
    recompute = [*recompute, *voided]
    keys = [_row_key(r) for r in rows] + [
        (r.tenant_id, r.event_meter, r.window_start_us, "") for r in recompute
    ]
    return pa.Table.from_pydict(
        {
            **window_key_columns(
                keys, [r.window_end_us for r in rows] + [r.window_end_us for r in recompute]
            ),
            "partial_quantity": nullable_decimal_column(
                [r.quantity_nanos for r in rows] + [0] * len(recompute)
            ),
            "partial_event_count": pa.array(
                [r.event_count for r in rows] + [0] * len(recompute), pa.int64()
            ),
            "origin": pa.array([where.source] * len(keys), pa.string()),
            "origin_partition": pa.array([where.partition] * len(keys), pa.int32()),
            "origin_position": pa.array(
                [r.position for r in rows] + [r.position for r in recompute], pa.int64()
            ),
            "event_meter": pa.array(
                [r.event_meter or r.meter for r in rows] + [r.event_meter for r in recompute],
                pa.string(),
            ),
            "reason": pa.array(
                [SECOND_WRITER] * len(rows)
                + [CATALOG_CHANGE] * (len(recompute) - len(voided))
                + [VOIDED_WHILE_OPEN] * len(voided),
                pa.string(),
            ),
        },
        schema=WINDOW_CONFLICTS.schema,
    )


SECOND_WRITER = "second_writer"
"""A window conflict: another writer had written the window first."""
CATALOG_CHANGE = "catalog_change"
"""A window conflict: the slice was open when the meter catalog changed."""
VOIDED_WHILE_OPEN = "voided_while_open"
"""A window conflict: the main flow's first values counted events a void had taken back (the
window was still open when the void found no row to correct)."""


def window_keys(table: pa.Table) -> list[tuple[str, str, int, str]]:
    """(tenant_id, meter, window start in µs, group key) of every row of a window table.

    A null group key (a row from before catalogs) is the empty one.
    """
    group_keys = (
        table.column("group_key").to_pylist()
        if "group_key" in table.column_names
        else [None] * table.num_rows
    )
    return list(
        zip(
            table.column("tenant_id").cast(pa.string()).to_pylist(),
            table.column("meter").cast(pa.string()).to_pylist(),
            timestamp_to_micros(table.column("window_start")),
            [key or "" for key in group_keys],
            strict=True,
        )
    )


def window_values(table: pa.Table, prefix: str = "") -> list[WindowValue]:
    """The :class:`WindowValue` of every row of a table of window values.

    ``prefix`` selects the columns (``new_`` for audit rows' new values); absent columns (a
    table from before catalogs) read as a plain sum.
    """

    def column(name: str) -> list:
        if name in table.column_names:
            return table.column(name).to_pylist()
        return [None] * table.num_rows

    quantities = decimal_to_nanos(table.column(f"{prefix}quantity"))
    counts = table.column(f"{prefix}event_count").to_pylist()
    unvalued = column(f"{prefix}unvalued_count")
    if prefix:
        return [
            WindowValue(q, c, u or 0) for q, c, u in zip(quantities, counts, unvalued, strict=True)
        ]
    distinct = column("distinct_values")
    latest_times = (
        timestamp_to_micros(table.column("latest_time"))
        if "latest_time" in table.column_names
        else [None] * table.num_rows
    )
    latest_ids = column("latest_id")
    return [
        WindowValue(
            q,
            c,
            u or 0,
            tuple(d) if d is not None else None,
            (t, i) if t is not None else None,
        )
        for q, c, u, d, t, i in zip(
            quantities, counts, unvalued, distinct, latest_times, latest_ids, strict=True
        )
    ]


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
