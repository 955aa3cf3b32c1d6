"""The Delta tables of a meterwax lake: names, Arrow schemas, partitioning, properties.

Table and column names listed in docs/contracts.md are a contract for notebooks and other tools;
columns may be added, never renamed. Quantities are ``decimal(38, 9)``; times are UTC
microsecond timestamps; time-based tables are partitioned by date.

Source coordinates use one vocabulary everywhere: ``origin`` names the ordered input log
(``kafka:<topic>`` or ``file:<name>@<fingerprint>``), ``origin_partition`` and
``origin_offset`` locate the message in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

QUANTITY = pa.decimal128(38, 9)
TIMESTAMP = pa.timestamp("us", tz="UTC")
DIMENSIONS = pa.map_(pa.string(), pa.string())


@dataclass(frozen=True)
class TableSpec:
    """One Delta table of the lake."""

    name: str
    schema: pa.Schema
    partition_by: tuple[str, ...] = ()
    properties: dict[str, str] = field(default_factory=dict)
    purpose: str = ""


CHANNEL_PROPERTIES = {"delta.appendOnly": "true", "delta.enableChangeDataFeed": "true"}
"""Tables the correction flow reads incrementally, through their change data feed (a compaction
rewrites files with ``dataChange=false`` and so adds nothing to the feed)."""


def _field(name: str, kind: pa.DataType, *, nullable: bool = False) -> pa.Field:
    return pa.field(name, kind, nullable=nullable)


_EVENT_FIELDS = [
    _field("tenant_id", pa.string()),
    _field("id", pa.string()),
    _field("meter", pa.string()),
    _field("quantity", QUANTITY),
    _field("event_time", TIMESTAMP),
    _field("event_date", pa.date32()),
    _field("dimensions", DIMENSIONS, nullable=True),
    _field("source", pa.string(), nullable=True),
]
_WINDOW_KEY_FIELDS = [
    _field("tenant_id", pa.string()),
    _field("meter", pa.string()),
    _field("window_start", TIMESTAMP),
    _field("window_end", TIMESTAMP),
    _field("window_date", pa.date32()),
]
"""A window's key (tenant_id, meter, window_start), its end, and the date it is partitioned by."""
_ORIGIN_FIELDS = [
    _field("origin", pa.string()),
    _field("origin_partition", pa.int32()),
    _field("origin_offset", pa.int64()),
]

EVENTS = TableSpec(
    name="events",
    schema=pa.schema(
        [*_EVENT_FIELDS, *_ORIGIN_FIELDS, _field("counted_by", pa.string())],
    ),
    partition_by=("event_date",),
    properties={"delta.appendOnly": "true"},
    purpose="the ledger: every counted event exactly once, key (tenant_id, id)",
)

USAGE_WINDOWS = TableSpec(
    name="usage_windows",
    schema=pa.schema(
        [
            *_WINDOW_KEY_FIELDS,
            _field("quantity", QUANTITY),
            _field("event_count", pa.int64()),
            _field("revision", pa.int64()),
            _field("updated_at", TIMESTAMP),
        ]
    ),
    partition_by=("window_date",),
    purpose="per-window totals, key (tenant_id, meter, window_start); revision 0 = first write",
)

LATE_EVENTS = TableSpec(
    name="late_events",
    schema=pa.schema(
        [
            *_EVENT_FIELDS,
            *_ORIGIN_FIELDS,
            _field("window_start", TIMESTAMP),
            _field("watermark", TIMESTAMP),
        ]
    ),
    properties=CHANNEL_PROPERTIES,
    purpose="events whose window had closed: the channel to the correction flow",
)

QUARANTINE = TableSpec(
    name="quarantine",
    schema=pa.schema(
        [
            *_ORIGIN_FIELDS,
            _field("line_number", pa.int64(), nullable=True),
            _field("kafka_timestamp", TIMESTAMP, nullable=True),
            _field("kafka_key", pa.binary(), nullable=True),
            _field("raw", pa.binary(), nullable=True),
            _field("reason", pa.string()),
            _field("detail", pa.string()),
            _field("flow", pa.string()),
            _field("tenant_id", pa.string(), nullable=True),
            _field("event_id", pa.string(), nullable=True),
        ]
    ),
    properties={"delta.appendOnly": "true"},
    purpose="rejected input with its reason, detail, raw bytes and source coordinates",
)

WINDOW_CONFLICTS = TableSpec(
    name="window_conflicts",
    schema=pa.schema(
        [
            *_WINDOW_KEY_FIELDS,
            _field("partial_quantity", QUANTITY),
            _field("partial_event_count", pa.int64()),
            _field("origin", pa.string()),
            _field("origin_partition", pa.int32()),
            _field("origin_position", pa.int64()),
        ]
    ),
    properties=CHANNEL_PROPERTIES,
    purpose="windows that got on-time events from two source partitions: recomputed by corrections",
)

USAGE_CORRECTIONS = TableSpec(
    name="usage_corrections",
    schema=pa.schema(
        [
            *_WINDOW_KEY_FIELDS,
            _field("revision", pa.int64()),
            _field("previous_quantity", QUANTITY, nullable=True),
            _field("previous_event_count", pa.int64(), nullable=True),
            _field("new_quantity", QUANTITY),
            _field("new_event_count", pa.int64()),
            _field("delta_quantity", QUANTITY),
            _field("delta_event_count", pa.int64()),
            _field("late_event_ids", pa.list_(pa.string())),
            _field("reason", pa.string()),
            _field("corrected_at", TIMESTAMP),
        ]
    ),
    properties={"delta.appendOnly": "true"},
    purpose="audit trail: one row per change to a window after its first write",
)

VOIDED_EVENTS = TableSpec(
    name="voided_events",
    schema=pa.schema(
        [
            _field("tenant_id", pa.string()),
            _field("id", pa.string()),
            _field("meter", pa.string()),
            _field("quantity", QUANTITY),
            _field("event_time", TIMESTAMP),
            *_ORIGIN_FIELDS,
            _field("void_id", pa.string()),
            _field("reason", pa.string()),
            _field("voided_at", TIMESTAMP),
        ]
    ),
    properties=CHANNEL_PROPERTIES,
    purpose="ledger rows that no longer count, by their source coordinates, and why: the "
    "ledger itself is never rewritten",
)

ALL_TABLES = (
    EVENTS,
    USAGE_WINDOWS,
    LATE_EVENTS,
    QUARANTINE,
    WINDOW_CONFLICTS,
    USAGE_CORRECTIONS,
    VOIDED_EVENTS,
)
