"""``meterwax run`` on real Kafka topics, checked against the generator's intents.

Each test produces to a topic of its own, runs the flow with --stop-at-end and compares the
tables with an independent computation or with another run.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections import Counter
from datetime import UTC, datetime

import orjson
import pytest
from click.testing import CliRunner

from meterwax.cli.main import main
from meterwax.kafka.producer import Record
from meterwax.operators.reasons import Reason
from meterwax.sinks.lake import Lake
from meterwax.sinks.schemas import EVENTS, LATE_EVENTS, QUARANTINE, USAGE_WINDOWS
from meterwax.synthetic.generator import Workload, generate
from tests.helpers import (
    comparable_tables,
    generated_windows,
    rows,
    run_cli,
    window_totals,
    without,
)
from tests.kafka_helpers import produce, produce_generated, read_topic
from tests.processes import meterwax_command

pytestmark = pytest.mark.kafka

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def test_run_counts_each_message_once_and_quarantines_with_kafka_coordinates(
    tmp_path, bootstrap, cluster, new_topic
):
    topic = new_topic(4)
    workload = Workload(events=6000, tenants=24, seed=21, start=START)
    messages = list(generate(workload))
    result = CliRunner().invoke(
        main,
        [
            *("produce", "--brokers", bootstrap, "--topic", topic, "--events", "6000"),
            *("--tenants", "24", "--seed", "21", "--start", START.isoformat()),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "produced 6,000 of 6,000 messages" in result.output
    # Messages the generator does not make: bytes that are not JSON, a valid event over the
    # size limit (the broker takes up to 1 MB), and a tombstone.
    garbage = b"\xff\xfe not json \x00"
    oversized = orjson.dumps(
        {
            "id": "big-1",
            "tenant_id": "tenant-big",
            "meter": "api_calls",
            "quantity": 1,
            "timestamp": "2026-01-05T09:00:10Z",
            "source": "x" * 200,
            "dimensions": {f"d{i}": "v" * 250 for i in range(16)},
        }
    )
    assert 4096 < len(oversized) < 1_000_000
    specials = {
        garbage: Reason.MALFORMED_JSON,
        oversized: Reason.PAYLOAD_TOO_LARGE,
        None: Reason.EMPTY_PAYLOAD,
    }
    produce(
        cluster,
        topic,
        [Record(b"tenant-g", garbage), Record(b"tenant-big", oversized), Record(b"t-x", None)],
    )

    lake = Lake(tmp_path / "lake")
    summary = run_cli(
        "--brokers",
        bootstrap,
        "--topic",
        topic,
        "--lake",
        lake.root,
        "--stop-at-end",
        "--max-event-bytes",
        "4096",
    )

    intents = Counter(m.intent for m in messages)
    assert summary["read"] == len(messages) + 3
    assert summary["counted"] == intents["valid"]
    assert summary["duplicates"] == intents["duplicate"]
    assert summary["late"] == intents["late"]
    assert summary["quarantined"] == intents["invalid"] + 3
    assert summary["accounted"] is True
    assert summary["partitions"] == [f"kafka:{topic}#{p}" for p in range(4)]

    assert window_totals(lake) == generated_windows(messages)
    ledger = rows(lake, EVENTS)
    assert sorted((r["tenant_id"], r["id"]) for r in ledger) == sorted(
        (m.tenant_id, m.event_id) for m in messages if m.intent == "valid"
    )
    assert sorted(r["id"] for r in rows(lake, LATE_EVENTS)) == sorted(
        m.event_id for m in messages if m.intent == "late"
    )

    # Every quarantine row points at the message it came from: topic, partition, offset,
    # Kafka timestamp and key, with its raw bytes.
    stored = {(s.partition, s.offset): s for s in read_topic(bootstrap, topic)}
    quarantined = rows(lake, QUARANTINE)
    for row in quarantined:
        assert row["origin"] == f"kafka:{topic}"
        message = stored[(row["origin_partition"], row["origin_offset"])]
        assert row["raw"] == message.value
        assert row["kafka_key"] == message.key
        assert row["kafka_timestamp"] == datetime.fromtimestamp(message.timestamp_ms / 1000, tz=UTC)
        assert row["line_number"] is None
        assert row["reason"] in {reason.value for reason in Reason}
        assert row["detail"]
        if message.value in specials:
            assert row["reason"] == specials[message.value].value
    invalid = [m.payload for m in messages if m.intent == "invalid"]
    assert Counter(r["raw"] for r in quarantined) == Counter([*invalid, *specials])

    # Reading the topic again changes nothing.
    before = comparable_tables(lake)
    run_cli(
        "--brokers",
        bootstrap,
        "--topic",
        topic,
        "--lake",
        lake.root,
        "--stop-at-end",
        "--max-event-bytes",
        "4096",
        "--batch-size",
        "777",
    )
    assert comparable_tables(lake) == before


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def test_one_worker_two_workers_and_two_processes_write_identical_tables(
    tmp_path, bootstrap, cluster, new_topic
):
    topic = new_topic(4)
    messages = list(generate(Workload(events=8000, tenants=40, seed=5, start=START)))
    produce_generated(cluster, topic, messages)
    kafka = ("--brokers", bootstrap, "--topic", topic, "--stop-at-end")

    one = Lake(tmp_path / "one-worker")
    run_cli(*kafka, "--lake", one.root)
    two = Lake(tmp_path / "two-workers")
    run_cli(
        *kafka,
        "--lake",
        two.root,
        "--workers",
        "2",
        "--batch-size",
        "500",
        "--commit-interval",
        "200ms",
    )

    processes = Lake(tmp_path / "two-processes")
    addresses = ";".join(f"127.0.0.1:{port}" for port in free_ports(2))
    logs = [tmp_path / f"process-{i}.log" for i in range(2)]
    started = [
        subprocess.Popen(
            meterwax_command(
                "run",
                *kafka,
                "--lake",
                processes.root,
                "-i",
                str(i),
                "-a",
                addresses,
                "--format",
                "json",
            ),
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        for i, log in enumerate(logs)
    ]
    for process, log in zip(started, logs, strict=True):
        assert process.wait(timeout=120) == 0, log.read_text()
    shares = [json.loads(log.read_text()[log.read_text().index("{") :]) for log in logs]
    assert sum(share["read"] for share in shares) == len(messages)
    assert all(share["read"] > 0 for share in shares), "one process read nothing"

    assert window_totals(one) == generated_windows(messages)
    assert comparable_tables(two) == comparable_tables(one)
    assert comparable_tables(processes) == comparable_tables(one)


def test_an_on_time_stream_gives_the_same_windows_from_kafka_and_from_a_file(
    tmp_path, bootstrap, cluster, new_topic
):
    # No late and no invalid events: then partitioning cannot change any decision, and the
    # tenant-keyed topic must give exactly the windows of one file holding every event.
    messages = list(
        generate(Workload(events=6000, tenants=30, seed=9, late=0, duplicates=0.03, invalid=0))
    )
    topic = new_topic(4)
    produce_generated(cluster, topic, messages)
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"".join(m.payload + b"\n" for m in messages))

    from_kafka = Lake(tmp_path / "kafka")
    run_cli("--brokers", bootstrap, "--topic", topic, "--lake", from_kafka.root, "--stop-at-end")
    from_file = Lake(tmp_path / "file")
    run_cli("--input", str(source), "--lake", from_file.root)

    assert without(rows(from_kafka, USAGE_WINDOWS), "updated_at") == without(
        rows(from_file, USAGE_WINDOWS), "updated_at"
    )
    assert len({r["origin_partition"] for r in rows(from_kafka, EVENTS)}) == 4
    origin = ("origin", "origin_partition", "origin_offset")
    assert without(rows(from_kafka, EVENTS), *origin) == without(rows(from_file, EVENTS), *origin)
    assert window_totals(from_kafka) == generated_windows(messages)


def test_stop_at_end_on_an_empty_topic_finishes_at_once(tmp_path, bootstrap, new_topic):
    # An empty topic: --stop-at-end finishes at once, with nothing read.
    topic = new_topic(3)
    summary = run_cli(
        "--brokers", bootstrap, "--topic", topic, "--lake", str(tmp_path / "lake"), "--stop-at-end"
    )
    assert summary["read"] == 0
    assert summary["partitions"] == [f"kafka:{topic}#{p}" for p in range(3)]


def test_a_missing_topic_is_one_clear_error(tmp_path, bootstrap):
    result = CliRunner().invoke(
        main,
        [
            "run",
            "--brokers",
            bootstrap,
            "--topic",
            "no-such-topic",
            "--lake",
            str(tmp_path / "lake"),
            "--stop-at-end",
        ],
    )
    assert result.exit_code == 2
    assert "topic 'no-such-topic' does not exist" in result.output
    assert "meterwax topics create" in result.output
