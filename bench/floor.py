"""The "floor": plain confluent-kafka consumers reading a topic to its end and discarding it.

No Python consumer can meter a topic faster than it can merely read it, so this is the
reference the benchmark compares ``meterwax run --stop-at-end`` with. It reads the way the
Kafka source does (one consumer per partition, assign(), no group, batches of
``batch_size``), with nothing done per message beyond counting it and its bytes. One consumer
per partition matters: on the 2-core development machine a single consumer assigned all four
partitions of a 1M-message topic read about 165k messages/s, one per partition about 350k/s
(librdkafka fetches and decompresses each instance's partitions on that instance's threads).

    python -m meterwax.bench.floor --brokers localhost:9092 --topic usage-events
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from meterwax.kafka.clients import METADATA_TIMEOUT_S, Cluster

_CONSUME_TIMEOUT_S = 0.001


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


def consume_and_discard(cluster: Cluster, topic: str, *, batch_size: int = 10_000) -> FloorResult:
    """Read every partition of ``topic`` from its beginning to the end it had at the start.

    The clock starts before the consumers connect, as it does for ``meterwax run``.
    """
    started = time.perf_counter()
    readers: dict[int, tuple[Consumer, int]] = {}
    try:
        for partition in cluster.require_partitions(topic):
            consumer = cluster.client(
                Consumer,
                **{
                    "group.id": "meterwax-bench-floor",
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                    "auto.offset.reset": "error",
                },
            )
            low, end = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=METADATA_TIMEOUT_S
            )
            consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
            readers[partition] = (consumer, end)
            if end <= low:
                consumer.close()
                del readers[partition]
        messages = size = 0
        while readers:
            for partition, (consumer, end) in list(readers.items()):
                done = False
                for message in consumer.consume(batch_size, _CONSUME_TIMEOUT_S):
                    offset, error = message.offset(), message.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            msg = f"reading {topic} partition {partition}: {error.str()}"
                            raise RuntimeError(msg)
                        done |= offset >= end
                        continue
                    if offset < end:  # later messages arrived after the start
                        messages += 1
                        size += len(message.value() or b"")
                    done |= offset + 1 >= end
                if done:
                    consumer.close()
                    del readers[partition]
        return FloorResult(messages, size, time.perf_counter() - started)
    finally:
        for consumer, _ in readers.values():
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
