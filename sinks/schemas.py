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
GROUPS = pa.map_(pa.string(), pa.string())
"""A window's group: group column → value."""


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
    _field("quantity", QUANTITY, nullable=True),
    _field("event_time", TIMESTAMP),
    _field("event_date", pa.date32()),
    _field("dimensions", DIMENSIONS, nullable=True),
    _field("source", pa.string(), nullable=True),
    _field("data", DIMENSIONS, nullable=True),
]
"""``quantity`` is null only under a meter catalog, for an event without one; ``data`` holds a
CloudEvent's other data fields as text (what catalog meters may read)."""
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

_GROUP_FIELDS = [
    _field("group_key", pa.string(), nullable=True),
    _field("groups", GROUPS, nullable=True),
]
"""A meter window's group: its key (part of the window's key; empty or null: no group) and the
same as a map of group column → value (null for an event without that field)."""
_CATALOG_VALUE_FIELDS = [
    _field("aggregation", pa.string(), nullable=True),
    _field("unvalued_count", pa.int64(), nullable=True),
    _field("distinct_values", pa.list_(pa.string()), nullable=True),
    _field("latest_time", TIMESTAMP, nullable=True),
    _field("latest_id", pa.string(), nullable=True),
    _field("catalog_version", pa.int64(), nullable=True),
]
"""What a window of a catalog meter holds besides its quantity: its aggregation (null: sum,
the meaning of every row written without a catalog), events it took but could not value,
its distinct values (unique_count), the (time, id) of its latest event (latest), and the
catalog version it was computed under (null or 0: no catalog)."""

EVENTS = TableSpec(
    name="events",
    schema=pa.schema(
        [*_EVENT_FIELDS, *_ORIGIN_FIELDS, _field("counted_by", pa.string())],
    ),
    partition_by=("event_date",),
    properties=CHANNEL_PROPERTIES,
    purpose="the ledger: every counted event exactly once, key (tenant_id, id); its change "
    "feed shows the correction flow new rows to hold against void rules",
)

USAGE_WINDOWS = TableSpec(
    name="usage_windows",
    schema=pa.schema(
        [
            *_WINDOW_KEY_FIELDS,
            _field("quantity", QUANTITY, nullable=True),
            _field("event_count", pa.int64()),
            _field("revision", pa.int64()),
            _field("updated_at", TIMESTAMP),
            *_GROUP_FIELDS,
            *_CATALOG_VALUE_FIELDS,
        ]
    ),
    partition_by=("window_date",),
    purpose="per-window values, key (tenant_id, meter, window_start, group_key); revision 0 = "
    "first write",
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
            _field("partial_quantity", QUANTITY, nullable=True),
            _field("partial_event_count", pa.int64()),
            _field("origin", pa.string()),
            _field("origin_partition", pa.int32()),
            _field("origin_position", pa.int64()),
            *_GROUP_FIELDS,
            _field("event_meter", pa.string(), nullable=True),
            _field("reason", pa.string(), nullable=True),
        ]
    ),
    properties=CHANNEL_PROPERTIES,
    purpose="windows that got on-time events from two source partitions (reason null or "
    "second_writer), or were open when the meter catalog changed (catalog_change): recomputed "
    "by corrections",
)

USAGE_CORRECTIONS = TableSpec(
    name="usage_corrections",
    schema=pa.schema(
        [
            *_WINDOW_KEY_FIELDS,
            _field("revision", pa.int64()),
            _field("previous_quantity", QUANTITY, nullable=True),
            _field("previous_event_count", pa.int64(), nullable=True),
            _field("new_quantity", QUANTITY, nullable=True),
            _field("new_event_count", pa.int64()),
            _field("delta_quantity", QUANTITY, nullable=True),
            _field("delta_event_count", pa.int64()),
            _field("late_event_ids", pa.list_(pa.string())),
            _field("reason", pa.string()),
            _field("corrected_at", TIMESTAMP),
            *_GROUP_FIELDS,
            _field("aggregation", pa.string(), nullable=True),
            _field("previous_unvalued_count", pa.int64(), nullable=True),
            _field("new_unvalued_count", pa.int64(), nullable=True),
            _field("catalog_version_before", pa.int64(), nullable=True),
            _field("catalog_version_after", pa.int64(), nullable=True),
            _field("void_id", pa.string(), nullable=True),
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
            _field("quantity", QUANTITY, nullable=True),
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

METER_CATALOG = TableSpec(
    name="meter_catalog",
    schema=pa.schema(
        [
            _field("version", pa.int64()),
            _field("definition", pa.string()),
            _field("format", pa.string()),
            _field("applied_at", TIMESTAMP),
            _field("applied_by", pa.string(), nullable=True),
            _field("note", pa.string(), nullable=True),
        ]
    ),
    properties={"delta.appendOnly": "true"},
    purpose="every version of the meter catalog, as canonical JSON (version 0, no row: no catalog)",
)

VOID_RULES = TableSpec(
    name="void_rules",
    schema=pa.schema(
        [
            _field("void_id", pa.string()),
            _field("action", pa.string()),
            _field("tenant_id", pa.string()),
            _field("ids", pa.list_(pa.string()), nullable=True),
            _field("meter", pa.string(), nullable=True),
            _field("source", pa.string(), nullable=True),
            _field("time_from", TIMESTAMP, nullable=True),
            _field("time_to", TIMESTAMP, nullable=True),
            _field("reason", pa.string()),
            _field("requested_by", pa.string(), nullable=True),
            _field("requested_at", TIMESTAMP),
            _field("sequence", pa.int64(), nullable=True),
        ]
    ),
    properties=CHANNEL_PROPERTIES,
    purpose="voids: durable rules that take counted events back (action void), and their "
    "undoing (action undo), with who, when and why",
)

ALL_TABLES = (
    EVENTS,
    USAGE_WINDOWS,
    LATE_EVENTS,
    QUARANTINE,
    WINDOW_CONFLICTS,
    USAGE_CORRECTIONS,
    VOIDED_EVENTS,
    METER_CATALOG,
    VOID_RULES,
)
