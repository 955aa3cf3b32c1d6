"""A two-process cluster loses a process: SIGKILL it mid-run, restart, finish; G1–G5 exact.

The two processes run as on two hosts: each on its own loopback address (127.0.0.1 and
127.0.0.2) with its own state directory, so each keeps its own recovery store. Killing one
stops the other too (a Bytewax cluster cannot lose a process), which must say so; a restart
whose store was lost is refused by both processes; the real restart resumes both stores and
the tables equal an uninterrupted run's, checked against what the topic holds.
"""

from __future__ import annotations

import random
import signal
from pathlib import Path

import pytest

from meterwax.flows.recovery import source_positions
from meterwax.sinks.lake import Lake
from meterwax.sinks.schemas import EVENTS
from meterwax.synthetic.generator import generate
from tests.fault.streams import SlowProducer, fault_workload
from tests.guarantees import check_g1_to_g4_against_the_topic
from tests.helpers import comparable_tables
from tests.kafka_helpers import produce_generated
from tests.processes import (
    loopback_addresses,
    run_meterwax,
    start_meterwax,
    table_rows,
    wait_for,
)

LATENESS_S = 5
RULES = ("--allowed-lateness", f"{LATENESS_S}s")

pytestmark = [pytest.mark.kafka, pytest.mark.fault, pytest.mark.slow]


def _process_args(bootstrap: str, topic: str, lake: Lake, state_dir: Path) -> tuple[str, ...]:
    return (
        "run",
        *("--brokers", bootstrap, "--topic", topic, "--lake", lake.root),
        *("--state-dir", str(state_dir), "--snapshot-interval", "300ms", "--batch-size", "400"),
        *RULES,
    )


def _resumes_past_start(state_dirs: list[Path]) -> bool:
    """Whether the processes' stores, read together, would resume a partition past offset 0."""
    stores = [store for state in state_dirs for store in state.glob("recovery/*")]
    return any(offset > 0 for offset in source_positions(*stores).values())


def _start_cluster(
    args_of, addresses: str, logs: list[Path], *extra: str
) -> list:  # list[subprocess.Popen[str]]
    return [
        start_meterwax(log, *args_of(process), "-i", str(process), "-a", addresses, *extra)
        for process, log in enumerate(logs)
    ]


def test_a_killed_process_of_a_two_process_cluster_resumes_exactly(
    tmp_path, bootstrap, cluster, new_topic
):
    seed = random.SystemRandom().randrange(10_000)
    messages = list(generate(fault_workload(seed, events=4000, lateness_s=LATENESS_S)))
    topic = new_topic(4)
    lake = Lake(tmp_path / "lake")
    hosts = [tmp_path / "host-0", tmp_path / "host-1"]
    addresses = loopback_addresses(2)
    # Half the stream is in the topic before the cluster starts, the rest is written after
    # the kill: the kill is mid-stream whatever the machine's speed.
    half = len(messages) // 2
    produce_generated(cluster, topic, messages[:half])

    def args_of(process: int, state_dirs=hosts) -> tuple[str, ...]:
        return _process_args(bootstrap, topic, lake, state_dirs[process])

    logs = [tmp_path / "first-0.log", tmp_path / "first-1.log"]
    first = _start_cluster(args_of, addresses, logs)
    # Mid-run: the cluster has committed events and its stores would resume past them.
    wait_for(lambda: table_rows(lake, EVENTS), what="a first commit", process=first[0])
    wait_for(lambda: _resumes_past_start(hosts), what="a snapshot past it", process=first[0])
    first[1].send_signal(signal.SIGKILL)
    assert first[1].wait(timeout=30) == -signal.SIGKILL
    # The survivor cannot go on alone: it stops and says why.
    assert first[0].wait(timeout=60) == 2, logs[0].read_text()[-3000:]
    assert "cluster stopped: a peer process exited" in logs[0].read_text()

    producer = SlowProducer(cluster, topic, messages[half:], seconds=10)
    producer.start()

    # Process 1's disk was replaced: both refuse rather than resume without its state.
    lost = [hosts[0], tmp_path / "host-1-new-disk"]
    logs = [tmp_path / "lost-0.log", tmp_path / "lost-1.log"]
    refused = _start_cluster(lambda p: args_of(p, lost), addresses, logs, "--stop-at-end")
    for process, log in zip(refused, logs, strict=True):
        assert process.wait(timeout=90) == 2, log.read_text()[-3000:]
        assert "recovery store of process 1" in log.read_text()
        assert "is empty while the store of process 0" in log.read_text()

    producer.join()
    assert producer.undelivered == 0
    logs = [tmp_path / "resumed-0.log", tmp_path / "resumed-1.log"]
    resumed = _start_cluster(args_of, addresses, logs, "--stop-at-end")
    for process, log in zip(resumed, logs, strict=True):
        assert process.wait(timeout=120) == 0, log.read_text()[-3000:]
    check_g1_to_g4_against_the_topic(lake, bootstrap, topic, messages)

    # G5: the same tables as one process that was never interrupted.
    reference = Lake(tmp_path / "reference")
    clean = run_meterwax(
        "run",
        *("--brokers", bootstrap, "--topic", topic, "--lake", reference.root),
        *("--no-recovery", "--stop-at-end", *RULES),
    )
    assert clean.returncode == 0, clean.stderr[-3000:]
    assert run_meterwax("corrections", "--lake", reference.root, "--once").returncode == 0
    assert comparable_tables(lake) == comparable_tables(reference), f"seed {seed}"
