"""Creating the events topic with settings that keep every event replayable.

``ensure_topic`` is idempotent: a topic that exists with the requested partition count is
fine (its settings that matter are checked and any difference is reported); one with another
partition count is an error, because changing the partition count moves tenants to other
partitions (see README "Tables", window conflicts) and must be a deliberate operation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import ConfigResource, NewTopic

from meterwax.errors import BrokerError, ConfigError
from meterwax.kafka.clients import METADATA_TIMEOUT_S, Cluster

MICROS_PER_MS = 1000


def topic_settings(retention_ms: int, replication_factor: int) -> dict[str, str]:
    """The topic-level settings meterwax asks for, each with the reason it matters."""
    return {
        # Replays and the correction flow re-read the log: keep it at least as long as the
        # correction horizon (35 days by default) plus a margin to notice and fix a problem.
        "retention.ms": str(retention_ms),
        # No size limit: a size-based deletion would drop events nobody has read yet.
        "retention.bytes": "-1",
        # Delete old segments, never compact: the key is the tenant, and compaction would keep
        # only each tenant's last event.
        "cleanup.policy": "delete",
        # The producer's clock: the partition processor checks event times against it
        # (max future), and heartbeats carry the same clock.
        "message.timestamp.type": "CreateTime",
        # With acks=all, an acknowledged event survives a broker loss only if it was written
        # to at least two replicas; one replica is all a single-broker cluster has.
        "min.insync.replicas": str(min(2, replication_factor)),
        # An out-of-sync replica elected leader would silently drop acknowledged events.
        "unclean.leader.election.enable": "false",
    }


CHECKED = ("cleanup.policy", "retention.ms", "retention.bytes", "message.timestamp.type")
"""Settings of an existing topic that are compared with :func:`topic_settings`."""


@dataclass
class TopicOutcome:
    """What ``ensure_topic`` did."""

    created: bool
    partitions: int
    differences: list[str] = field(default_factory=list)
    """Settings of an existing topic that differ from meterwax's, as ``name=value (want …)``."""


def ensure_topic(
    cluster: Cluster,
    topic: str,
    *,
    partitions: int,
    replication_factor: int,
    retention_us: int,
) -> TopicOutcome:
    """Create ``topic`` unless it exists with ``partitions`` partitions.

    Raises ConfigError if it exists with another partition count, BrokerError if the broker
    refuses to create it (e.g. a replication factor above the number of brokers).
    """
    wanted = topic_settings(retention_us // MICROS_PER_MS, replication_factor)
    existing = cluster.partitions(topic)
    if existing is None:
        try:
            _create(cluster, topic, partitions, replication_factor, wanted)
            return TopicOutcome(created=True, partitions=partitions)
        except _AlreadyExistsError:
            existing = cluster.require_partitions(topic)  # created meanwhile by someone else
    if len(existing) != partitions:
        msg = (
            f"topic {topic!r} already exists with {len(existing)} partitions, not {partitions}; "
            "meterwax does not change partition counts (tenants would move to other partitions)"
        )
        raise ConfigError(msg)
    return TopicOutcome(False, len(existing), _differences(cluster, topic, wanted))


class _AlreadyExistsError(Exception):
    pass


def _create(
    cluster: Cluster, topic: str, partitions: int, replication_factor: int, config: dict[str, str]
) -> None:
    new = NewTopic(topic, partitions, replication_factor, config=config)
    future = cluster.admin.create_topics([new], operation_timeout=METADATA_TIMEOUT_S)[topic]
    try:
        future.result()
    except KafkaException as error:
        if error.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
            raise _AlreadyExistsError from None
        msg = f"cannot create topic {topic!r} on {cluster.brokers}: {error.args[0].str()}"
        raise BrokerError(msg) from None


def _differences(cluster: Cluster, topic: str, wanted: dict[str, str]) -> list[str]:
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    try:
        found = cluster.admin.describe_configs([resource])[resource].result()
    except KafkaException as error:
        msg = f"cannot read the settings of topic {topic!r}: {error.args[0].str()}"
        raise BrokerError(msg) from None
    return [
        f"{name}={found[name].value} (meterwax would use {wanted[name]})"
        for name in CHECKED
        if name in found and found[name].value != wanted[name]
    ]
