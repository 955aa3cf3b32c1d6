"""A tailing ``meterwax run``: heartbeats close idle windows, and a broker restart loses nothing.

These run meterwax as a subprocess, because a tailing run only ends when it is stopped.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest
from click.testing import CliRunner

from meterwax.cli.main import main
from meterwax.kafka.clients import Cluster
from meterwax.kafka.producer import Record
from meterwax.sinks.lake import Lake
from meterwax.sinks.schemas import EVENTS, LATE_EVENTS, QUARANTINE, USAGE_WINDOWS
from meterwax.synthetic.generator import Workload, generate
from tests.helpers import generated_windows, rows, window_totals
from tests.kafka_helpers import produce, produce_generated
from tests.processes import start_meterwax, stop, stop_cleanly, table_rows, wait_for

pytestmark = pytest.mark.kafka

TAIL = ("--commit-interval", "200ms")


def test_heartbeats_close_the_windows_of_an_idle_partition(tmp_path, bootstrap, cluster, new_topic):
    topic = new_topic(2)
    window = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=3)
    # Ten events in the first 10 s of one window, then nothing: the partition's event time
    # stops at window + 10 s, so the window cannot close from the data alone.
    events = [
        orjson.dumps(
            {
                "id": f"e{i}",
                "tenant_id": "acme",
                "meter": "api_calls",
                "quantity": i,
                "timestamp": (window + timedelta(seconds=i)).isoformat(),
            }
        )
        for i in range(1, 11)
    ]
    # The marker is quarantined; the quarantine table is written last in each commit, so
    # once its row is there, everything the flow did with the events is committed.
    marker = b"marker: not json"
    produce(cluster, topic, [*(Record(b"acme", e, 0) for e in events), Record(b"acme", marker, 0)])

    lake = Lake(tmp_path / "lake")
    log = tmp_path / "run.log"
    run = start_meterwax(
        log, "run", "--brokers", bootstrap, "--topic", topic, "--lake", lake.root, *TAIL
    )
    try:
        wait_for(lambda: table_rows(lake, QUARANTINE), what="the marker's commit", process=run)
        assert len(rows(lake, EVENTS)) == 10
        assert rows(lake, USAGE_WINDOWS) == [], "the window closed without a heartbeat"

        result = CliRunner().invoke(
            main, ["heartbeat", "--brokers", bootstrap, "--topic", topic, "--once"]
        )
        assert result.exit_code == 0, result.output
        assert f"heartbeat written to partitions 0-1 of {topic}" in result.output

        closed = wait_for(
            lambda: rows(lake, USAGE_WINDOWS), what="the window to close", process=run
        )
        assert [
            (r["tenant_id"], r["window_start"], r["quantity"], r["event_count"]) for r in closed
        ] == [("acme", window, Decimal(55), 10)]
    finally:
        output = stop_cleanly(run, log)
    assert "stopped by SIGTERM" in output
    assert "heartbeats" in output


def test_the_flow_survives_a_broker_restart_or_fails_loudly_and_a_rerun_is_exact(
    tmp_path, second_broker, new_topic
):
    address, restart = second_broker
    broker = Cluster(address)
    topic = new_topic(2, on=broker)
    start = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    messages = list(generate(Workload(events=4000, tenants=10, seed=33, start=start)))
    half = len(messages) // 2
    valid = Counter(m.intent for m in messages)["valid"]
    valid_first_half = Counter(m.intent for m in messages[:half])["valid"]
    produce_generated(broker, topic, messages[:half])

    lake = Lake(tmp_path / "lake")
    log = tmp_path / "run.log"
    run = start_meterwax(
        log, "run", "--brokers", address, "--topic", topic, "--lake", lake.root, *TAIL
    )
    try:
        wait_for(
            lambda: len(table_rows(lake, EVENTS) or []) == valid_first_half,
            what="the first half in the ledger",
            process=run,
        )
        restart()  # same ports, same data: the flow's consumers must reconnect
        produce_generated(broker, topic, messages[half:])
        outcome = wait_for(
            lambda: (
                "exited"
                if run.poll() is not None
                else "survived"
                if len(table_rows(lake, EVENTS) or []) == valid
                else None
            ),
            what="the second half or an exit",
            timeout_s=90,
        )
    finally:
        code = stop(run)
    output = log.read_text()
    if outcome == "survived":
        assert code == 143, output
    else:  # failing is allowed, but loudly: non-zero, with a message naming the topic
        assert code != 0 and "error:" in output and topic in output, output

    # A rerun to the end of the topic completes the job exactly.
    result = CliRunner().invoke(
        main,
        [
            "run",
            "--brokers",
            address,
            "--topic",
            topic,
            "--lake",
            lake.root,
            "--stop-at-end",
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accounted"] is True
    assert window_totals(lake) == generated_windows(messages)
    assert sorted(r["id"] for r in rows(lake, EVENTS)) == sorted(
        m.event_id for m in messages if m.intent == "valid"
    )
    assert sorted(r["id"] for r in rows(lake, LATE_EVENTS)) == sorted(
        m.event_id for m in messages if m.intent == "late"
    )
    assert Counter(r["raw"] for r in rows(lake, QUARANTINE)) == Counter(
        m.payload for m in messages if m.intent == "invalid"
    )
    print(f"broker restart: the tailing run {outcome}")
