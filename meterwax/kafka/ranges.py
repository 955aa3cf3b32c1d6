"""Offset ranges of a topic: resolved from offsets or times, then read back in order.

``meterwax replay`` re-reads such a range. Reading here is plain confluent-kafka with
``assign()``, never a consumer group, and it stops exactly at each range's end.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from confluent_kafka import Consumer, TopicPartition

from meterwax.errors import BrokerError, ConfigError
from meterwax.kafka.clients import read_watermarks

_POLL_S = 1.0
_READ_BATCH = 10_000


@dataclass(frozen=True)
class Message:
    """One Kafka record of the range."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None


def resolve_ranges(
    consumer: Consumer,
    topic: str,
    partitions: list[int],
    *,
    from_offsets: dict[int, int] | None,
    from_time: datetime | None,
    to_offsets: dict[int, int] | None,
    to_time: datetime | None,
) -> dict[int, tuple[int, int]]:
    """Per partition, the [start, end) offsets to replay (end defaults to the log end)."""
    ends = {p: read_watermarks(consumer, topic, p)[1] for p in partitions}
    if from_offsets is not None:
        unknown = sorted(set(from_offsets) - set(partitions))
        if unknown:
            msg = f"topic {topic!r} has no partition {', '.join(map(str, unknown))}"
            raise ConfigError(msg)
        starts = dict(from_offsets)
    else:
        starts = _offsets_at(consumer, topic, partitions, from_time, ends)
    if to_offsets is not None:
        stops = {p: min(to_offsets.get(p, ends[p]), ends[p]) for p in starts}
    elif to_time is not None:
        stops = _offsets_at(consumer, topic, list(starts), to_time, ends)
    else:
        stops = {p: ends[p] for p in starts}
    return {p: (starts[p], stops[p]) for p in sorted(starts) if stops[p] > starts[p]}


def _offsets_at(
    consumer: Consumer,
    topic: str,
    partitions: list[int],
    moment: datetime | None,
    ends: dict[int, int],
) -> dict[int, int]:
    if moment is None:
        msg = "a range starts at offsets or at a time"
        raise ValueError(msg)
    millis = int(moment.timestamp() * 1000)
    found = consumer.offsets_for_times(
        [TopicPartition(topic, p, millis) for p in partitions], timeout=10
    )
    return {tp.partition: tp.offset if tp.offset >= 0 else ends[tp.partition] for tp in found}


def read_range(
    consumer: Consumer, topic: str, ranges: dict[int, tuple[int, int]]
) -> Iterator[Message]:
    """Every record of the ranges, partition by partition, in offset order."""
    for partition, (start, stop) in ranges.items():
        consumer.assign([TopicPartition(topic, partition, start)])
        next_offset = start
        while next_offset < stop:
            records = consumer.consume(num_messages=_READ_BATCH, timeout=_POLL_S)
            for record in records:
                if record.error() is not None:
                    msg = f"reading {topic}[{partition}]: {record.error()}"
                    raise BrokerError(msg)
                if record.offset() >= stop:
                    next_offset = stop
                    break
                timestamp_type, timestamp = record.timestamp()
                yield Message(
                    partition,
                    record.offset(),
                    record.key(),
                    record.value(),
                    timestamp if timestamp_type != 0 else None,
                )
                next_offset = record.offset() + 1
        consumer.unassign()
