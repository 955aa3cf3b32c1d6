"""``meterwax topics create``, ``heartbeat`` and ``produce`` against the real broker, and the
benchmark floor consumer."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner
from confluent_kafka.admin import ConfigResource, NewTopic

from meterwax.bench.floor import consume_and_discard
from meterwax.cli.main import main
from meterwax.operators.decode import Heartbeat, decode
from meterwax.synthetic.generator import Workload, generate
from tests.kafka_helpers import produce_generated, read_topic
from tests.processes import start_meterwax, stop, wait_for

pytestmark = pytest.mark.kafka

DAY_MS = 86_400_000


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_topics_create_is_idempotent_and_refuses_another_partition_count(bootstrap, cluster):
    topic = f"t-topics-{uuid.uuid4().hex[:8]}"
    created = invoke(
        "topics", "create", "--brokers", bootstrap, "--topic", topic, "--partitions", "3"
    )
    assert created.exit_code == 0, created.output
    assert (
        f"created topic {topic}: 3 partitions, replication factor 1, retention 40d"
        in created.output
    )
    assert cluster.partitions(topic) == [0, 1, 2]
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    settings = cluster.admin.describe_configs([resource])[resource].result()
    assert settings["retention.ms"].value == str(40 * DAY_MS)
    assert settings["retention.bytes"].value == "-1"
    assert settings["cleanup.policy"].value == "delete"
    assert settings["message.timestamp.type"].value == "CreateTime"
    assert settings["unclean.leader.election.enable"].value == "false"

    again = invoke(
        "topics", "create", "--brokers", bootstrap, "--topic", topic, "--partitions", "3"
    )
    assert again.exit_code == 0, again.output
    assert f"topic {topic} already exists with 3 partitions: OK" in again.output

    other = invoke(
        "topics", "create", "--brokers", bootstrap, "--topic", topic, "--partitions", "4"
    )
    assert other.exit_code == 2
    assert f"topic '{topic}' already exists with 3 partitions, not 4" in other.output
    assert cluster.partitions(topic) == [0, 1, 2]


def test_topics_create_warns_about_an_existing_topic_with_risky_settings(bootstrap, cluster):
    topic = f"t-compacted-{uuid.uuid4().hex[:8]}"
    futures = cluster.admin.create_topics(
        [NewTopic(topic, 2, 1, config={"cleanup.policy": "compact"})]
    )
    futures[topic].result(30)
    result = invoke(
        "topics", "create", "--brokers", bootstrap, "--topic", topic, "--partitions", "2"
    )
    assert result.exit_code == 0, result.output
    assert "cleanup.policy=compact (meterwax would use delete)" in result.output


def test_topics_create_reports_what_the_broker_refuses(bootstrap):
    topic = f"t-rf-{uuid.uuid4().hex[:8]}"
    result = invoke(
        "topics",
        "create",
        "--brokers",
        bootstrap,
        "--topic",
        topic,
        "--partitions",
        "1",
        "--replication-factor",
        "3",
    )
    assert result.exit_code == 2
    assert f"cannot create topic '{topic}'" in result.output
    assert "replication factor of 3" in result.output


def test_heartbeat_once_writes_the_current_time_to_every_partition(bootstrap, new_topic):
    topic = new_topic(3)
    before = datetime.now(UTC)
    result = invoke("heartbeat", "--brokers", bootstrap, "--topic", topic, "--once")
    after = datetime.now(UTC)
    assert result.exit_code == 0, result.output
    stored = read_topic(bootstrap, topic)
    assert sorted(s.partition for s in stored) == [0, 1, 2]
    for message in stored:
        beat = decode(message.value)
        assert isinstance(beat, Heartbeat)
        moment = datetime.fromtimestamp(beat.time_us / 1e6, tz=UTC)
        assert before <= moment <= after
        assert message.key is None


def test_heartbeat_repeats_until_stopped(tmp_path, bootstrap, new_topic):
    topic = new_topic(2)
    log = tmp_path / "heartbeat.log"
    ticker = start_meterwax(
        log, "heartbeat", "--brokers", bootstrap, "--topic", topic, "--every", "200ms"
    )
    try:
        wait_for(
            lambda: (
                min(Counter(s.partition for s in read_topic(bootstrap, topic)).values(), default=0)
                >= 3
            ),
            what="three rounds of heartbeats",
            process=ticker,
        )
    finally:
        code = stop(ticker)
    assert code == 143, log.read_text()
    assert "stopped by SIGTERM after" in log.read_text()


def test_produce_sends_the_generator_stream_keyed_by_tenant(bootstrap, new_topic):
    topic = new_topic(4)
    start = "2026-01-05T09:00:00Z"
    result = invoke(
        "produce",
        "--brokers",
        bootstrap,
        "--topic",
        topic,
        "--events",
        "3000",
        "--tenants",
        "8",
        "--seed",
        "4",
        "--start",
        start,
        "--rate",
        "20000",
    )
    assert result.exit_code == 0, result.output
    expected = list(
        generate(
            Workload(
                events=3000,
                tenants=8,
                seed=4,
                start=datetime(2026, 1, 5, 9, tzinfo=UTC),
                events_per_second=20000,
            )
        )
    )
    stored = read_topic(bootstrap, topic)
    assert Counter((s.key, s.value) for s in stored) == Counter(
        (m.key, m.payload) for m in expected
    )
    # Keyed by tenant: every tenant's events are in one partition, in generation order.
    partitions: dict[bytes, set[int]] = {}
    for message in stored:
        partitions.setdefault(message.key, set()).add(message.partition)
    assert all(len(found) == 1 for found in partitions.values())
    by_partition = sorted(stored, key=lambda s: (s.partition, s.offset))
    for tenant in partitions:
        assert [s.value for s in by_partition if s.key == tenant] == [
            m.payload for m in expected if m.key == tenant
        ]


def test_produce_exits_1_and_names_the_error_when_messages_are_not_delivered(bootstrap, cluster):
    # The broker refuses batches over the topic's max.message.bytes: a real delivery failure.
    topic = f"t-tiny-{uuid.uuid4().hex[:8]}"
    futures = cluster.admin.create_topics(
        [NewTopic(topic, 1, 1, config={"max.message.bytes": "200"})]
    )
    futures[topic].result(30)
    result = invoke("produce", "--brokers", bootstrap, "--topic", topic, "--events", "50")
    assert result.exit_code == 1
    assert "messages were not delivered: MSG_SIZE_TOO_LARGE" in result.output


def test_the_floor_consumer_reads_every_message_once(bootstrap, cluster, new_topic):
    topic = new_topic(4)
    messages = list(generate(Workload(events=5000, tenants=16, seed=2)))
    produce_generated(cluster, topic, messages)
    result = consume_and_discard(cluster, topic, batch_size=700)
    assert result.messages == len(messages)
    assert result.bytes == sum(len(m.payload) for m in messages)
    assert result.messages_per_second > 0
