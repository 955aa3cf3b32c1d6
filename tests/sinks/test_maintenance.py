"""``meterwax maintain``: compaction, vacuum and checkpoints on real Delta tables.

The central test runs maintenance in a loop while ``meterwax run`` writes, then checks the lake
exactly against the generator's intents and reads a version from before maintenance started.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner
from deltalake import DeltaTable

from meterwax.cli.main import main
from meterwax.errors import ConfigError
from meterwax.sinks.delta_writes import CommitStats
from meterwax.sinks.lake import Lake
from meterwax.sinks.maintenance import RETENTION_FLOOR_US, Plan, maintain_table
from meterwax.sinks.schemas import (
    ALL_TABLES,
    EVENTS,
    LATE_EVENTS,
    QUARANTINE,
    USAGE_WINDOWS,
)
from meterwax.sinks.windows_table import merge_revised_totals
from meterwax.synthetic.generator import Workload, generate
from tests.helpers import generated_windows, rows, run_cli, window_totals, without, write

DAY_MS = 86_400_000


def ledger_keys(table: DeltaTable) -> Counter:
    return Counter(
        (r["tenant_id"], r["id"])
        for r in table.to_pyarrow_table(columns=["tenant_id", "id"]).to_pylist()
    )


@pytest.fixture(scope="module")
def small_files_template(tmp_path_factory) -> Path:
    """A lake written in many small commits (one per 50 messages)."""
    root = tmp_path_factory.mktemp("small")
    source = write(root / "events.jsonl", list(generate(Workload(events=6000, tenants=8))))
    run_cli(
        *("--input", str(source), "--lake", str(root / "lake")),
        *("--batch-size", "50", "--commit-interval", "1ms"),
    )
    return root / "lake"


@pytest.fixture
def small_files_lake(small_files_template, tmp_path) -> Lake:
    """A private copy of the template lake, for tests that change it."""
    return Lake(shutil.copytree(small_files_template, tmp_path / "lake"))


@pytest.mark.slow
def test_maintenance_while_the_flow_runs_loses_nothing(tmp_path):
    messages = list(generate(Workload(events=200_000, tenants=50, seed=13)))
    source = write(tmp_path / "big.jsonl", messages)
    lake = Lake(tmp_path / "lake")
    flow = subprocess.Popen(
        [
            *(sys.executable, "-m", "meterwax", "run", "--input", str(source)),
            *("--lake", lake.root, "--commit-interval", "200ms", "--batch-size", "500"),
            *("--format", "json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Wait (with a deadline) for the flow's first ledger and window commits.
        deadline = time.monotonic() + 60
        while not (
            lake.exists(EVENTS)
            and lake.exists(USAGE_WINDOWS)
            and lake.table(EVENTS).version() >= 2
            and lake.table(USAGE_WINDOWS).version() >= 2
        ):
            assert flow.poll() is None, flow.communicate()
            assert time.monotonic() < deadline, "the flow wrote nothing within 60 s"
            time.sleep(0.02)
        early = {spec.name: lake.table(spec) for spec in (EVENTS, USAGE_WINDOWS)}
        early_ledger = ledger_keys(early["events"])
        early_windows = without(early["usage_windows"].to_pyarrow_table().to_pylist())

        rounds = compacted_while_running = retried = 0
        while flow.poll() is None:
            for spec in ALL_TABLES:
                report = maintain_table(lake, spec, Plan())  # compact, vacuum (floor), checkpoint
                retried += report.conflicts_retried
                if flow.poll() is None:
                    compacted_while_running += report.files_compacted or 0
            rounds += 1
        out, err = flow.communicate(timeout=60)
    finally:
        if flow.poll() is None:
            flow.kill()
            flow.wait()
    assert flow.returncode == 0, err
    summary = json.loads(out)
    print(f"{rounds} maintenance rounds, {retried} conflicts retried by maintenance; {summary}")
    assert rounds >= 3, "the flow finished before maintenance could overlap it: use more events"
    assert compacted_while_running > 0

    intents = Counter(m.intent for m in messages)
    assert summary["accounted"] is True
    assert summary["counted"] == intents["valid"]
    assert ledger_keys(lake.table(EVENTS)) == Counter(
        (m.tenant_id, m.event_id) for m in messages if m.intent == "valid"
    )
    assert window_totals(lake) == generated_windows(messages)
    assert sorted(r["id"] for r in rows(lake, LATE_EVENTS)) == sorted(
        m.event_id for m in messages if m.intent == "late"
    )
    assert len(rows(lake, QUARANTINE)) == intents["invalid"]
    history = [c["operation"] for c in lake.table(EVENTS).history()]
    assert "OPTIMIZE" in history and "WRITE" in history

    # Time travel to versions written before maintenance began still reads, unchanged.
    ledger_then = DeltaTable(lake.uri(EVENTS), version=early["events"].version())
    windows_then = DeltaTable(lake.uri(USAGE_WINDOWS), version=early["usage_windows"].version())
    assert ledger_keys(ledger_then) == early_ledger
    assert without(windows_then.to_pyarrow_table().to_pylist()) == early_windows


def test_compaction_rewrites_small_files_and_keeps_every_row(small_files_lake, tmp_path):
    lake = small_files_lake
    before = {spec.name: without(rows(lake, spec)) for spec in ALL_TABLES}
    report = maintain_table(lake, EVENTS, Plan(vacuum=False, checkpoint=False))
    windows = maintain_table(lake, USAGE_WINDOWS, Plan(vacuum=False, checkpoint=False))
    assert report.files_before > 20
    assert report.files_compacted == report.files_before
    partitions = {
        r["event_date"]
        for r in lake.table(EVENTS).to_pyarrow_table(columns=["event_date"]).to_pylist()
    }
    assert report.files_after == report.files_written == len(partitions)
    assert windows.files_after < windows.files_before
    assert {spec.name: without(rows(lake, spec)) for spec in ALL_TABLES} == before
    again = maintain_table(lake, EVENTS, Plan(vacuum=False, checkpoint=False))
    assert again.files_compacted == 0 and again.version_after == again.version_before


def _age_removes(table_path: str, version: int, days_by_index) -> list[str]:
    """Pretend the removes of one commit happened ``days_by_index(i)`` days ago."""
    log = Path(table_path, "_delta_log", f"{version:020d}.json")
    actions = [json.loads(line) for line in log.read_text().splitlines()]
    now_ms = int(time.time() * 1000)
    paths = []
    for index, action in enumerate(a for a in actions if "remove" in a):
        action["remove"]["deletionTimestamp"] = now_ms - days_by_index(index) * DAY_MS
        paths.append(action["remove"]["path"])
    log.write_text("".join(json.dumps(a) + "\n" for a in actions))
    return paths


def test_vacuum_deletes_only_files_removed_before_the_floor(small_files_lake):
    lake = small_files_lake
    before_compaction = lake.table(EVENTS).version()
    rows_before = without(rows(lake, EVENTS))
    maintain_table(lake, EVENTS, Plan(vacuum=False, checkpoint=False))
    compaction = lake.table(EVENTS).version()
    removed = _age_removes(lake.uri(EVENTS), compaction, lambda i: 8 if i % 2 else 6)
    assert len(removed) >= 20

    report = maintain_table(lake, EVENTS, Plan(compact=False, checkpoint=False))

    assert report.files_vacuumed == len(removed) // 2
    assert report.vacuum_retention == "168h"
    for index, path in enumerate(removed):
        assert Path(lake.uri(EVENTS), path).exists() == (index % 2 == 0)
    assert without(rows(lake, EVENTS)) == rows_before
    # What the floor protects: a version whose files were vacuumed cannot be read any more.
    with pytest.raises(OSError, match=r"not found|No such file|Object at location"):
        DeltaTable(lake.uri(EVENTS), version=before_compaction).to_pyarrow_table()


def test_retention_below_the_floor_is_refused(small_files_lake):
    result = CliRunner().invoke(
        main, ["maintain", "--lake", small_files_lake.root, "--vacuum", "--retain", "6d"]
    )
    assert result.exit_code == 2
    assert "--retain 6d is below the 7d retention floor" in result.output
    with pytest.raises(ConfigError, match="7d retention floor"):
        Plan(retain_us=RETENTION_FLOOR_US - 1)


def test_checkpoint_cleans_only_logs_older_than_the_log_retention(small_files_lake):
    lake = small_files_lake
    log_dir = Path(lake.uri(EVENTS), "_delta_log")
    assert lake.table(EVENTS).version() >= 12
    DeltaTable(lake.uri(EVENTS), version=10).create_checkpoint()
    month_ago = time.time() - 31 * 86400
    for version in range(11):
        os.utime(log_dir / f"{version:020d}.json", (month_ago, month_ago))

    report = maintain_table(lake, EVENTS, Plan(compact=False, vacuum=False))

    assert report.checkpoint_version == report.version_after
    assert report.log_files_deleted == 10  # versions 0–9: older than 30 days and a checkpoint
    assert not (log_dir / f"{9:020d}.json").exists()
    assert (log_dir / "_last_checkpoint").exists()
    assert DeltaTable(lake.uri(EVENTS), version=10).to_pyarrow_table().num_rows > 0
    with pytest.raises(Exception, match=r"version|log|segment"):
        DeltaTable(lake.uri(EVENTS), version=3).to_pyarrow_table()


def test_log_cleanup_is_skipped_when_the_table_keeps_logs_less_than_the_floor(tmp_path):
    source = write(tmp_path / "e.jsonl", list(generate(Workload(events=2000, tenants=2))))
    lake = Lake(tmp_path / "lake")
    run_cli("--input", str(source), "--lake", lake.root, "--batch-size", "100")
    table = lake.table(LATE_EVENTS)
    table.alter.set_table_properties({"delta.logRetentionDuration": "interval 1 days"})
    table.create_checkpoint()
    log_dir = Path(lake.uri(LATE_EVENTS), "_delta_log")
    month_ago = time.time() - 31 * 86400
    for log in log_dir.glob("*.json"):
        os.utime(log, (month_ago, month_ago))
    count = len(list(log_dir.glob("*.json")))

    report = maintain_table(lake, LATE_EVENTS, Plan(compact=False, vacuum=False))

    assert report.log_files_deleted is None
    assert any("interval 1 days" in note for note in report.notes)
    assert len(list(log_dir.glob("*.json"))) == count


def test_the_command_has_help_with_examples_and_the_floor():
    result = CliRunner().invoke(main, ["maintain", "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output and "The retention floor is 7d" in result.output


def test_a_lake_without_tables_is_an_error_not_an_empty_report(tmp_path):
    result = CliRunner().invoke(main, ["maintain", "--lake", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert (
        result.output.strip()
        == f"error: lake {tmp_path} has no meterwax tables: nothing to maintain"
    )


def test_the_command_reports_each_table(small_files_lake):
    result = CliRunner().invoke(
        main, ["maintain", "--lake", small_files_lake.root, "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    reports = json.loads(result.output)
    assert [r["table"] for r in reports] == [spec.name for spec in ALL_TABLES]
    for report in reports:
        assert report["files_after"] <= max(report["files_before"], 1)
        assert report["vacuum_retention"] == "168h"
        assert report["checkpoint_version"] == report["version_after"]
    text = CliRunner().invoke(
        main, ["maintain", "--lake", small_files_lake.root, "--compact", "--table", "events"]
    )
    assert text.exit_code == 0, text.output
    lines = text.output.strip().splitlines()
    assert lines[0].split()[:3] == ["table", "files", "MiB"]
    assert len(lines) == 3 and lines[2].startswith("events")
    assert lines[2].split()[10:12] == ["-", "-"]  # neither vacuumed nor checkpointed


def test_compaction_racing_window_corrections_keeps_the_latest_revision(small_files_lake):
    # The correction flow MERGEs revised totals into usage_windows (rewriting files) while
    # compaction rewrites the same files: either commit may lose and retry; none may be lost.
    lake = small_files_lake
    original = lake.table(USAGE_WINDOWS).to_pyarrow_table()
    revised_keys = original.slice(0, 40).to_pylist()
    stop = threading.Event()
    merge_stats = CommitStats()
    revisions: list[int] = []
    failures: list[BaseException] = []

    def correct() -> None:
        table = lake.table(USAGE_WINDOWS)
        try:
            while not stop.is_set():
                revision = len(revisions) + 1
                batch = [
                    {**row, "revision": revision, "event_count": row["event_count"] + revision}
                    for row in revised_keys
                ]
                merge_revised_totals(
                    table,
                    pa.Table.from_pylist(batch, schema=original.schema),
                    transaction=None,
                    stats=merge_stats,
                )
                revisions.append(revision)
        except BaseException as error:  # surfaced below
            failures.append(error)

    corrector = threading.Thread(target=correct)
    corrector.start()
    compactions = 0
    deadline = time.monotonic() + 3
    try:
        while time.monotonic() < deadline or len(revisions) < 3:
            assert time.monotonic() < deadline + 30 and not failures, failures
            maintain_table(lake, USAGE_WINDOWS, Plan(vacuum=False, checkpoint=False))
            compactions += 1
    finally:
        stop.set()
        corrector.join()
    assert not failures, failures
    print(f"{len(revisions)} corrections, {compactions} compactions, {merge_stats.retries} retries")

    last = revisions[-1]
    expected = {
        (r["tenant_id"], r["meter"], r["window_start"]): (r["event_count"], r["revision"])
        for r in original.to_pylist()
    }
    for row in revised_keys:
        key = (row["tenant_id"], row["meter"], row["window_start"])
        expected[key] = (row["event_count"] + last, last)
    assert {
        (r["tenant_id"], r["meter"], r["window_start"]): (r["event_count"], r["revision"])
        for r in rows(lake, USAGE_WINDOWS)
    } == expected
