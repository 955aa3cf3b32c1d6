"""Plain data passed between sources, the partition processor and the sinks.

A source emits one :class:`SourceBatch` per read: consecutive messages of one source partition,
in offset order. The processor answers each batch with one :class:`PartitionOutput`: the rows
for every table that this stretch of the partition produced, tagged with source coordinates so
the sinks can write them idempotently. Rows are named tuples: one is built per event, and
tuples are built several times faster than frozen dataclasses.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

from meterwax.operators.decode import Event


@dataclass(frozen=True, slots=True)
class SourcePartition:
    """Identifies one ordered input log: a Kafka topic partition, or a file (partition 0)."""

    source: str
    """``kafka:<topic>`` or ``file:<name>``; stable across runs, it names txn app ids."""
    partition: int

    @property
    def key(self) -> str:
        """The Bytewax routing key for this partition (also the sink partition name)."""
        return f"{self.source}#{self.partition}"

    @classmethod
    def from_key(cls, key: str) -> SourcePartition:
        """Inverse of :attr:`key`."""
        source, _, partition = key.rpartition("#")
        return cls(source, int(partition))


DEFAULT_BATCH_SIZE = 2_500
"""Messages per source read unless the run says otherwise (``--batch-size``).

Throughput is the same from 1,000 to 10,000 (B1, one process: 50–57k events/s either way), but
every message of a read is held three times while it is processed (raw, decoded, as a row):
10,000-message reads of four partitions peaked 80 MiB higher than 2,500-message ones."""


@dataclass(frozen=True, slots=True)
class SourceBatch:
    """Consecutive messages from one source partition, in offset order."""

    where: SourcePartition
    offsets: list[int]
    payloads: list[bytes | None]
    keys: list[bytes | None] | None = None
    """Kafka message keys (None for file input)."""
    timestamps_ms: list[int | None] | None = None
    """Kafka message timestamps in ms (None for file input)."""
    content: tuple[int, int] | None = None
    """File input: (bytes read through this batch's last line, a 63-bit digest of those
    bytes). The lake records it, so a later run can tell a grown file from a changed one."""

    def __len__(self) -> int:
        return len(self.offsets)


class LedgerRow(NamedTuple):
    """An event counted in the ledger, with the input position it came from."""

    event: Event
    offset: int


class LateRow(NamedTuple):
    """An event whose window had already closed: it goes to the correction flow."""

    event: Event
    offset: int
    watermark_us: int
    """The partition's watermark when the event arrived (explains why it was late)."""
    window_start_us: int
    """The start of the (closed) window the event belongs to."""


class QuarantineRow(NamedTuple):
    """A message that was not counted, with its raw bytes and why."""

    offset: int
    reason: str
    detail: str
    raw: bytes | None
    key: bytes | None = None
    kafka_timestamp_ms: int | None = None
    tenant_id: str | None = None
    """Set when the message was a valid event that a rule rejected (duplicate with other
    content, too late, in the future, overflowing its window), so it can be joined with the
    ledger; None for messages that do not decode."""
    event_id: str | None = None


class WindowRow(NamedTuple):
    """The final on-time value of one (tenant, meter, window, group) when it closed.

    Without a catalog, the meter is the event meter, the value a sum and there is no group.
    """

    tenant_id: str
    meter: str
    window_start_us: int
    window_end_us: int
    quantity_nanos: int | None
    event_count: int
    position: int
    """Where in the input the window closed: ``2 × offset`` of the message whose event time
    closed it, or ``2 × last offset + 1`` when end of input flushed it. Strictly after every
    message before it and before every message after it, so it can order idempotent writes."""
    group_key: str = ""
    unvalued_count: int = 0
    aggregation: str = "sum"
    distinct: tuple[str, ...] | None = None
    latest: tuple[int, str] | None = None
    event_meter: str | None = None
    """The event meter whose events the meter takes (None: the meter itself, no catalog)."""


class RecomputeRow(NamedTuple):
    """A window slice whose first values cannot be formed on the fly.

    The catalog changed while it was open: the correction flow recomputes it from the ledger.
    """

    tenant_id: str
    event_meter: str
    window_start_us: int
    window_end_us: int
    position: int


def closed_at(offset: int) -> int:
    """The position of a window closed by the message at ``offset``."""
    return 2 * offset


def flushed_after(last_offset: int) -> int:
    """The position of a window flushed at end of input after ``last_offset``."""
    return 2 * last_offset + 1


@dataclass(slots=True)
class PartitionOutput:
    """Everything one source batch produced, for every table, plus counters."""

    where: SourcePartition
    ledger: list[LedgerRow] = field(default_factory=list)
    windows: list[WindowRow] = field(default_factory=list)
    late: list[LateRow] = field(default_factory=list)
    quarantine: list[QuarantineRow] = field(default_factory=list)
    recompute: list[RecomputeRow] = field(default_factory=list)
    counters: Counter[str] = field(default_factory=Counter)
    through_offset: int = -1
    """The highest input offset this output covers (-1: none)."""
    watermark_us: int | None = None
    """The partition watermark after this batch (None before any event time was seen)."""
    dedupe_keys: int = 0
    """Keys held by the partition's dedupe index after this batch."""
    dedupe_bytes: int = 0
    """Approximate bytes held by the partition's dedupe index after this batch."""
    content: tuple[int, int] | None = None
    """The batch's :attr:`SourceBatch.content`, passed through to the sink."""

    def is_empty(self) -> bool:
        """True if there is nothing to write."""
        return not (self.ledger or self.windows or self.late or self.quarantine or self.recompute)
