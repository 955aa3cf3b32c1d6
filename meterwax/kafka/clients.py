"""confluent-kafka clients built the one way meterwax needs them, and questions about a topic.

Every meterwax Kafka client (the source's consumers, the producers of ``produce`` and
``heartbeat``, the admin client of ``topics``) starts from :meth:`Cluster.config`: the
brokers, the user's extra librdkafka settings (security and the like), and a logger that
routes librdkafka's log lines through Python logging with repeats throttled, because a broker
that is down otherwise prints a line every 50 ms for as long as it is down.

Settings that decide meterwax's guarantees (offset handling, acknowledgements, idempotence,
partitioning) belong to the code that needs them and cannot be overridden by the extra
settings: see :data:`RESERVED`.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from meterwax.errors import BrokerError, ConfigError

METADATA_TIMEOUT_S = 15.0
"""How long to wait for the brokers to answer a metadata request before giving up."""

RESERVED = {
    "bootstrap.servers": "use --brokers",
    "enable.auto.commit": "offsets live in the Delta log and Bytewax recovery, not in a group",
    "enable.auto.offset.store": "offsets live in the Delta log and Bytewax recovery",
    "auto.offset.reset": "a missing offset must fail the run, never skip events",
    "enable.partition.eof": "the source relies on end-of-partition events",
    "enable.idempotence": "producers must not write duplicates when they retry",
    "acks": "producers must wait for every in-sync replica",
    "partitioner": "a tenant's events must land in the partition a Java client would choose",
    "logger": "librdkafka logs go through Python logging",
    "isolation.level": "only committed messages are events: a transaction a producer aborted "
    "must never count (librdkafka's default, read_committed)",
}
"""librdkafka settings the extra settings may not change, and why."""

_THROTTLE_S = 10.0


class _Throttle(logging.Filter):
    """Let the same librdkafka log line (numbers ignored) through at most once per interval."""

    def __init__(self, interval_s: float) -> None:
        super().__init__()
        self._interval_s = interval_s
        self._last: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        key = re.sub(r"\d+", "#", message)
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._last.get(key, (float("-inf"), 0))
            if now - last < self._interval_s:
                self._last[key] = (last, suppressed + 1)
                return False
            self._last[key] = (now, 0)
        if suppressed:
            record.msg, record.args = f"{message} (repeated {suppressed}× since)", None
        return True


def librdkafka_logger() -> logging.Logger:
    """The logger every meterwax Kafka client logs through (throttled, see module docstring)."""
    logger = logging.getLogger("meterwax.librdkafka")
    if not any(isinstance(f, _Throttle) for f in logger.filters):
        logger.addFilter(_Throttle(_THROTTLE_S))
    return logger


@dataclass(frozen=True)
class Cluster:
    """A Kafka cluster as meterwax talks to it: a bootstrap list plus extra client settings."""

    brokers: str
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in self.extra:
            if key in RESERVED:
                msg = f"--kafka-config {key}=…: meterwax sets {key} itself ({RESERVED[key]})"
                raise ConfigError(msg)

    def config(self, **meterwax: Any) -> dict[str, Any]:
        """A librdkafka configuration: brokers, the extra settings, then meterwax's own."""
        return {
            "bootstrap.servers": self.brokers,
            **self.extra,
            "logger": librdkafka_logger(),
            **meterwax,
        }

    def client(self, factory: Any, **meterwax: Any) -> Any:
        """Build a confluent-kafka client; a setting librdkafka rejects becomes a ConfigError."""
        try:
            return factory(self.config(**meterwax))
        except KafkaException as error:
            msg = f"Kafka client settings rejected: {error.args[0].str()}"
            raise ConfigError(msg) from None

    @cached_property
    def admin(self) -> AdminClient:
        """An admin client for metadata and topic management (built once)."""
        return self.client(AdminClient)

    def partitions(self, topic: str, *, timeout_s: float = METADATA_TIMEOUT_S) -> list[int] | None:
        """The partition numbers of ``topic`` in order, or None if the topic does not exist.

        Raises BrokerError when the brokers do not answer or report another error for it.
        """
        try:
            metadata = self.admin.list_topics(topic, timeout=timeout_s)
        except KafkaException as error:
            msg = (
                f"cannot read metadata of topic {topic!r} from {self.brokers} "
                f"within {timeout_s:.0f}s: {error.args[0].str()}"
            )
            raise BrokerError(msg) from None
        found = metadata.topics.get(topic)
        if found is None:
            return None
        if found.error is not None:
            if found.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                return None
            msg = f"topic {topic!r} on {self.brokers}: {found.error.str()}"
            raise BrokerError(msg)
        return sorted(found.partitions)

    def topic_id(self, topic: str, *, timeout_s: float = METADATA_TIMEOUT_S) -> str | None:
        """The topic's id: Kafka gives a topic a new one when it is deleted and recreated.

        None if the broker does not say (brokers before Kafka 2.8).
        """
        try:
            futures = self.admin.describe_topics(
                TopicCollection([topic]), request_timeout=timeout_s
            )
            described = futures[topic].result()
        except KafkaException as error:
            msg = f"cannot describe topic {topic!r} on {self.brokers}: {error.args[0].str()}"
            raise BrokerError(msg) from None
        identity = getattr(described, "topic_id", None)
        return str(identity) if identity is not None else None

    def require_partitions(self, topic: str) -> list[int]:
        """Like :meth:`partitions`, but a missing topic is an error that says what to do."""
        partitions = self.partitions(topic)
        if partitions is None:
            msg = (
                f"topic {topic!r} does not exist on {self.brokers} (create it: meterwax topics "
                f"create --brokers {self.brokers} --topic {topic} --partitions N)"
            )
            raise BrokerError(msg)
        return partitions

    def watermarks(self, topic: str, partitions: list[int]) -> list[tuple[int, int]]:
        """The (low, high) offsets of each partition now, in the order given (own consumer)."""
        group = {} if "group.id" in self.extra else {"group.id": "meterwax-watermarks"}
        consumer = self.client(Consumer, **group, **{"enable.auto.commit": False})
        try:
            return [read_watermarks(consumer, topic, partition) for partition in partitions]
        finally:
            consumer.close()


def read_watermarks(consumer: Consumer, topic: str, partition: int) -> tuple[int, int]:
    """A partition's (low, high) offsets through ``consumer``.

    Raises BrokerError naming the topic and partition if the brokers do not answer in time.
    """
    try:
        offsets = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=METADATA_TIMEOUT_S
        )
    except KafkaException as error:
        offsets, reason = None, error.args[0].str()
    else:
        reason = f"no answer within {METADATA_TIMEOUT_S:.0f}s"
    if offsets is None:
        msg = f"cannot read the end offset of topic {topic!r} partition {partition}: {reason}"
        raise BrokerError(msg)
    return offsets
