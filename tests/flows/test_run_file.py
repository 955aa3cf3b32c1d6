"""``meterwax run`` on generated files, checked against an independent computation."""

from __future__ import annotations

import json
import shutil
import signal
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from deltalake import DeltaTable

from meterwax.cli.main import main
from meterwax.sinks.lake import Lake
from meterwax.sinks.schemas import (
    EVENTS,
    LATE_EVENTS,
    QUARANTINE,
    USAGE_WINDOWS,
    WINDOW_CONFLICTS,
)
from meterwax.synthetic.generator import Generated, Workload, generate
from tests.guarantees import check_g1_ledger
from tests.helpers import (
    comparable_tables,
    event,
    generated_windows,
    ledger_totals,
    rows,
    run_cli,
    window_totals,
    write,
)
from tests.processes import run_meterwax

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WINDOW = timedelta(minutes=1)


@pytest.fixture(scope="module")
def workload_messages() -> list[Generated]:
    return list(generate(Workload(events=20_000, tenants=30, seed=11)))


def test_run_counts_every_valid_event_exactly_once(tmp_path, workload_messages):
    source = write(tmp_path / "events.jsonl", workload_messages)
    lake = Lake(tmp_path / "lake")
    summary = run_cli("--input", str(source), "--lake", lake.root)

    intents = Counter(m.intent for m in workload_messages)
    assert summary["read"] == len(workload_messages)
    assert summary["counted"] == intents["valid"]
    assert summary["duplicates"] == intents["duplicate"]
    assert summary["late"] == intents["late"]
    assert summary["quarantined"] == intents["invalid"]
    assert summary["accounted"] is True

    ledger = rows(lake, EVENTS)
    keys = Counter((r["tenant_id"], r["id"]) for r in ledger)
    assert max(keys.values()) == 1
    assert set(keys) == {
        (m.tenant_id, m.event_id) for m in workload_messages if m.intent == "valid"
    }

    assert window_totals(lake) == generated_windows(workload_messages)
    assert window_totals(lake) == ledger_totals(lake, WINDOW)
    assert {r["revision"] for r in rows(lake, USAGE_WINDOWS)} == {0}

    late = rows(lake, LATE_EVENTS)
    assert sorted(r["id"] for r in late) == sorted(
        m.event_id for m in workload_messages if m.intent == "late"
    )

    quarantined = rows(lake, QUARANTINE)
    invalid_lines = [i + 1 for i, m in enumerate(workload_messages) if m.intent == "invalid"]
    assert sorted(r["line_number"] for r in quarantined) == invalid_lines
    for row in quarantined:
        assert row["raw"] == workload_messages[row["line_number"] - 1].payload
        assert row["reason"] and row["detail"]


def test_rerunning_the_same_file_changes_nothing(tmp_path, workload_messages):
    source = write(tmp_path / "events.jsonl", workload_messages[:5000])
    lake = Lake(tmp_path / "lake")
    first = run_cli("--input", str(source), "--lake", lake.root)
    assert first["already_committed"] == first["windows_already_written"] == 0
    before = comparable_tables(lake)
    again = run_cli("--input", str(source), "--lake", lake.root, "--batch-size", "333")
    assert comparable_tables(lake) == before
    # The summary says so: the same decisions, every counted event already in the lake.
    assert again["counted"] == first["counted"]
    assert again["already_committed"] == first["counted"]
    assert again["windows_already_written"] == first["windows_written"] > 0
    assert again["delta_commits"] == 0


def test_one_and_two_workers_write_identical_tables(tmp_path):
    # Two files are two partitions; like Kafka partitions keyed by tenant, each tenant is in one.
    north = Workload(events=6000, tenants=10, seed=1, tenant_prefix="north")
    south = Workload(events=6000, tenants=10, seed=2, tenant_prefix="south")
    first = write(tmp_path / "a.jsonl", list(generate(north)))
    second = write(tmp_path / "b.jsonl", list(generate(south)))
    lakes = []
    for workers, batch in ((1, 10_000), (2, 257)):
        lake = Lake(tmp_path / f"lake-{workers}")
        run_cli(
            "--input",
            str(first),
            "--input",
            str(second),
            "--lake",
            lake.root,
            "--workers",
            str(workers),
            "--batch-size",
            str(batch),
            "--commit-interval",
            "100ms",
        )
        lakes.append(lake)
    assert comparable_tables(lakes[0]) == comparable_tables(lakes[1])


def test_the_console_script_runs_and_prints_a_summary(tmp_path):
    source = write(tmp_path / "events.jsonl", list(generate(Workload(events=500, tenants=3))))
    completed = run_meterwax("run", "--input", str(source), "--lake", str(tmp_path / "lake"))
    assert completed.returncode == 0, completed.stderr
    assert "events read" in completed.stdout
    assert "read = counted + duplicates + late + quarantined: ✓" in completed.stdout


def test_a_lake_refuses_a_different_window_length(tmp_path):
    source = write(tmp_path / "events.jsonl", list(generate(Workload(events=100, tenants=2))))
    run_cli("--input", str(source), "--lake", str(tmp_path / "lake"))
    result = CliRunner().invoke(
        main, ["run", "--input", str(source), "--lake", str(tmp_path / "lake"), "--window", "5m"]
    )
    assert result.exit_code == 2
    assert "holds 1m windows; this run asks for 5m" in result.output


def test_a_lake_directory_that_cannot_be_created_is_one_clear_error(tmp_path):
    source = write(tmp_path / "events.jsonl", list(generate(Workload(events=10, tenants=1))))
    lake = tmp_path / "events.jsonl" / "lake"  # under a file
    result = CliRunner().invoke(main, ["run", "--input", str(source), "--lake", str(lake)])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (
        f"error: cannot create the lake directory {lake}: Not a directory"
    )


def test_bad_settings_name_the_flag_and_the_value(tmp_path, monkeypatch):
    source = write(tmp_path / "events.jsonl", [])
    result = CliRunner().invoke(main, ["run", "--input", str(source), "--window", "soon"])
    assert result.exit_code == 2
    assert "--window" in result.output and "'soon'" in result.output
    monkeypatch.setenv("METERWAX_ALLOWED_LATENESS", "forever")
    result = CliRunner().invoke(main, ["run", "--input", str(source)])
    assert result.exit_code == 2
    assert "METERWAX_ALLOWED_LATENESS" in result.output


def test_environment_variables_are_used_when_no_flag_is_given(tmp_path, monkeypatch):
    source = write(tmp_path / "events.jsonl", list(generate(Workload(events=200, tenants=2))))
    monkeypatch.setenv("METERWAX_LAKE", str(tmp_path / "env-lake"))
    monkeypatch.setenv("METERWAX_WINDOW", "PT5M")
    result = CliRunner().invoke(main, ["run", "--input", str(source)])
    assert result.exit_code == 0, result.output
    assert Lake(tmp_path / "env-lake").window_us() == 5 * 60 * 1_000_000


@pytest.mark.parametrize("command", ["run", "demo", "usage"])
def test_every_command_has_help_with_examples(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output


def test_usage_prints_exact_window_totals(tmp_path):
    messages = list(generate(Workload(events=3000, tenants=4, seed=5)))
    source = write(tmp_path / "events.jsonl", messages)
    lake = tmp_path / "lake"
    run_cli("--input", str(source), "--lake", str(lake))
    tenant = messages[0].tenant_id
    result = CliRunner().invoke(
        main, ["usage", "--lake", str(lake), "--tenant", tenant, "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    expected = {k: v for k, v in generated_windows(messages).items() if k[0] == tenant}
    assert {
        (r["tenant_id"], r["meter"], r["window_start"]): (Decimal(r["quantity"]), r["event_count"])
        for r in listed
    } == {(t, m, s.isoformat().replace("+00:00", "Z")): v for (t, m, s), v in expected.items()}


def test_a_tenant_spread_over_two_partitions_is_flagged_not_lost(tmp_path):
    # Both files carry the same tenants: each window gets on-time events from two partitions.
    first = write(tmp_path / "a.jsonl", list(generate(Workload(events=3000, tenants=3, seed=1))))
    second = write(tmp_path / "b.jsonl", list(generate(Workload(events=3000, tenants=3, seed=2))))
    lake = Lake(tmp_path / "lake")
    summary = run_cli("--input", str(first), "--input", str(second), "--lake", lake.root)
    conflicts = rows(lake, WINDOW_CONFLICTS)
    windows = window_totals(lake)
    assert conflicts
    assert summary["read"] == 6000
    # Every window row holds exactly one partition's partial total; the other partial is
    # recorded for the correction flow, which recomputes the window from the ledger.
    for conflict in conflicts:
        key = (conflict["tenant_id"], conflict["meter"], conflict["window_start"])
        assert windows[key] != (conflict["partial_quantity"], conflict["partial_event_count"])
    ledger = ledger_totals(lake, WINDOW)
    flagged = {(c["tenant_id"], c["meter"], c["window_start"]) for c in conflicts}
    assert {k for k in ledger if ledger[k] != windows.get(k)} <= flagged


@pytest.mark.parametrize(
    "point", ["sink.after_events", "sink.after_windows", "sink.after_late", "sink.snapshot:3"]
)
def test_a_run_killed_between_two_commits_is_finished_exactly_by_a_rerun(tmp_path, point):
    source = write(
        tmp_path / "events.jsonl", list(generate(Workload(events=8000, tenants=6, seed=4)))
    )
    reference, crashed = Lake(tmp_path / "reference"), Lake(tmp_path / "crashed")
    run_cli("--input", str(source), "--lake", reference.root, "--batch-size", "500")
    args = ("run", "--input", str(source), "--lake", crashed.root)
    # Epochs of 10 ms: the 8,000 events take well over the three epochs that "sink.snapshot:3"
    # needs (about 160 ms at 50k events/s), so the crash point is always reached.
    args += ("--batch-size", "500", "--commit-interval", "10ms")
    killed = run_meterwax(*args, env_extra={"METERWAX_CRASH_AT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert f"crash point {point.split(':')[0]} reached" in killed.stderr
    rerun = run_meterwax(*args, "--format", "json")
    assert rerun.returncode == 0, rerun.stderr
    assert comparable_tables(crashed) == comparable_tables(reference)
    # What the killed run committed, the rerun reports as already there, not as new counts.
    summary = json.loads(rerun.stdout)
    assert summary["counted"] == len(rows(reference, EVENTS))
    assert 0 < summary["already_committed"] <= summary["counted"]


def test_a_small_file_that_grew_is_continued_not_counted_again(tmp_path):
    messages = list(generate(Workload(events=300, tenants=3, seed=9)))
    source = write(tmp_path / "events.jsonl", messages[:100])
    assert source.stat().st_size < 64 * 1024  # under the old fingerprint's reach
    lake = Lake(tmp_path / "lake")
    first = run_cli("--input", str(source), "--lake", lake.root)
    write(source, messages)  # the same file, grown
    second = run_cli("--input", str(source), "--lake", lake.root)
    assert first["partitions"] == second["partitions"]  # one input, continued
    assert second["already_committed"] == first["counted"]
    check_g1_ledger(lake, [m for m in messages if m.intent != "late"])


@pytest.mark.parametrize("where", ["first line", "a later line", "shorter"])
def test_a_file_whose_counted_part_changed_is_refused(tmp_path, where):
    messages = list(generate(Workload(events=200, tenants=3, seed=10)))
    source = write(tmp_path / "events.jsonl", messages)
    lake = Lake(tmp_path / "lake")
    run_cli("--input", str(source), "--lake", lake.root)
    versions = DeltaTable(lake.uri(EVENTS)).version()
    lines = source.read_bytes().splitlines(keepends=True)
    if where == "first line":
        # Another first line is another input: counted as such, not refused.
        source.write_bytes(b"".join([lines[0].replace(b'"id":"', b'"id":"x'), *lines[1:]]))
        assert run_cli("--input", str(source), "--lake", lake.root)["read"] == 200
        return
    if where == "a later line":
        lines[150] = lines[150].replace(b'"tenant_id":"', b'"tenant_id":"z')
    else:
        lines = lines[:120]
    source.write_bytes(b"".join(lines))
    result = CliRunner().invoke(main, ["run", "--input", str(source), "--lake", lake.root])
    assert result.exit_code == 2
    assert "changed since it was metered" in result.output
    assert DeltaTable(lake.uri(EVENTS)).version() == versions  # nothing written


def test_a_small_file_metered_by_0_1_that_grew_is_continued(tmp_path):
    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "small-file-0.1.0"
    shutil.copytree(fixture, tmp_path / "work")
    work = tmp_path / "work"
    messages = list(generate(Workload(events=60, tenants=3, seed=5)))
    source = work / "events.jsonl"
    source.write_bytes(source.read_bytes() + (work / "appended.jsonl").read_bytes())
    summary = run_cli("--input", str(source), "--lake", str(work / "lake"))
    assert summary["partitions"] == ["file:events.jsonl@0824e1264829#0"]  # the name 0.1 gave it
    assert summary["already_committed"] == 40
    check_g1_ledger(Lake(work / "lake"), [m for m in messages if m.intent != "late"])


def test_a_last_line_without_newline_that_grew_is_refused(tmp_path):
    source = tmp_path / "f.jsonl"
    source.write_bytes(event("e1", at=5) + b"\n" + event("e2", at=120)[:-1])  # half written
    lake = Lake(tmp_path / "lake")
    first = run_cli("--input", str(source), "--lake", lake.root)
    assert first["quarantined"] == 1  # the partial line, as malformed JSON
    source.write_bytes(source.read_bytes() + b"}\n")  # the producer finishes the line
    result = CliRunner().invoke(main, ["run", "--input", str(source), "--lake", lake.root])
    assert result.exit_code == 2, result.output
    assert "changed since it was metered" in result.output
    assert "no newline" in result.output


def test_the_same_file_under_another_name_is_refused(tmp_path):
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"".join(event(f"e{n}", at=n) + b"\n" for n in range(3)))
    alias = tmp_path / "alias.jsonl"
    alias.symlink_to(source)
    lake = Lake(tmp_path / "lake")
    both = CliRunner().invoke(
        main, ["run", "--input", str(source), "--input", str(alias), "--lake", lake.root]
    )
    assert both.exit_code == 2 and "are the same file" in both.output, both.output
    run_cli("--input", str(source), "--lake", lake.root)
    rotated = source.rename(tmp_path / "events.jsonl.1")
    again = CliRunner().invoke(main, ["run", "--input", str(rotated), "--lake", lake.root])
    assert again.exit_code == 2, again.output
    assert "same first line as events.jsonl" in again.output
    assert len(rows(lake, EVENTS)) == 3


def test_a_line_longer_than_the_limit_is_quarantined_without_reading_it_whole(tmp_path):
    source = tmp_path / "f.jsonl"
    huge = b'{"id": "' + b"x" * (3 * 1024 * 1024) + b'"}'
    source.write_bytes(event("e1", at=1) + b"\n" + huge + b"\n" + event("e2", at=2) + b"\n")
    lake = Lake(tmp_path / "lake")
    summary = run_cli("--input", str(source), "--lake", lake.root, "--max-event-bytes", "4096")
    assert (summary["counted"], summary["quarantined"]) == (2, 1)
    [row] = rows(lake, QUARANTINE)
    assert row["reason"] == "payload_too_large" and row["line_number"] == 2
    assert len(row["raw"]) <= 64 * 1024  # the start of the line, not all of it
    assert f"{len(huge):,} bytes" in row["detail"]
    rerun = run_cli("--input", str(source), "--lake", lake.root, "--max-event-bytes", "4096")
    assert rerun["already_committed"] == 2  # the same file, continued


def test_a_line_of_vertical_tabs_is_a_message_not_a_blank_line(tmp_path):
    source = tmp_path / "f.jsonl"
    source.write_bytes(event("e1", at=1) + b"\n\x0b\n\x0c\x0c\n\n  \n")
    lake = Lake(tmp_path / "lake")
    summary = run_cli("--input", str(source), "--lake", lake.root)
    assert (summary["read"], summary["quarantined"]) == (3, 2)
