"""A catalog applied while the main flow runs: the flow stops at its next commit and says so,
a restart counts with the new version, and the result does not depend on when it happened.

The windows open at the switch were accumulated for the old meters; the restarted flow leaves
them to the correction flow (``window_conflicts`` with reason ``catalog_change``), which
recomputes them from the ledger. After corrections every window equals an independent
computation under the new catalog, and reconcile is clean.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from click.testing import CliRunner

from meterwax.cli.main import main
from meterwax.kafka.producer import Record
from meterwax.sinks.lake import Lake
from meterwax.sinks.schemas import EVENTS, QUARANTINE, USAGE_WINDOWS, WINDOW_CONFLICTS
from meterwax.synthetic.generator import Workload, generate
from tests.catalog_reference import comparable, lake_windows, meter_windows, parse_event
from tests.helpers import rows
from tests.kafka_helpers import produce, produce_generated
from tests.processes import replay_from_start, run_meterwax, start_meterwax, table_rows, wait_for

pytestmark = pytest.mark.kafka

FIRST = {
    "meters": [
        {"name": "requests", "event_meter": "api_calls", "aggregation": "count"},
        {"name": "cpu", "event_meter": "cpu_seconds", "aggregation": "sum"},
        {"name": "storage_now", "event_meter": "storage_gb_hours", "aggregation": "latest"},
    ]
}
SECOND = {
    "meters": [
        *FIRST["meters"][:2],
        {"name": "storage_now", "event_meter": "storage_gb_hours", "aggregation": "max"},
        {
            "name": "cpu_by_region",
            "event_meter": "cpu_seconds",
            "aggregation": "sum",
            "group_by": ["region"],
        },
    ]
}


def invoke(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_a_catalog_applied_mid_run_stops_the_flow_and_nothing_depends_on_when(
    tmp_path, bootstrap, cluster, new_topic
):
    topic = new_topic(2)
    workload = Workload(
        events=3000,
        tenants=5,
        late=0.01,
        duplicates=0.02,
        invalid=0.0,
        seed=41,
        start=datetime(2026, 2, 1, 8, 0, tzinfo=UTC),
        events_per_second=5.0,
    )
    messages = list(generate(workload))
    lake, recovery = Lake(tmp_path / "lake"), tmp_path / "recovery"
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text(yaml.safe_dump(FIRST))
    second.write_text(yaml.safe_dump(SECOND))
    invoke("meters", "apply", str(first), "--lake", lake.root)

    produce_generated(cluster, topic, messages[:1500])
    run_args = (
        *("run", "--brokers", bootstrap, "--topic", topic, "--lake", lake.root),
        *("--recovery-dir", str(recovery), "--snapshot-interval", "300ms"),
    )
    log = tmp_path / "run.log"
    flow = start_meterwax(log, *run_args)
    try:
        wait_for(
            lambda: len(table_rows(lake, EVENTS) or []) > 500, what="counted events", process=flow
        )
        invoke("meters", "apply", str(second), "--lake", lake.root)
        produce_generated(cluster, topic, messages[1500:])
        flow.wait(timeout=120)
    finally:
        if flow.poll() is None:
            flow.kill()
    output = log.read_text()
    assert flow.returncode == 2, output
    assert (
        "meter catalog version 2 was applied to this lake while this process counts with "
        "version 1" in output.replace("\n", " ")
    )

    finished = run_meterwax(*run_args, "--stop-at-end", "--format", "json")
    assert finished.returncode == 0, finished.stdout + finished.stderr
    summary = json.loads(finished.stdout)
    assert summary["catalog_version"] == 2
    invoke("corrections", "--lake", lake.root, "--once")

    seen, counted = set(), []
    for m in messages:
        if m.intent in {"valid", "late"} and (m.tenant_id, m.event_id) not in seen:
            seen.add((m.tenant_id, m.event_id))
            counted.append(parse_event(m.payload))
    expected = meter_windows(counted, SECOND["meters"], timedelta(minutes=1))
    assert comparable(lake_windows(rows(lake, USAGE_WINDOWS))) == comparable(expected)
    # The restart resumed windows open under version 1: left to corrections, recomputed.
    reasons = {r["reason"] for r in rows(lake, WINDOW_CONFLICTS)}
    assert "catalog_change" in reasons
    assert reasons <= {"catalog_change", "second_writer"}
    invoke("reconcile", "--lake", lake.root)


def quantityless(event_id: str) -> bytes:
    """An OpenMeter-style CloudEvent: no quantity (quarantined without a catalog)."""
    return json.dumps(
        {
            "specversion": "1.0",
            "id": event_id,
            "source": "s",
            "subject": "acme",
            "type": "prompt",
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "data": {"tokens": 5},
        }
    ).encode()


def test_a_flow_on_an_older_catalog_commits_no_reject_after_the_new_one_and_replay_agrees(
    tmp_path, bootstrap, cluster, new_topic
):
    topic = new_topic(1)
    produce(cluster, topic, [Record(b"acme", quantityless("before"))])
    lake = Lake(tmp_path / "lake")
    run_args = (
        *("run", "--brokers", bootstrap, "--topic", topic, "--lake", lake.root),
        *("--state-dir", str(tmp_path / "state"), "--snapshot-interval", "200ms"),
    )
    flow = start_meterwax(tmp_path / "run.log", *run_args)
    try:
        wait_for(lambda: table_rows(lake, QUARANTINE), what="the first reject", process=flow)
        tokens = tmp_path / "tokens.yaml"
        tokens.write_text(
            yaml.safe_dump(
                {
                    "meters": [
                        {
                            "name": "tokens",
                            "event_meter": "prompt",
                            "aggregation": "sum",
                            "value": "data.tokens",
                        }
                    ]
                }
            )
        )
        invoke("meters", "apply", str(tokens), "--lake", lake.root)
        produce(cluster, topic, [Record(b"acme", quantityless(f"after{n}")) for n in range(3)])
        flow.wait(timeout=60)
    finally:
        if flow.poll() is None:
            flow.kill()
    assert flow.returncode == 2, (tmp_path / "run.log").read_text()
    # Nothing after the apply was decided under no catalog.
    assert [(r["origin_offset"], r["reason"]) for r in rows(lake, QUARANTINE)] == [
        (0, "missing_field")
    ]
    finished = run_meterwax(*run_args, "--stop-at-end")
    assert finished.returncode == 0, finished.stderr
    assert sorted(r["id"] for r in rows(lake, EVENTS)) == ["after0", "after1", "after2"]
    # A replay of the whole partition decides every offset as the main flow did.
    replay = replay_from_start(bootstrap, topic, lake, 1)
    assert replay.returncode == 0, replay.stderr
    assert "0 missing events counted, 0 missing rejects" in replay.stdout
    assert sorted(r["id"] for r in rows(lake, EVENTS)) == ["after0", "after1", "after2"]
    invoke("corrections", "--lake", lake.root, "--once")
    invoke("reconcile", "--lake", lake.root)
