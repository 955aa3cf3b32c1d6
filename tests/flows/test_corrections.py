"""The correction flow end to end: exact totals, audit trail, reconcile, crash-safety."""

from __future__ import annotations

import itertools
import json
import shutil
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from deltalake import DeltaTable

from meterwax.cli.main import main
from meterwax.durations import parse_duration_us
from meterwax.operators.timeline import from_micros, to_micros
from meterwax.sinks.corrections_sink import CorrectionWork, apply_work
from meterwax.sinks.corrections_store import CorrectionStore
from meterwax.sinks.lake import Lake
from meterwax.sinks.schemas import (
    EVENTS,
    QUARANTINE,
    USAGE_CORRECTIONS,
    USAGE_WINDOWS,
    VOIDED_EVENTS,
    WINDOW_CONFLICTS,
)
from meterwax.synthetic.generator import Generated, Workload, generate
from tests.helpers import (
    T0,
    event,
    generated_windows,
    ledger_totals,
    rows,
    window_totals,
    write,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WINDOW = timedelta(minutes=1)

# Late events up to two days back, retries long after their originals (beyond the shortest
# dedupe horizon, so many arrive late and are recognised against the ledger), some events
# beyond the correction horizon and some from the future.
WORKLOAD = Workload(
    events=12_000,
    tenants=15,
    seed=23,
    late=0.03,
    max_late_s=2 * 86400,
    duplicates=0.04,
    max_retry_delay=3_000,
    events_per_second=20,
    too_late=0.003,
    future=0.003,
    invalid=0.002,
)
RUN_FLAGS = ("--dedupe-horizon", "90s")  # the minimum: window (1m) + allowed lateness (30s)


def invoke(*args: str, expect: int = 0) -> str:
    """The command's stdout (progress and errors go to stderr)."""
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result.stdout


@pytest.fixture(scope="module")
def messages() -> list[Generated]:
    return list(generate(WORKLOAD))


@pytest.fixture
def corrected_lake(tmp_path, messages) -> Lake:
    source = write(tmp_path / "events.jsonl", messages)
    lake = Lake(tmp_path / "lake")
    invoke("run", "--input", str(source), "--lake", lake.root, *RUN_FLAGS)
    invoke("corrections", "--lake", lake.root, "--once")
    return lake


def test_after_run_and_corrections_every_window_equals_the_independent_total(
    corrected_lake, messages
):
    assert window_totals(corrected_lake) == generated_windows(messages, late_too=True)
    assert window_totals(corrected_lake) == ledger_totals(corrected_lake, WINDOW)
    keys = Counter((r["tenant_id"], r["id"]) for r in rows(corrected_lake, EVENTS))
    assert max(keys.values()) == 1


def test_every_input_line_is_accounted_for(tmp_path, messages):
    source = write(tmp_path / "events.jsonl", messages)
    lake = tmp_path / "lake"
    run = json.loads(
        invoke("run", "--input", str(source), "--lake", str(lake), *RUN_FLAGS, "--format", "json")
    )
    fixed = json.loads(invoke("corrections", "--lake", str(lake), "--once", "--format", "json"))
    intents = Counter(m.intent for m in messages)
    assert run["read"] == len(messages)
    assert run["late"] == fixed["late_events_read"]
    assert fixed["counted"] + fixed["duplicates"] == fixed["late_events_read"]
    ledger = run["counted"] + fixed["counted"]
    duplicates = run["duplicates"] + fixed["duplicates"]
    assert ledger + duplicates + run["quarantined"] == len(messages)
    assert ledger == intents["valid"] + intents["late"]
    assert duplicates == intents["duplicate"]
    assert run["quarantined_by_reason"]["too_late"] == intents["too_late"]
    assert run["quarantined_by_reason"]["future_timestamp"] == intents["future"]
    reasons = Counter(r["reason"] for r in rows(Lake(lake), QUARANTINE))
    assert sum(reasons.values()) == intents["invalid"] + intents["too_late"] + intents["future"]


def test_every_changed_window_has_a_gap_free_audit_chain(corrected_lake):
    windows = {
        (r["tenant_id"], r["meter"], r["window_start"]): r
        for r in rows(corrected_lake, USAGE_WINDOWS)
    }
    audit: dict = {}
    for row in rows(corrected_lake, USAGE_CORRECTIONS):
        audit.setdefault((row["tenant_id"], row["meter"], row["window_start"]), []).append(row)
    assert audit, "the workload has late events: some windows must have changed"
    corrected = {k for k, w in windows.items() if w["revision"] > 0}
    assert corrected == set(audit)
    for key, chain in audit.items():
        chain.sort(key=lambda r: r["revision"])
        assert [r["revision"] for r in chain] == list(range(1, windows[key]["revision"] + 1))
        for before, after in itertools.pairwise(chain):
            assert after["previous_quantity"] == before["new_quantity"]
            assert after["previous_event_count"] == before["new_event_count"]
        for row in chain:
            previous = row["previous_quantity"] or Decimal(0)
            assert row["delta_quantity"] == row["new_quantity"] - previous
            assert row["reason"] == "late_events"
            assert row["late_event_ids"]
        assert (chain[-1]["new_quantity"], chain[-1]["new_event_count"]) == (
            windows[key]["quantity"],
            windows[key]["event_count"],
        )


def test_windows_that_had_no_on_time_events_are_created_by_corrections(corrected_lake):
    created = [r for r in rows(corrected_lake, USAGE_CORRECTIONS) if r["previous_quantity"] is None]
    assert created
    assert all(r["revision"] == 1 for r in created)


def test_rerunning_corrections_changes_nothing(corrected_lake):
    before = DeltaTable(corrected_lake.uri(USAGE_WINDOWS)).version()
    audit_rows = len(rows(corrected_lake, USAGE_CORRECTIONS))
    output = json.loads(
        invoke("corrections", "--lake", corrected_lake.root, "--once", "--format", "json")
    )
    assert output["late_events_read"] == 0
    assert DeltaTable(corrected_lake.uri(USAGE_WINDOWS)).version() == before
    assert len(rows(corrected_lake, USAGE_CORRECTIONS)) == audit_rows


def test_reconcile_passes_after_corrections_and_catches_a_corrupted_window(corrected_lake):
    assert "0 missing, 0 extra, 0 wrong, 0 duplicate" in invoke(
        "reconcile", "--lake", corrected_lake.root
    )
    victim = rows(corrected_lake, USAGE_WINDOWS)[0]
    DeltaTable(corrected_lake.uri(USAGE_WINDOWS)).update(
        updates={"quantity": "quantity + 1"},
        predicate=f"tenant_id = '{victim['tenant_id']}' AND meter = '{victim['meter']}' "
        f"AND window_start = '{victim['window_start'].isoformat()}'",
    )
    report = json.loads(
        invoke("reconcile", "--lake", corrected_lake.root, "--format", "json", expect=1)
    )
    assert [(m["kind"], m["tenant_id"], m["meter"]) for m in report["mismatches"]] == [
        ("wrong", victim["tenant_id"], victim["meter"])
    ]
    invoke("reconcile", "--lake", corrected_lake.root, "--fix")
    invoke("reconcile", "--lake", corrected_lake.root)
    fixes = [r for r in rows(corrected_lake, USAGE_CORRECTIONS) if r["reason"] == "reconcile_fix"]
    assert len(fixes) == 1
    assert fixes[0]["delta_quantity"] == Decimal(-1)


class SimulatedCrashError(Exception):
    """Stands for the process dying right after a step committed."""


class CrashingStore(CorrectionStore):
    """A store that 'dies' right after one of its writes has committed."""

    def __init__(self, lake: Lake, crash_after: str) -> None:
        super().__init__(lake)
        self.crash_after = crash_after

    def insert_late(self, *args, **kwargs):
        inserted = super().insert_late(*args, **kwargs)
        self._maybe_crash("ledger")
        return inserted

    def apply_to_windows(self, changes):
        self._maybe_crash("audit")  # the audit rows are committed, the windows not yet
        super().apply_to_windows(changes)
        self._maybe_crash("windows")

    def _maybe_crash(self, step):
        if step == self.crash_after:
            raise SimulatedCrashError(step)


@pytest.mark.parametrize("crash_after", ["ledger", "audit", "windows"])
def test_a_crash_anywhere_in_a_correction_batch_is_repaired_by_a_rerun(
    tmp_path, messages, crash_after
):
    source = write(tmp_path / "events.jsonl", messages)
    reference, crashed = Lake(tmp_path / "reference"), Lake(tmp_path / "crashed")
    for lake in (reference, crashed):
        invoke("run", "--input", str(source), "--lake", lake.root, *RUN_FLAGS)
    invoke("corrections", "--lake", reference.root, "--once")

    store = CrashingStore(crashed, crash_after)
    versions = store.input_versions()
    work = CorrectionWork(
        store.read_late_events(-1, versions.late),
        store.read_conflicts(-1, versions.conflicts),
        versions,
    )
    with pytest.raises(SimulatedCrashError):
        apply_work(store, work)
    invoke("corrections", "--lake", crashed.root, "--once")

    assert window_totals(crashed) == window_totals(reference)
    assert sorted((r["tenant_id"], r["id"]) for r in rows(crashed, EVENTS)) == sorted(
        (r["tenant_id"], r["id"]) for r in rows(reference, EVENTS)
    )
    audit = Counter(
        (r["tenant_id"], r["meter"], r["window_start"], r["revision"])
        for r in rows(crashed, USAGE_CORRECTIONS)
    )
    assert max(audit.values()) == 1
    assert len(audit) == len(rows(reference, USAGE_CORRECTIONS))


def test_a_tenant_spread_over_two_files_is_made_whole_by_corrections(tmp_path):
    first = write(tmp_path / "a.jsonl", list(generate(Workload(events=3000, tenants=3, seed=1))))
    second = write(tmp_path / "b.jsonl", list(generate(Workload(events=3000, tenants=3, seed=2))))
    lake = tmp_path / "lake"
    invoke("run", "--input", str(first), "--input", str(second), "--lake", str(lake))
    invoke("reconcile", "--lake", str(lake), expect=1)
    invoke("corrections", "--lake", str(lake), "--once")
    invoke("reconcile", "--lake", str(lake))
    reasons = Counter(r["reason"] for r in rows(Lake(lake), USAGE_CORRECTIONS))
    assert reasons["window_conflict"] > 0


def test_usage_as_of_shows_what_a_window_said_before_corrections(tmp_path, messages):
    source = write(tmp_path / "events.jsonl", messages)
    lake = Lake(tmp_path / "lake")
    invoke("run", "--input", str(source), "--lake", lake.root, *RUN_FLAGS)
    version = DeltaTable(lake.uri(USAGE_WINDOWS)).version()
    before = json.loads(invoke("usage", "--lake", lake.root, "--format", "json"))
    invoke("corrections", "--lake", lake.root, "--once")
    now = json.loads(invoke("usage", "--lake", lake.root, "--format", "json"))
    then = json.loads(
        invoke("usage", "--lake", lake.root, "--format", "json", "--as-of", str(version))
    )
    assert then == before
    assert now != before
    latest = DeltaTable(lake.uri(USAGE_WINDOWS)).version()
    future = CliRunner().invoke(main, ["usage", "--lake", lake.root, "--as-of", str(latest + 1)])
    assert future.exit_code == 2
    assert future.output.strip() == (
        f"error: usage_windows has versions 0 to {latest}; there is no version {latest + 1}"
    )


def test_corrections_show_lists_the_audit_trail(corrected_lake):
    tenant = rows(corrected_lake, USAGE_CORRECTIONS)[0]["tenant_id"]
    listed = json.loads(
        invoke(
            "corrections",
            "--lake",
            corrected_lake.root,
            "--show",
            "--tenant",
            tenant,
            "--format",
            "json",
        )
    )
    assert listed
    assert {r["tenant_id"] for r in listed} == {tenant}
    assert "late_events" in invoke("corrections", "--lake", corrected_lake.root, "--show")


def test_corrections_on_a_lake_the_main_flow_never_wrote_is_one_clear_error(tmp_path):
    # Raised inside the flow (the source opens the lake): it must not surface as a trace.
    result = CliRunner().invoke(main, ["corrections", "--lake", str(tmp_path / "none"), "--once"])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (
        f"error: lake {tmp_path / 'none'} has no usage_windows table yet: run `meterwax run` first"
    )


def test_reconcile_refuses_an_empty_time_range(tmp_path):
    # An empty range would check nothing and exit 0: a typo must not pass for a clean lake.
    result = CliRunner().invoke(
        main, ["reconcile", "--lake", str(tmp_path), "--from", "2026-03-01", "--to", "2026-02-01"]
    )
    assert result.exit_code == 2, result.output
    assert "--from 2026-03-01T00:00:00+00:00 is not before --to 2026-02-01" in result.output


def test_two_partitions_with_equal_partial_totals_are_both_counted(tmp_path):
    # One tenant's window is fed by two files (two source partitions) with the very same
    # partial total: the second is another contribution, never a replay of the first.
    first = tmp_path / "a.jsonl"
    second = tmp_path / "b.jsonl"
    first.write_bytes(event("a1", quantity="2.5", at=1) + b"\n" + event("a2", at=70) + b"\n")
    second.write_bytes(event("b1", quantity="2.5", at=2) + b"\n" + event("b2", at=71) + b"\n")
    lake = Lake(tmp_path / "lake")
    invoke("run", "--input", str(first), "--input", str(second), "--lake", lake.root)
    assert len(rows(lake, WINDOW_CONFLICTS)) == 2  # both of the two shared windows
    invoke("reconcile", "--lake", lake.root, expect=1)
    invoke("corrections", "--lake", lake.root, "--once")
    invoke("reconcile", "--lake", lake.root)
    start = T0.replace(second=0)
    assert window_totals(lake)[("acme", "api_calls", start)] == (Decimal("5"), 2)


@pytest.mark.parametrize(("window", "horizon"), [("7m", "1h"), ("2d", "3d")])
def test_a_late_event_in_a_window_across_midnight_is_counted_with_all_its_events(
    tmp_path, window, horizon
):
    window_us = parse_duration_us(window)
    midnight = datetime(2026, 3, 3, tzinfo=UTC)
    micros = to_micros(midnight)
    start = from_micros(micros - micros % window_us)
    end = start + timedelta(microseconds=window_us)
    assert start < midnight < end - timedelta(seconds=30), "pick a window across midnight"
    before, after = start + timedelta(seconds=5), midnight + timedelta(seconds=5)
    source = tmp_path / "events.jsonl"
    source.write_bytes(
        b"\n".join(
            [
                event("before", quantity="1", at=before),
                event("after", quantity="2", at=after),
                event("closer", quantity="1", at=end + timedelta(minutes=5)),  # closes it
                event("late", quantity="4", at=midnight + timedelta(seconds=9)),  # late
            ]
        )
        + b"\n"
    )
    lake = Lake(tmp_path / "lake")
    args = ["--window", window, "--dedupe-horizon", horizon, "--max-future", "off"]
    invoke("run", "--input", str(source), "--lake", lake.root, *args)
    invoke("corrections", "--lake", lake.root, "--once")
    assert window_totals(lake)[("acme", "api_calls", start)] == (Decimal("7"), 3)
    invoke("reconcile", "--lake", lake.root)
    invoke("reconcile", "--lake", lake.root, "--to", (midnight - timedelta(hours=1)).isoformat())


def test_which_late_copy_counts_does_not_depend_on_when_corrections_run(tmp_path):
    # A producer that does not key by tenant: key K comes late through two inputs, with two
    # different quantities. The copy with the smaller source coordinates counts, whether the
    # correction flow sees both at once or one after the other.
    def lines(prefix: str, k_quantity: str) -> bytes:
        return b"".join(
            line + b"\n"
            for line in (
                event(f"{prefix}1", at=1),
                event(f"{prefix}2", at=180),
                event("K", quantity=k_quantity, at=30),
            )
        )

    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_bytes(lines("a", "1"))
    second.write_bytes(lines("b", "7.5"))
    once, incremental = Lake(tmp_path / "once"), Lake(tmp_path / "incremental")
    invoke("run", "--input", str(first), "--input", str(second), "--lake", once.root)
    invoke("corrections", "--lake", once.root, "--once")
    for source in (second, first):  # the later coordinates first
        invoke("run", "--input", str(source), "--lake", incremental.root)
        invoke("corrections", "--lake", incremental.root, "--once")
    for lake in (once, incremental):
        invoke("reconcile", "--lake", lake.root)
    assert window_totals(incremental) == window_totals(once)
    counted = [r for r in rows(incremental, EVENTS) if r["id"] == "K"]
    voided = {(r["origin"], r["origin_offset"]) for r in rows(incremental, VOIDED_EVENTS)}
    live = [r for r in counted if (r["origin"], r["origin_offset"]) not in voided]
    assert [r["quantity"] for r in live] == [Decimal(1)]
    [conflict] = [r for r in rows(incremental, QUARANTINE) if r["event_id"] == "K"]
    assert conflict["reason"] == "conflicting_duplicate"
    assert [r["reason"] for r in rows(once, QUARANTINE) if r["event_id"] == "K"] == [
        "conflicting_duplicate"
    ]


def test_the_correction_flow_and_reconcile_open_a_lake_written_before_catalogs(tmp_path):
    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "small-file-0.1.0"
    shutil.copytree(fixture / "lake", tmp_path / "lake")
    lake = Lake(tmp_path / "lake")
    invoke("corrections", "--lake", lake.root, "--once")
    invoke("reconcile", "--lake", lake.root)
    invoke("usage", "--lake", lake.root, "--granularity", "day")
