"""Recovery stores and replays against the real broker."""

from __future__ import annotations

import json
import shutil
import signal
from datetime import UTC, datetime, timedelta

import pytest
from deltalake import DeltaTable

from meterwax.flows.recovery import source_positions
from meterwax.kafka.clients import Cluster
from meterwax.kafka.producer import Record
from meterwax.kafka.topics import ensure_topic
from meterwax.sinks.lake import Lake
from meterwax.sinks.schemas import EVENTS, QUARANTINE, USAGE_WINDOWS
from meterwax.synthetic.generator import Workload, generate
from tests.guarantees import check_g1_ledger
from tests.helpers import comparable_tables, event, rows
from tests.kafka_helpers import produce, produce_generated
from tests.processes import (
    replay_from_start,
    run_meterwax,
    start_meterwax,
    stop,
    table_rows,
    wait_for,
)

pytestmark = pytest.mark.kafka


def _run(bootstrap: str, topic: str, lake: Lake, *extra: str) -> list[str]:
    return ["run", "--brokers", bootstrap, "--topic", topic, "--lake", lake.root, *extra]


def test_a_killed_run_resumes_from_its_recovery_store(tmp_path, bootstrap, cluster, new_topic):
    topic = new_topic(2)
    messages = list(generate(Workload(events=6000, tenants=8, seed=31)))
    produce_generated(cluster, topic, messages)
    lake, recovery = Lake(tmp_path / "lake"), tmp_path / "recovery"
    args = _run(
        bootstrap,
        topic,
        lake,
        "--recovery-dir",
        str(recovery),
        "--snapshot-interval",
        "200ms",
        "--batch-size",
        "300",
    )
    process = start_meterwax(tmp_path / "first.log", *args)
    # Killed once the ledger holds rows and the store holds a source offset past the start:
    # a ledger commit alone can precede the first finished epoch, and then a restart rightly
    # begins at offset 0 again (the lake skips what it has) and proves nothing about resuming.
    wait_for(
        lambda: (
            len(table_rows(lake, EVENTS) or []) > 1000
            and any(offset > 0 for offset in source_positions(recovery).values())
        ),
        what="a first commit and a snapshot past it",
        process=process,
    )
    assert stop(process, signal.SIGKILL) == -signal.SIGKILL
    finished = run_meterwax(*args, "--stop-at-end", "--format", "json")
    assert finished.returncode == 0, finished.stderr
    assert json.loads(finished.stdout)["read"] < len(messages)  # it resumed, not restarted
    check_g1_ledger(lake, [m for m in messages if m.intent != "late"])


def test_a_lake_deleted_and_recreated_gets_a_fresh_default_store(
    tmp_path, bootstrap, cluster, new_topic
):
    # Default stores live under --state-dir, keyed by the lake's id: deleting the lake must
    # not leave a store behind that would skip everything the new lake needs.
    topic = new_topic(2)
    messages = list(generate(Workload(events=3000, tenants=6, seed=33)))
    produce_generated(cluster, topic, messages)
    lake = Lake(tmp_path / "lake")
    args = (*_run(bootstrap, topic, lake, "--state-dir", str(tmp_path / "state")), "--stop-at-end")
    assert run_meterwax(*args).returncode == 0
    first = comparable_tables(lake)
    shutil.rmtree(lake.root)
    again = run_meterwax(*args, "--format", "json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["read"] == len(messages)
    assert comparable_tables(lake) == first


def test_a_recovery_store_of_another_topic_is_refused(tmp_path, bootstrap, cluster, new_topic):
    first, second = new_topic(1), new_topic(1)
    for topic in (first, second):
        produce_generated(cluster, topic, list(generate(Workload(events=50, tenants=2))))
    store = str(tmp_path / "recovery")
    ok = run_meterwax(
        *_run(bootstrap, first, Lake(tmp_path / "a"), "--recovery-dir", store, "--stop-at-end")
    )
    assert ok.returncode == 0, ok.stderr
    refused = run_meterwax(
        *_run(bootstrap, second, Lake(tmp_path / "a"), "--recovery-dir", store, "--stop-at-end")
    )
    assert refused.returncode == 2
    assert "was made for another input" in refused.stderr
    assert f"kafka:{first}" in refused.stderr


@pytest.fixture
def metered(tmp_path, bootstrap, cluster, new_topic):
    topic = new_topic(2)
    messages = list(generate(Workload(events=4000, tenants=6, seed=41, late=0.0)))
    produce_generated(cluster, topic, messages)
    lake = Lake(tmp_path / "lake")
    done = run_meterwax(*_run(bootstrap, topic, lake, "--stop-at-end", "--no-recovery"))
    assert done.returncode == 0, done.stderr
    return topic, lake, messages


def _replay(bootstrap: str, topic: str, lake: Lake, *extra: str):
    return replay_from_start(bootstrap, topic, lake, 2, "--format", "json", *extra)


def test_replaying_a_fully_counted_range_changes_nothing(bootstrap, metered):
    topic, lake, _ = metered
    before = comparable_tables(lake)
    versions = {
        spec.name: DeltaTable(lake.uri(spec)).version()
        for spec in (EVENTS, USAGE_WINDOWS, QUARANTINE)
    }
    replayed = _replay(bootstrap, topic, lake)
    assert replayed.returncode == 0, replayed.stderr
    report = json.loads(replayed.stdout)
    assert report["inserted"] == 0
    assert report["quarantined"] == 0
    assert report["windows_changed"] == 0
    assert (
        report["read"]
        == report["already_counted"] + report["duplicates"] + report["already_quarantined"]
    )
    assert comparable_tables(lake) == before
    last_progress = replayed.stderr.splitlines()[-1]
    assert last_progress.startswith(f"replaying {topic} [")
    assert f"100% {report['read']:,}/{report['read']:,}" in last_progress
    assert versions == {
        spec.name: DeltaTable(lake.uri(spec)).version()
        for spec in (EVENTS, USAGE_WINDOWS, QUARANTINE)
    }


def test_replay_puts_back_what_the_ledger_lost_and_dry_run_writes_nothing(bootstrap, metered):
    topic, lake, messages = metered
    ledger = DeltaTable(lake.uri(EVENTS))
    # Simulate a damaged ledger (e.g. restored from an old backup): lift append-only, delete.
    ledger.alter.set_table_properties({"delta.appendOnly": "false"})
    victims = sorted({r["tenant_id"] for r in rows(lake, EVENTS)})[:2]
    ledger.delete(" OR ".join(f"tenant_id = '{t}'" for t in victims))
    lost = sum(1 for r in rows(lake, EVENTS) if r["tenant_id"] in victims)
    assert lost == 0
    assert run_meterwax("reconcile", "--lake", lake.root).returncode == 1

    version = DeltaTable(lake.uri(EVENTS)).version()
    dry = _replay(bootstrap, topic, lake, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["inserted"] > 0
    assert DeltaTable(lake.uri(EVENTS)).version() == version

    repaired = _replay(bootstrap, topic, lake)
    assert repaired.returncode == 0, repaired.stderr
    assert json.loads(repaired.stdout)["inserted"] == json.loads(dry.stdout)["inserted"]
    check_g1_ledger(lake, [m for m in messages if m.intent != "late"])
    assert run_meterwax("reconcile", "--lake", lake.root).returncode == 0
    again = _replay(bootstrap, topic, lake)
    assert json.loads(again.stdout)["inserted"] == 0


def test_replay_refuses_offsets_the_main_flow_has_not_passed(bootstrap, cluster, metered):
    topic, lake, _ = metered
    produce_generated(cluster, topic, list(generate(Workload(events=200, tenants=2, seed=5))))
    refused = _replay(bootstrap, topic, lake)
    assert refused.returncode == 2
    assert "ahead of the main flow" in refused.stderr


def test_replay_counts_nothing_the_main_flow_rejected_by_its_rules(
    tmp_path, bootstrap, cluster, new_topic
):
    # What the main flow quarantines depends on its rules and on what came before: replay
    # must decide exactly the same, with the rules the lake remembers, not its own defaults.
    topic = new_topic(1)
    now = datetime.now(UTC)
    on_time = [event(f"ok{n}", at=now - timedelta(seconds=60 - n)) for n in range(30)]
    rejected = [
        event("too-late", at=now - timedelta(hours=3)),  # past a 1-hour correction horizon
        event("future", at=now + timedelta(days=1)),  # a day ahead of its Kafka timestamp
        event("big", at=now, dimensions={"pad": "x" * 200}),  # over a 300-byte limit
    ]
    produce(cluster, topic, [Record(b"acme", payload) for payload in [*on_time, *rejected]])
    lake = Lake(tmp_path / "lake")
    rules = ("--correction-horizon", "1h", "--max-event-bytes", "300")
    done = run_meterwax(*_run(bootstrap, topic, lake, "--stop-at-end", "--no-recovery", *rules))
    assert done.returncode == 0, done.stderr
    reasons = sorted(r["reason"] for r in rows(lake, QUARANTINE))
    assert reasons == ["future_timestamp", "payload_too_large", "too_late"]
    before = comparable_tables(lake)

    replayed = run_meterwax(
        "replay", "--brokers", bootstrap, "--topic", topic, "--lake", lake.root,
        "--from-offsets", "0:0", "--format", "json",
    )  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr
    report = json.loads(replayed.stdout)
    assert (report["inserted"], report["quarantined"], report["windows_changed"]) == (0, 0, 0)
    assert report["already_quarantined"] == 3
    assert comparable_tables(lake) == before


def test_a_replay_after_a_crash_between_commits_quarantines_nothing_twice(
    tmp_path, bootstrap, cluster, new_topic
):
    topic = new_topic(1)
    produce(
        cluster,
        topic,
        [
            Record(b"t", event("e1", at=1)),
            Record(b"t", b"this is not json"),
            Record(b"t", event("e2", at=2)),
            Record(b"t", event("e3", quantity="-3", at=3)),
        ],
    )
    lake = Lake(tmp_path / "lake")
    args = ("run", "--brokers", bootstrap, "--topic", topic, "--lake", lake.root)
    args += ("--stop-at-end", "--state-dir", str(tmp_path / "state"))
    crashed = run_meterwax(*args, env_extra={"METERWAX_CRASH_AT": "sink.after_windows"})
    assert crashed.returncode == -signal.SIGKILL
    # The operator repairs what it can while the main flow is down…
    replay = run_meterwax(
        "replay",
        "--brokers",
        bootstrap,
        "--topic",
        topic,
        "--lake",
        lake.root,
        "--from-offsets",
        "0:0",
    )
    # …and then restarts it.
    assert run_meterwax(*args).returncode == 0
    quarantined = [(r["origin_offset"], r["reason"]) for r in rows(lake, QUARANTINE)]
    assert sorted(quarantined) == [(1, "malformed_json"), (3, "invalid_quantity")], (
        replay.stdout + replay.stderr
    )


def test_a_topic_deleted_and_recreated_under_its_name_is_refused_not_skipped(
    tmp_path, bootstrap, cluster, new_topic
):
    topic = new_topic(1)
    produce(cluster, topic, [Record(b"t", event(f"old{n}", at=n)) for n in range(5)])
    lake = Lake(tmp_path / "lake")
    args = ("run", "--brokers", bootstrap, "--topic", topic, "--lake", lake.root)
    args += ("--stop-at-end", "--state-dir", str(tmp_path / "state"))
    assert run_meterwax(*args).returncode == 0
    for future in cluster.admin.delete_topics([topic], operation_timeout=30).values():
        future.result()
    recreated = Cluster(bootstrap)
    wait_for(lambda: recreated.partitions(topic) is None, what="the topic to be gone")
    ensure_topic(recreated, topic, partitions=1, replication_factor=1, retention_us=10**12)
    produce(recreated, topic, [Record(b"t", event(f"new{n}", at=10 + n)) for n in range(5)])
    for extra in ((), ("--no-recovery",)):
        again = run_meterwax(*args, *extra)
        assert again.returncode == 2, again.stdout + again.stderr
        assert "was deleted and recreated" in again.stderr
    assert sorted(r["id"] for r in rows(lake, EVENTS)) == [f"old{n}" for n in range(5)]
