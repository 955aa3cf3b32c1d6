"""The "floor": a plain confluent-kafka consumer reading a topic to its end and discarding it.

No Python consumer can meter a topic faster than it can merely read it, so this is the
reference the benchmark compares ``meterwax run --stop-at-end`` with. It reads the way the
Kafka source does (assign, no group, batches of ``batch_size``), but with one consumer for
every partition and nothing done per message beyond counting its bytes.

    python -m meterwax.bench.floor --brokers localhost:9092 --topic usage-events
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from meterwax.flows.kafka_clients import METADATA_TIMEOUT_S, Cluster


@dataclass(frozen=True)
class FloorResult:
    """What reading the topic took."""

    messages: int
    bytes: int
    seconds: float

    @property
    def messages_per_second(self) -> float:
        """Messages read per second."""
        return self.messages / self.seconds if self.seconds > 0 else 0.0


def consume_and_discard(
    cluster: Cluster, topic: str, *, batch_size: int = 10_000, poll_timeout_s: float = 0.1
) -> FloorResult:
    """Read every partition of ``topic`` from its beginning to the end it had at the start.

    The clock starts before the consumer connects, as it does for ``meterwax run``.
    """
    started = time.perf_counter()
    consumer = cluster.client(
        Consumer,
        **{
            "group.id": "meterwax-bench-floor",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "error",
        },
    )
    try:
        ends: dict[int, int] = {}
        for partition in cluster.require_partitions(topic):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=METADATA_TIMEOUT_S
            )
            if high > low:
                ends[partition] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        remaining = set(ends)
        messages = size = 0
        while remaining:
            for message in consumer.consume(batch_size, poll_timeout_s):
                partition, offset, error = message.partition(), message.offset(), message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        msg = f"reading {topic} partition {partition}: {error.str()}"
                        raise RuntimeError(msg)
                    if offset >= ends[partition]:
                        remaining.discard(partition)
                    continue
                if offset < ends[partition]:  # later messages arrived after the start
                    messages += 1
                    size += len(message.value() or b"")
                if offset + 1 >= ends[partition]:
                    remaining.discard(partition)
        return FloorResult(messages, size, time.perf_counter() - started)
    finally:
        consumer.close()


def main() -> None:
    """Print the floor of one topic as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", default="usage-events")
    parser.add_argument("--batch-size", type=int, default=10_000)
    args = parser.parse_args()
    result = consume_and_discard(Cluster(args.brokers), args.topic, batch_size=args.batch_size)
    print(json.dumps({**asdict(result), "messages_per_second": round(result.messages_per_second)}))


if __name__ == "__main__":
    main()
