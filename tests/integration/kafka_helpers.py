"""Helpers for the Kafka tests: read a topic back, run meterwax, wait for a condition."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from deltalake import DeltaTable

from meterwax.flows.generator import Generated
from meterwax.flows.kafka_clients import Cluster
from meterwax.flows.kafka_producer import Record, RecordWriter
from meterwax.sinks.lake import Lake
from meterwax.sinks.schemas import TableSpec

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WINDOW = timedelta(minutes=1)
T = TypeVar("T")


@dataclass(frozen=True)
class Stored:
    """A message as the broker stored it."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


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
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1] for p in partitions
        }
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


def meterwax_command(*args: str) -> list[str]:
    """The command line of a meterwax subprocess."""
    return [sys.executable, "-m", "meterwax", *args]


def run_meterwax(
    *args: str, timeout: float = 120, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run meterwax to completion in a subprocess (``env_extra`` added to its environment)."""
    return subprocess.run(
        meterwax_command(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env_extra or {})},
    )


def table_rows(lake: Lake, spec: TableSpec) -> list[dict] | None:
    """A table's rows, or None while the table does not exist yet."""
    if not DeltaTable.is_deltatable(lake.uri(spec)):
        return None
    return DeltaTable(lake.uri(spec)).to_pyarrow_table().to_pylist()


def wait_for(
    condition: Callable[[], T | None],
    *,
    what: str,
    timeout_s: float = 60,
    process: subprocess.Popen[str] | None = None,
) -> T:
    """Poll ``condition`` until it returns something truthy; fail at the deadline or if
    ``process`` exits meanwhile (with its output)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if process is not None and process.poll() is not None:
            raise AssertionError(f"meterwax exited ({process.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.2)


def start_meterwax(
    log: Path, *args: str, env_extra: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start meterwax in the background, its output going to ``log`` (never a pipe that could
    fill up and block it)."""
    with log.open("w") as handle:
        return subprocess.Popen(
            meterwax_command(*args),
            stdout=handle,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env_extra or {})},
        )


def stop(process: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 60) -> int:
    """Send ``sig`` and wait for the exit status (kill it if it does not stop in time)."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise
