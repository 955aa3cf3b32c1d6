"""Writing records to Kafka with an idempotent producer, and counting what was delivered.

Used by ``meterwax produce`` (the synthetic workload) and ``meterwax heartbeat``. Billing
input must not be duplicated by retries nor lost quietly, so the producer is idempotent
(``enable.idempotence``: retries cannot write a message twice or out of order) and waits for
every in-sync replica (``acks=all``); a message counts as delivered only when the broker
confirmed it, and every failure is counted by its error name.

Keyed records are partitioned with ``murmur2_random``, the Java client's default partitioner,
so a tenant's events land in the same partition whichever client produced them (librdkafka's
own default hashes keys differently).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from meterwax.errors import BrokerError
from meterwax.kafka.clients import Cluster

PRODUCER_SETTINGS = {
    "enable.idempotence": True,
    "acks": "all",
    "partitioner": "murmur2_random",
    # Batches of JSON compress 3-5x with lz4; brokers store and consumers fetch less, and
    # decompression runs on librdkafka's threads, not the Bytewax worker's.
    "compression.type": "lz4",
    "linger.ms": 20,
}
_POLL_S = 0.1
_ANY_PARTITION = -1
"""librdkafka's RD_KAFKA_PARTITION_UA: let the partitioner choose."""


@dataclass(frozen=True, slots=True)
class Record:
    """One message to write: key, value (None: a tombstone), and optionally its partition."""

    key: bytes | None
    value: bytes | None
    partition: int | None = None


@dataclass
class DeliveryReport:
    """What became of the records handed to the producer."""

    sent: int = 0
    delivered: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    """Records the broker or the client refused, by error name."""

    @property
    def undelivered(self) -> int:
        """Records not confirmed by the broker: failed, or still unconfirmed at the end."""
        return self.sent - self.delivered

    def describe_failures(self) -> str:
        """``"MSG_TIMED_OUT ×3, MSG_SIZE_TOO_LARGE ×1"`` (empty when nothing failed)."""
        return ", ".join(f"{name} ×{count}" for name, count in sorted(self.failed.items()))


class RecordWriter:
    """An idempotent producer for one topic that counts deliveries; use as a context manager.

    ``rate`` limits records per second (None: as fast as the producer takes them).
    ``on_progress(sent, report)`` is called often; it must be cheap.
    """

    def __init__(
        self,
        cluster: Cluster,
        topic: str,
        *,
        rate: float | None = None,
        on_progress: Callable[[DeliveryReport], None] | None = None,
    ) -> None:
        self.topic = topic
        self.report = DeliveryReport()
        self._rate = rate
        self._on_progress = on_progress
        self._fatal: KafkaError | None = None
        self._producer: Producer = cluster.client(
            Producer, **PRODUCER_SETTINGS, error_cb=self._on_client_error
        )
        self._started = time.monotonic()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.flush()

    def _on_client_error(self, error: KafkaError) -> None:
        # Disconnections also arrive here and librdkafka retries them within
        # message.timeout.ms; only a fatal error (e.g. a broken idempotence sequence)
        # means nothing more can be delivered.
        if error.fatal():
            self._fatal = error

    def _on_delivery(self, error: KafkaError | None, _message: Message) -> None:
        if error is None:
            self.report.delivered += 1
        else:
            self.report.failed[error.name()] += 1

    def write_all(self, records: Iterable[Record]) -> DeliveryReport:
        """Write every record (pacing to ``rate``), then wait until each one is confirmed."""
        for record in records:
            self.write(record)
        self.flush()
        return self.report

    def write(self, record: Record) -> None:
        """Hand one record to the producer; a record the client refuses counts as failed."""
        self._check_fatal()
        if self._rate is not None:
            self._pace()
        self.report.sent += 1
        while True:
            try:
                self._producer.produce(
                    self.topic,
                    record.value,
                    record.key,
                    partition=_ANY_PARTITION if record.partition is None else record.partition,
                    on_delivery=self._on_delivery,
                )
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                self._producer.poll(_POLL_S)
            except KafkaException as error:
                self.report.failed[error.args[0].name()] += 1
                break
        self._producer.poll(0)
        if self._on_progress is not None:
            self._on_progress(self.report)

    def _pace(self) -> None:
        assert self._rate is not None
        due = self._started + self.report.sent / self._rate
        while (wait := due - time.monotonic()) > 0:
            self._producer.poll(min(wait, _POLL_S))  # serves deliveries while waiting

    def flush(self) -> DeliveryReport:
        """Wait until every record handed over is confirmed or failed (message.timeout.ms)."""
        while len(self._producer) > 0:
            self._producer.flush(_POLL_S * 10)
            self._check_fatal()
            if self._on_progress is not None:
                self._on_progress(self.report)
        return self.report

    def _check_fatal(self) -> None:
        if self._fatal is not None:
            msg = (
                f"the producer for topic {self.topic!r} failed: {self._fatal.str()} "
                f"({self.report.delivered:,} of {self.report.sent:,} records delivered)"
            )
            raise BrokerError(msg)
