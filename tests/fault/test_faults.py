"""Fault injection: SIGKILL the flows at random moments and at every dangerous point, G1–G5 hold.

A producer keeps writing a stream with duplicates, late and invalid events while the main
flow (Kafka input, recovery on) is killed over and over: at random times (every fourth round
a SIGTERM or SIGINT stop instead of SIGKILL), and through crash points right after one table
committed and before the next, and at the start of an epoch snapshot. Sometimes it stays down
longer than the allowed lateness. Then it runs to the end, the correction flow is killed
between its own commits and rerun, and every guarantee is checked exactly against the
messages stored in the topic, and against a clean run.

The short version runs in ``make test``. The long one:

    METERWAX_FAULT_KILLS=60 METERWAX_FAULT_EVENTS=100000 METERWAX_FAULT_SEED=7 make test \\
        PYTEST_ARGS="-m fault"
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
from pathlib import Path

import pytest

from meterwax.sinks.lake import Lake
from meterwax.synthetic.generator import generate
from tests.fault.streams import SlowProducer, fault_workload
from tests.guarantees import check_g1_to_g4_against_the_topic
from tests.helpers import comparable_tables
from tests.processes import replay_from_start, run_meterwax, start_meterwax, wait_for

KILLS = int(os.environ.get("METERWAX_FAULT_KILLS", "12"))
EVENTS = int(os.environ.get("METERWAX_FAULT_EVENTS", "12000"))
SEED = int(os.environ.get("METERWAX_FAULT_SEED", str(random.SystemRandom().randrange(10_000))))
LATENESS_S = 5
RULES = ("--allowed-lateness", f"{LATENESS_S}s")
CRASH_POINTS = ("sink.snapshot", "sink.after_events", "sink.after_windows", "sink.after_late")
CORRECTION_CRASHES = (
    "corrections.after_ledger",
    "corrections.after_audit",
    "corrections.after_windows",
)

pytestmark = [pytest.mark.kafka, pytest.mark.fault, pytest.mark.slow]


def _run_args(bootstrap: str, topic: str, lake: Lake, recovery: Path) -> tuple[str, ...]:
    return (
        "run",
        "--brokers",
        bootstrap,
        "--topic",
        topic,
        "--lake",
        lake.root,
        "--recovery-dir",
        str(recovery),
        "--snapshot-interval",
        "300ms",
        "--batch-size",
        "400",
        *RULES,
    )


def _kill_rounds(bootstrap, topic, lake, recovery, log_dir: Path, rng, producer) -> list[str]:
    """Start and kill the main flow until ``KILLS`` kills happened and the producer is done."""
    kills: list[str] = []
    unreached = list(CRASH_POINTS)
    round_number = 0
    while len(kills) < KILLS or producer.is_alive() or unreached:
        round_number += 1
        assert round_number <= 4 * KILLS + 40, f"crash points never reached: {unreached}"
        # Crash points first, while the producer still writes (they need data to flush).
        point = unreached[0] if unreached and round_number % 2 == 1 else None
        log = log_dir / f"round-{round_number}.log"
        process = start_meterwax(
            log,
            *_run_args(bootstrap, topic, lake, recovery),
            env_extra={"METERWAX_CRASH_AT": point} if point else None,
        )
        deadline = time.monotonic() + (15.0 if point else rng.uniform(0.8, 4.0))
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        # Every fourth round is an operator's stop (SIGTERM or Ctrl-C) instead of a kill:
        # the workers leave mid-epoch, which must be as harmless as a kill.
        stop_signal = (
            rng.choice((signal.SIGTERM, signal.SIGINT))
            if point is None and round_number % 4 == 0
            else signal.SIGKILL
        )
        if stop_signal != signal.SIGKILL and process.poll() is None:
            # Its stop handlers are in place once it says it tails (before that, during
            # imports, a signal gets Python's default handling, as for any program).
            wait_for(
                lambda log=log: "tailing" in log.read_text(), what="the start line", process=process
            )
        if process.poll() is None:
            process.send_signal(stop_signal)
        code = process.wait(timeout=30)
        expected = 128 + stop_signal if stop_signal != signal.SIGKILL else -signal.SIGKILL
        assert code == expected, f"round {round_number} exited {code}:\n{log.read_text()[-3000:]}"
        reached = point is not None and "crash point" in log.read_text()
        if reached:
            unreached.remove(point)
        kills.append(point if reached else f"random {signal.Signals(stop_signal).name}")
        if rng.random() < 0.25:
            time.sleep(LATENESS_S + 1)  # down for longer than the allowed lateness
    return kills


def test_g1_to_g5_hold_when_the_flows_are_killed_at_random_and_at_every_commit(
    tmp_path, bootstrap, cluster, new_topic
):
    rng = random.Random(SEED)
    messages = list(generate(fault_workload(SEED, events=EVENTS, lateness_s=LATENESS_S)))
    topic = new_topic(4)
    lake, recovery = Lake(tmp_path / "lake"), tmp_path / "recovery"
    producer = SlowProducer(cluster, topic, messages, seconds=max(30.0, KILLS * 2.5))
    producer.start()
    kills = _kill_rounds(bootstrap, topic, lake, recovery, tmp_path, rng, producer)
    producer.join()
    assert producer.undelivered == 0

    finished = run_meterwax(*_run_args(bootstrap, topic, lake, recovery), "--stop-at-end")
    assert finished.returncode == 0, finished.stderr[-3000:]
    for point in CORRECTION_CRASHES:
        crashed = run_meterwax(
            "corrections", "--lake", lake.root, "--once", env_extra={"METERWAX_CRASH_AT": point}
        )
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
        assert f"crash point {point} reached" in crashed.stderr
    check_g1_to_g4_against_the_topic(lake, bootstrap, topic, messages)

    # G5: the same tables as a run that was never interrupted.
    reference = Lake(tmp_path / "reference")
    clean = run_meterwax(
        "run",
        "--brokers",
        bootstrap,
        "--topic",
        topic,
        "--lake",
        reference.root,
        "--no-recovery",
        "--stop-at-end",
        *RULES,
    )
    assert clean.returncode == 0, clean.stderr[-3000:]
    assert run_meterwax("corrections", "--lake", reference.root, "--once").returncode == 0
    final = comparable_tables(lake)
    assert final == comparable_tables(reference)

    # Replaying the whole topic, and starting over without the recovery store, change nothing.
    replayed = replay_from_start(bootstrap, topic, lake, 4)
    assert replayed.returncode == 0, replayed.stderr[-3000:]
    assert "0 missing events counted" in replayed.stdout
    shutil.rmtree(recovery)
    again = run_meterwax(*_run_args(bootstrap, topic, lake, recovery), "--stop-at-end")
    assert again.returncode == 0, again.stderr[-3000:]
    assert run_meterwax("corrections", "--lake", lake.root, "--once").returncode == 0
    assert comparable_tables(lake) == final

    print(
        f"seed {SEED}: {len(kills)} kills ({', '.join(sorted(set(kills)))}), "
        f"{len(messages)} messages"
    )
    assert len(kills) >= KILLS
    assert set(CRASH_POINTS) <= set(kills), kills
