"""Concurrent writers on an S3 lake: commit conflicts are retried, nothing is lost or doubled.

On an object store, the only thing between two writers committing the same table version is
the store refusing the second ``If-None-Match: *`` PUT. These tests make several writers
commit to the same tables of one ``s3://`` lake at once (two processes of one Bytewax
cluster, a compaction, a replay, three correction flows) and check the lake against an
independent computation afterwards.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections import Counter

import pytest

from meterwax.sinks.schemas import EVENTS, LATE_EVENTS, QUARANTINE
from meterwax.synthetic.generator import Workload, generate
from tests.guarantees import check_g1_ledger, check_g3_audit
from tests.helpers import generated_windows, rows, run_cli, window_totals, write
from tests.integration.test_kafka_run import START, free_ports
from tests.kafka_helpers import produce_generated
from tests.processes import (
    meterwax_command,
    replay_from_start,
    run_meterwax,
    start_meterwax,
    wait_for,
)
from tests.s3_fixtures import S3Server

pytestmark = [pytest.mark.s3, pytest.mark.slow]


@pytest.mark.kafka
def test_two_processes_of_one_cluster_compaction_and_replay_on_one_s3_lake(
    tmp_path, bootstrap, cluster, new_topic, s3_server: S3Server
):
    topic = new_topic(4)
    messages = list(generate(Workload(events=6000, tenants=12, seed=43, late=0.0, start=START)))
    produce_generated(cluster, topic, messages)
    lake, env = s3_server.lake(), s3_server.env()
    addresses = ";".join(f"127.0.0.1:{port}" for port in free_ports(2))
    run = ["run", "--brokers", bootstrap, "--topic", topic, "--lake", lake.root, "--no-recovery"]
    tuning = ["--snapshot-interval", "200ms", "--batch-size", "300"]
    processes = [
        start_meterwax(
            tmp_path / f"process-{i}.log",
            *run,
            *tuning,
            "-i",
            str(i),
            "-a",
            addresses,
            env_extra=env,
        )
        for i in range(2)
    ]
    try:
        wait_for(
            lambda: lake.exists(EVENTS) and len(rows(lake, EVENTS)) > 1000,
            what="both processes committing",
            timeout_s=180,
            process=processes,
        )
        # A compaction while both processes commit to the same tables: its commit races theirs.
        compacted = run_meterwax("maintain", "--lake", lake.root, "--compact", env_extra=env)
        assert compacted.returncode == 0, compacted.stderr
        assert all(p.poll() is None for p in processes), "the run ended before the compaction"
        # Close the last windows: a heartbeat in every partition moves the clock past them.
        beat = run_meterwax("heartbeat", "--brokers", bootstrap, "--topic", topic, "--once")
        assert beat.returncode == 0, beat.stderr
        expected = generated_windows(messages)
        wait_for(
            lambda: window_totals(lake) == expected,
            what="every window written",
            timeout_s=180,
            process=processes,
        )
    finally:
        # Both at once: one process of a cluster stops only when the whole cluster does.
        for process in processes:
            process.send_signal(signal.SIGTERM)
        codes = [_wait_or_kill(process) for process in processes]
    assert codes == [128 + signal.SIGTERM] * 2, [p.read_text() for p in tmp_path.glob("*.log")]
    check_g1_ledger(lake, messages)
    assert window_totals(lake) == generated_windows(messages)

    # Replay repairs a damaged ledger on S3: delete two tenants, replay, count them once.
    ledger = lake.table(EVENTS)
    ledger.alter.set_table_properties({"delta.appendOnly": "false"})
    victims = sorted({m.tenant_id for m in messages})[:2]
    ledger.delete(" OR ".join(f"tenant_id = '{t}'" for t in victims))
    assert run_meterwax("reconcile", "--lake", lake.root, env_extra=env).returncode == 1
    replayed = replay_from_start(bootstrap, topic, lake, 4, "--format", "json", env_extra=env)
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout)["inserted"] == sum(
        1 for m in messages if m.intent == "valid" and m.tenant_id in victims
    )
    check_g1_ledger(lake, messages)
    checked = run_meterwax("reconcile", "--lake", lake.root, env_extra=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _wait_or_kill(process: subprocess.Popen[str]) -> int:
    """The exit status of a stopped process; killed (and the test failed) if it hangs."""
    try:
        return process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def test_three_correction_flows_at_once_on_an_s3_lake(tmp_path, s3_server: S3Server, monkeypatch):
    env = s3_server.env()
    monkeypatch.setenv("METERWAX_STORAGE_OPTIONS", env["METERWAX_STORAGE_OPTIONS"])
    lake = s3_server.lake()
    # Two files share tenants (window conflicts); 8% late events, some with retried copies.
    first = list(generate(Workload(events=2000, tenants=3, seed=31, late=0.08, duplicates=0.05)))
    second = list(generate(Workload(events=2000, tenants=3, seed=32, late=0.08, duplicates=0.05)))
    inputs = [write(tmp_path / "a.jsonl", first), write(tmp_path / "b.jsonl", second)]
    run_cli("--input", str(inputs[0]), "--input", str(inputs[1]), "--lake", lake.root)
    late = rows(lake, LATE_EVENTS)
    assert len(late) > 100

    flows = [
        subprocess.Popen(
            meterwax_command("corrections", "--lake", lake.root, "--once"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for flow in flows:
        _, err = flow.communicate(timeout=600)
        assert flow.returncode == 0, err

    ledger = rows(lake, EVENTS)
    keys = Counter((r["tenant_id"], r["id"]) for r in ledger)
    assert [key for key, count in keys.items() if count > 1] == []
    check = run_meterwax("reconcile", "--lake", lake.root)
    assert check.returncode == 0, check.stdout + check.stderr
    check_g3_audit(lake)
    at = {(r["origin"], r["origin_partition"], r["origin_offset"]) for r in ledger}
    quarantined = Counter(
        (r["origin"], r["origin_partition"], r["origin_offset"]) for r in rows(lake, QUARANTINE)
    )
    assert max(quarantined.values(), default=1) == 1
    for event in late:
        where = (event["origin"], event["origin_partition"], event["origin_offset"])
        assert where in at or where in quarantined or (event["tenant_id"], event["id"]) in keys
