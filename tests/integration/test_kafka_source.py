"""The Kafka source's partitions against a real broker: where reading starts, where it stops,
and that a lost offset fails instead of skipping events."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from meterwax.errors import BrokerError
from meterwax.flows.kafka_source import PREFETCH_DEFAULTS, KafkaSource, overridable_settings
from meterwax.kafka.clients import Cluster
from meterwax.kafka.producer import Record
from meterwax.operators.records import SourceBatch, SourcePartition
from tests.kafka_helpers import produce
from tests.processes import run_meterwax, wait_for

pytestmark = pytest.mark.kafka


def part_key(topic: str, partition: int) -> str:
    return SourcePartition(f"kafka:{topic}", partition).key


def read_to_end(partition, *, timeout_s: float = 30) -> list[SourceBatch]:
    """Call next_batch (as Bytewax would, honouring next_awake) until StopIteration."""
    batches: list[SourceBatch] = []
    deadline = time.monotonic() + timeout_s
    while True:
        assert time.monotonic() < deadline, "the partition did not reach its end"
        awake = partition.next_awake()
        if awake is not None and awake > datetime.now(UTC):
            time.sleep((awake - datetime.now(UTC)).total_seconds())
        try:
            batches.extend(partition.next_batch())
        except StopIteration:
            return batches


def offsets(batches: list[SourceBatch]) -> list[int]:
    return [offset for batch in batches for offset in batch.offsets]


def values(n: int, prefix: str = "m") -> list[Record]:
    return [Record(b"key", f"{prefix}{i}".encode(), 0) for i in range(n)]


def test_a_partition_stops_at_the_end_it_had_when_it_was_built(cluster, new_topic):
    topic = new_topic(2)
    produce(cluster, topic, values(5))
    source = KafkaSource(cluster, topic, batch_size=2, stop_at_end=True)
    assert source.list_parts() == [part_key(topic, 0), part_key(topic, 1)]
    first = source.build_part("read", part_key(topic, 0), None)
    empty = source.build_part("read", part_key(topic, 1), None)
    produce(cluster, topic, values(3, "later"))  # after the start: not part of this run

    batches = read_to_end(first)
    assert offsets(batches) == [0, 1, 2, 3, 4]
    assert all(len(batch) <= 2 for batch in batches)
    assert [p for b in batches for p in b.payloads] == [f"m{i}".encode() for i in range(5)]
    assert all(b.keys == [b"key"] * len(b) for b in batches)
    assert all(t is not None and t > 0 for b in batches for t in b.timestamps_ms or [None])
    assert first.snapshot() == 5
    with pytest.raises(StopIteration):
        empty.next_batch()  # an empty partition stops at once
    first.close()
    empty.close()


def test_reading_resumes_at_the_snapshot_offset(cluster, new_topic):
    topic = new_topic(1)
    produce(cluster, topic, values(6))
    source = KafkaSource(cluster, topic, stop_at_end=True)
    partition = source.build_part("read", part_key(topic, 0), 4)
    assert offsets(read_to_end(partition)) == [4, 5]
    assert partition.snapshot() == 6
    partition.close()


def test_transaction_markers_at_the_end_do_not_keep_a_bounded_run_waiting(
    bootstrap, cluster, new_topic
):
    # A transactional producer leaves a commit marker after its records: the high watermark
    # is one past the marker, and no message ever has the marker's offset.
    topic = new_topic(1)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "transactional.id": f"test-{uuid.uuid4().hex}"}
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(3):
        producer.produce(topic, f"tx{i}".encode(), b"k", partition=0)
    producer.commit_transaction(30)
    # The coordinator writes the commit marker after commit_transaction returns; until it is
    # there the transaction is open and, read committed, not part of a run that starts now.
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "test"})
    wait_for(
        lambda: consumer.get_watermark_offsets(TopicPartition(topic, 0), 10)[1] == 4,
        what="the commit marker",
    )
    consumer.close()
    source = KafkaSource(cluster, topic, stop_at_end=True)
    partition = source.build_part("read", part_key(topic, 0), None)
    assert offsets(read_to_end(partition)) == [0, 1, 2]
    assert partition.snapshot() >= 3
    partition.close()


def test_an_offset_no_longer_in_the_log_fails_instead_of_skipping(cluster, new_topic):
    topic = new_topic(1)
    produce(cluster, topic, values(6))
    # What retention does to old segments: the log now starts at offset 4.
    deleted = cluster.admin.delete_records([TopicPartition(topic, 0, 4)])
    for future in deleted.values():
        future.result(30)

    fresh = KafkaSource(cluster, topic, stop_at_end=True).build_part(
        "read", part_key(topic, 0), None
    )
    assert offsets(read_to_end(fresh)) == [4, 5]  # a first run starts where the log starts
    fresh.close()

    resumed = KafkaSource(cluster, topic).build_part("read", part_key(topic, 0), 1)
    with pytest.raises(BrokerError, match=rf"topic '{topic}' partition 0 at offset 1"):
        read_to_end(resumed, timeout_s=30)
    resumed.close()


def test_an_idle_partition_sleeps_between_reads_instead_of_spinning(cluster, new_topic):
    topic = new_topic(1)
    partition = KafkaSource(cluster, topic).build_part("read", part_key(topic, 0), None)
    assert partition.next_batch() == []
    awake = partition.next_awake()
    assert awake is not None and awake > datetime.now(UTC)
    partition.close()


def test_a_missing_topic_or_unreachable_brokers_fail_when_the_source_is_built(cluster):
    with pytest.raises(BrokerError, match="topic 'absent-topic' does not exist"):
        KafkaSource(cluster, "absent-topic")
    unreachable = Cluster("127.0.0.1:1", {"socket.connection.setup.timeout.ms": "1000"})
    with pytest.raises(BrokerError, match=r"cannot read metadata .* from 127\.0\.0\.1:1"):
        unreachable.partitions("usage-events", timeout_s=1)


def test_the_backlog_is_what_a_stop_at_end_run_reads_from_where_it_resumes(
    tmp_path, bootstrap, cluster, new_topic
):
    topic = new_topic(2)
    records = [Record(b"t", b"not json", partition) for partition in (0,) * 7 + (1,) * 5]
    produce(cluster, topic, records)
    source = KafkaSource(cluster, topic, stop_at_end=True)
    assert source.backlog({}) == 12
    assert source.backlog({part_key(topic, 0): 3}) == 9
    assert source.backlog({part_key(topic, 0): 7, part_key(topic, 1): 5}) == 0

    run = run_meterwax(
        *("run", "--brokers", bootstrap, "--topic", topic, "--lake", str(tmp_path / "lake")),
        *("--stop-at-end", "--no-recovery"),
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr.splitlines()[-1].startswith(f"reading kafka:{topic} [")
    assert "100% 12/12" in run.stderr


def test_read_ahead_is_bounded_by_default_and_kafka_config_replaces_each_bound():
    plain = overridable_settings(Cluster("localhost:1"), "usage", 3)
    assert {key: plain[key] for key in PREFETCH_DEFAULTS} == PREFETCH_DEFAULTS
    assert plain["client.id"] == "meterwax-usage-3"
    tuned = Cluster("localhost:1", {"queued.max.messages.kbytes": "1", "group.id": "acl-group"})
    chosen = overridable_settings(tuned, "usage", 3)
    # What the user gave is left out here, so the user's value is the one librdkafka gets.
    assert "queued.max.messages.kbytes" not in chosen and "group.id" not in chosen
    assert chosen["queued.min.messages"] == PREFETCH_DEFAULTS["queued.min.messages"]
    assert tuned.config(**chosen)["queued.max.messages.kbytes"] == "1"


@pytest.mark.parametrize(
    "extra",
    [
        {"message.max.bytes": "9000000"},
        {"message.max.bytes": " 9000000 "},
        {"queued.max.messages.kbytes": "1024", "receive.message.max.bytes": "2000000"},
        {"message.max.bytes": "0x800000"},
        {"message.max.bytes": "+8388608"},
        {"queued.max.messages.kbytes": "2048", "receive.message.max.bytes": "3000000"},
        {"fetch.message.max.bytes": "8000000"},
    ],
)
def test_a_legal_setting_of_the_users_is_never_refused_for_a_read_ahead_bound(extra):
    # librdkafka ties fetch.max.bytes to message.max.bytes and receive.message.max.bytes:
    # the bounds meterwax adds must never make a setting of the user's refused.
    plain = {"bootstrap.servers": "localhost:1", "group.id": "check", **extra}
    Consumer(plain).close()  # a setting librdkafka accepts on its own...
    cluster = Cluster("localhost:1", extra)
    Consumer(cluster.config(**overridable_settings(cluster, "u", 0))).close()  # ...and with ours


def test_messages_larger_than_the_read_ahead_bound_are_all_read(cluster, new_topic):
    # A 1 KiB queue and 2 KiB partition fetches, with 3 KiB messages: librdkafka still
    # hands over whole messages, and none is lost.
    topic = new_topic(1)
    big = [Record(b"key", bytes([65 + i]) * 3000, 0) for i in range(20)]
    produce(cluster, topic, big)
    tight = Cluster(
        cluster.brokers, {"queued.max.messages.kbytes": "1", "fetch.message.max.bytes": "2048"}
    )
    source = KafkaSource(tight, topic, batch_size=7, stop_at_end=True)
    partition = source.build_part("read", part_key(topic, 0), None)
    batches = read_to_end(partition)
    assert offsets(batches) == list(range(20))
    assert [p for b in batches for p in b.payloads] == [r.value for r in big]
    partition.close()
