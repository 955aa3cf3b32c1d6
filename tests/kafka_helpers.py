"""Helpers for the Kafka tests: produce to a topic and read it back."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from meterwax.kafka.clients import Cluster
from meterwax.kafka.producer import Record, RecordWriter
from meterwax.synthetic.generator import Generated

T = TypeVar("T")


@dataclass(frozen=True)
class Stored:
    """A message as the broker stored it."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


def _end_offset(consumer: Consumer, topic: str, partition: int) -> int:
    """A partition's end offset, asked again while the broker answers a retriable error.

    A topic just created may still be electing its leaders (``NOT_LEADER_FOR_PARTITION``).
    """
    deadline = time.monotonic() + 30
    while True:
        try:
            return consumer.get_watermark_offsets(TopicPartition(topic, partition), 10)[1]
        except KafkaException as error:
            if not error.args[0].retriable() or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def read_topic(bootstrap: str, topic: str) -> list[Stored]:
    """Every message of every partition, read back with a plain consumer."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "meterwax-tests",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        ends = {p: _end_offset(consumer, topic, p) for p in partitions}
        remaining = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in remaining])
        stored: list[Stored] = []
        deadline = time.monotonic() + 60
        while remaining:
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for message in consumer.consume(1000, 0.5):
                error = message.error()
                if error is not None:
                    assert error.code() == KafkaError._PARTITION_EOF, error.str()
                    if message.offset() >= ends[message.partition()]:
                        remaining.discard(message.partition())
                    continue
                stored.append(
                    Stored(
                        message.partition(),
                        message.offset(),
                        message.timestamp()[1],
                        message.key(),
                        message.value(),
                    )
                )
        return stored
    finally:
        consumer.close()


def produce(cluster: Cluster, topic: str, records: Iterable[Record]) -> None:
    """Write records with meterwax's producer and check every one was delivered."""
    report = RecordWriter(cluster, topic).write_all(records)
    assert report.undelivered == 0, report.describe_failures()


def produce_generated(cluster: Cluster, topic: str, messages: Iterable[Generated]) -> None:
    """Write generator messages keyed by tenant, as `meterwax produce` does."""
    produce(cluster, topic, (Record(m.key, m.payload) for m in messages))
