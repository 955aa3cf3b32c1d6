"""One Kafka topic as a Bytewax source: each Kafka partition is one ordered source partition.

Each read returns at most one :class:`SourceBatch` of up to ``batch_size`` messages of one
partition, in offset order, with their Kafka keys and timestamps, so the partition processor
sees exactly what the file source gives it plus the Kafka coordinates.

Offsets are tracked by meterwax, never by a consumer group: each partition's consumer is
``assign()``-ed to its partition at the resume offset (Bytewax recovery state: the next
offset to read) or at the beginning of the partition, and commits nothing. Without recovery
every run therefore starts at the beginning, and the sinks skip what the Delta log says is
already committed. An offset that is no longer in the log (deleted by retention) fails the
run instead of silently jumping to the end. Each partition has a consumer of its own, so
librdkafka fetches and decompresses partitions in parallel: on the 2-core development machine
four consumers read a 4-partition topic about twice as fast as one consumer assigned all four.

With ``stop_at_end`` each partition's end offset is read once, when the partition is built,
and the partition ends when it has read up to there: the run covers exactly the messages that
were in the topic when it started, whatever is produced meanwhile. The consumer reads only
committed transactions (librdkafka's default), so that end is the last stable offset: a
transaction still open when the run starts belongs to the next run. Without ``stop_at_end``
the source tails the topic forever.

Errors: end-of-partition events are expected; an error librdkafka marks retriable is logged
and the read goes on (librdkafka retries it); any other consumer error, and any fatal client
error, fails the run with a message naming the topic and partition. Broker disconnections are
not errors here: librdkafka reconnects by itself and the source simply waits.

Delivery: with Bytewax recovery, resumes at the snapshotted offset; without it, starts at the
beginning of every partition. Either way nothing is skipped, and the sinks make rewrites
idempotent.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from datetime import UTC, datetime, timedelta

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    Message,
    TopicPartition,
)

from meterwax.errors import BrokerError
from meterwax.kafka.clients import Cluster, read_watermarks
from meterwax.operators.records import DEFAULT_BATCH_SIZE, SourceBatch, SourcePartition

log = logging.getLogger(__name__)

CONSUME_TIMEOUT_S = 0.001
"""How long one read may wait for messages. Bytewax runs every partition of a worker on one
thread, so a read must never block it: when nothing is ready the partition sleeps through
``next_awake`` instead."""
IDLE_WAIT = timedelta(milliseconds=50)
"""How long an idle partition sleeps before it looks again (the tail latency it adds)."""
PREFETCH_DEFAULTS: dict[str, int] = {
    "queued.max.messages.kbytes": 4096,
    "queued.min.messages": 10_000,
}
"""How much librdkafka reads ahead, per partition consumer, unless ``--kafka-config`` says
otherwise. Its defaults (64 MiB and 100,000 messages queued per consumer) made read-ahead the
largest part of a run's memory: about 200 MiB more with four partitions, for no gain, since
the processor, not the broker, is the bottleneck. 4 MiB per partition is more than a second
of B1 per partition; on B1 the run was no slower. A fetch is already bounded by
``fetch.message.max.bytes`` (1 MiB), each consumer reading one partition; setting
``fetch.max.bytes`` too would clash with a user's ``message.max.bytes`` or
``receive.message.max.bytes`` (librdkafka ties the three together)."""
GROUP_ID = "meterwax-unused"
"""librdkafka needs a group id even for assign(); meterwax never joins or commits to it."""


def kafka_origin(topic: str) -> str:
    """The origin name of a topic: it names the Delta txn app ids of its partitions."""
    return f"kafka:{topic}"


def overridable_settings(cluster: Cluster, topic: str, partition: int) -> dict[str, object]:
    """The consumer settings of meterwax that ``--kafka-config`` may replace.

    The group and client ids (ACLs can require given ones) and the read-ahead bounds.
    """
    defaults: dict[str, object] = {
        "group.id": GROUP_ID,
        "client.id": f"meterwax-{topic}-{partition}",
        **PREFETCH_DEFAULTS,
    }
    return {key: value for key, value in defaults.items() if key not in cluster.extra}


class KafkaSource(FixedPartitionedSource[SourceBatch, int]):
    """Reads one topic, ``batch_size`` messages at a time, one Bytewax partition per Kafka one.

    :arg cluster: the brokers and any extra librdkafka settings (security…).
    :arg topic: the topic; its partitions are listed when the source is built.
    :arg stop_at_end: end each partition at the high watermark it had when it was built.

    Raises BrokerError when the topic does not exist or the brokers do not answer.
    """

    def __init__(
        self,
        cluster: Cluster,
        topic: str,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        stop_at_end: bool = False,
    ) -> None:
        self.cluster = cluster
        self.topic = topic
        self.partitions = [
            SourcePartition(kafka_origin(topic), number)
            for number in cluster.require_partitions(topic)
        ]
        self._batch_size = batch_size
        self._stop_at_end = stop_at_end

    def list_parts(self) -> list[str]:
        """One partition per Kafka partition; every worker can read every partition."""
        return [where.key for where in self.partitions]

    def backlog(self, positions: dict[str, object]) -> int:
        """Messages left from ``positions`` (a recovery store's, or the log start) to the end.

        The end is the high watermark now: what a ``--stop-at-end`` run will read. For
        progress display.
        """
        total = 0
        for where, (low, high) in zip(
            self.partitions,
            self.cluster.watermarks(self.topic, [w.partition for w in self.partitions]),
            strict=True,
        ):
            resumed = positions.get(where.key)
            total += max(0, high - max(low, resumed if isinstance(resumed, int) else low))
        return total

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _KafkaPartition:
        """Assign a consumer to one partition at its resume offset (or the beginning)."""
        where = SourcePartition.from_key(for_part)
        start = OFFSET_BEGINNING if resume_state is None else resume_state
        return _KafkaPartition(
            self.cluster, self.topic, where, start, self._batch_size, self._stop_at_end
        )


class _KafkaPartition(StatefulSourcePartition[SourceBatch, int]):
    def __init__(
        self,
        cluster: Cluster,
        topic: str,
        where: SourcePartition,
        start: int,
        batch_size: int,
        stop_at_end: bool,
    ) -> None:
        self._topic = topic
        self._where = where
        self._name = f"topic {topic!r} partition {where.partition}"
        self._batch_size = batch_size
        self._next_offset = start
        """The next offset to read; OFFSET_BEGINNING until the first message arrives."""
        self._fatal: KafkaError | None = None
        self._awake: datetime | None = None
        self._consumer: Consumer = cluster.client(
            Consumer,
            **overridable_settings(cluster, topic, where.partition),
            **{
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "error",
                "error_cb": self._on_client_error,
            },
        )
        self._end: int | None = None
        if stop_at_end:
            low, high = read_watermarks(self._consumer, topic, where.partition)
            self._end = high
            if self._next_offset == OFFSET_BEGINNING and low >= high:
                self._next_offset = high  # empty (or fully expired): nothing to read
        self._consumer.assign([TopicPartition(topic, where.partition, self._next_offset)])

    def _on_client_error(self, error: KafkaError) -> None:
        # Called from inside consume(). Disconnections arrive here too, and librdkafka
        # recovers from them by itself (it has already logged them): only a fatal error
        # means this consumer can no longer work.
        if error.fatal():
            self._fatal = error
        else:
            log.debug("%s: %s", self._name, error.str())

    def _at_end(self) -> bool:
        return self._end is not None and self._next_offset >= 0 and self._next_offset >= self._end

    def next_batch(self) -> list[SourceBatch]:
        if self._at_end():
            raise StopIteration
        messages: list[Message] = self._consumer.consume(self._batch_size, CONSUME_TIMEOUT_S)
        if self._fatal is not None:
            msg = f"Kafka client failed reading {self._name}: {self._fatal.str()}"
            raise BrokerError(msg)
        if not any(message.error() for message in messages):
            return self._plain_batch(messages)
        offsets: list[int] = []
        payloads: list[bytes | None] = []
        keys: list[bytes | None] = []
        timestamps: list[int | None] = []
        end_seen = False
        for message in messages:
            error = message.error()
            if error is not None:
                end_seen |= self._on_message_error(error, message)
                continue
            offset = message.offset()
            if self._end is not None and offset >= self._end:
                end_seen = True  # produced after the run started: the next run reads it
                break
            kind, timestamp_ms = message.timestamp()
            offsets.append(offset)
            payloads.append(message.value())
            keys.append(message.key())
            timestamps.append(None if kind == TIMESTAMP_NOT_AVAILABLE else timestamp_ms)
        if offsets:
            self._next_offset = offsets[-1] + 1
        if end_seen and self._end is not None:
            # The log reached the run's end (an end-of-partition event at or past it, or a
            # message beyond it). Offsets may have gaps (transaction markers, compaction), so
            # no message need have offset end - 1.
            self._next_offset = max(self._next_offset, self._end)
        # Idle: sleep instead of spinning; busy: come back at once.
        self._awake = None if messages else datetime.now(UTC) + IDLE_WAIT
        if not offsets:
            return []
        return [SourceBatch(self._where, offsets, payloads, keys, timestamps)]

    def _plain_batch(self, messages: list[Message]) -> list[SourceBatch]:
        """The common case, messages and no error events, one comprehension per column."""
        self._awake = None if messages else datetime.now(UTC) + IDLE_WAIT
        offsets = [message.offset() for message in messages]
        if self._end is not None and offsets and offsets[-1] >= self._end:
            # Produced after the run started: the next run reads it.
            messages = messages[: bisect_left(offsets, self._end)]
            offsets = offsets[: len(messages)]
            self._next_offset = max(self._next_offset, self._end)
        if not offsets:
            return []
        self._next_offset = max(self._next_offset, offsets[-1] + 1)
        stamps = [message.timestamp() for message in messages]
        return [
            SourceBatch(
                self._where,
                offsets,
                [message.value() for message in messages],
                [message.key() for message in messages],
                [None if kind == TIMESTAMP_NOT_AVAILABLE else ms for kind, ms in stamps],
            )
        ]

    def _on_message_error(self, error: KafkaError, message: Message) -> bool:
        """Handle an error event; True if it says the end of the log is at or past the end."""
        if error.code() == KafkaError._PARTITION_EOF:
            return self._end is not None and message.offset() >= self._end
        if error.retriable() and not error.fatal():
            log.warning("%s: retrying after %s", self._name, error.str())
            return False
        msg = (
            f"cannot read {self._name} at offset {self._describe_offset()}: {error.str()} "
            f"({error.name()})"
        )
        if error.code() == KafkaError._AUTO_OFFSET_RESET:
            msg += "; that offset is not in the log (deleted by retention?)"
        raise BrokerError(msg)

    def _describe_offset(self) -> str:
        return "the beginning" if self._next_offset < 0 else str(self._next_offset)

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> int:
        return self._next_offset

    def close(self) -> None:
        self._consumer.close()
