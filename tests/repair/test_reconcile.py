"""``meterwax reconcile``, the independent witness: what it finds, and what ``--fix`` repairs."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pyarrow as pa
from click.testing import CliRunner
from deltalake import DeltaTable, write_deltalake

from meterwax.cli.main import main
from meterwax.sinks.lake import Lake
from meterwax.sinks.schemas import (
    EVENTS,
    QUARANTINE,
    USAGE_CORRECTIONS,
    USAGE_WINDOWS,
    VOIDED_EVENTS,
)
from tests.guarantees import check_g3_audit
from tests.helpers import T0, event, rows, window_totals
from tests.processes import run_meterwax


def invoke(*args: str, expect: int = 0) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == expect, result.output
    return result.output


def reconcile_json(lake: Lake, *args: str, expect: int = 0) -> dict:
    return json.loads(
        invoke("reconcile", "--lake", lake.root, *args, "--format", "json", expect=expect)
    )


def test_a_key_counted_twice_beyond_the_dedupe_horizon_is_found_and_voided_by_fix(tmp_path):
    # A producer retried e1 ten minutes later with a new timestamp: past a 2-minute dedupe
    # horizon the main flow cannot know it, and counts it twice.
    source = tmp_path / "events.jsonl"
    source.write_bytes(
        b"\n".join(
            [
                event("e1", quantity="3", at=0),
                *(event(f"f{n}", at=60 * n) for n in range(1, 11)),
                event("e1", quantity="3", at=600),
                event("g", at=700),
            ]
        )
        + b"\n"
    )
    lake = Lake(tmp_path / "lake")
    invoke("run", "--input", str(source), "--lake", lake.root, "--dedupe-horizon", "2m")
    report = reconcile_json(lake, expect=1)
    assert [(d["tenant_id"], d["id"], d["count"]) for d in report["duplicate_keys"]] == [
        ("acme", "e1", 2)
    ]
    invoke("reconcile", "--lake", lake.root, "--fix")
    assert reconcile_json(lake)["duplicate_keys"] == []
    # The ledger keeps both rows; the later copy is listed as voided and counts nowhere.
    assert len([r for r in rows(lake, EVENTS) if r["id"] == "e1"]) == 2
    [voided] = rows(lake, VOIDED_EVENTS)
    assert (voided["id"], voided["reason"], voided["event_time"]) == (
        "e1",
        "duplicate_key",
        T0 + timedelta(seconds=600),
    )
    assert window_totals(lake)[("acme", "api_calls", T0 + timedelta(minutes=10))] == (
        Decimal(1),
        1,
    )
    audit = [r for r in rows(lake, USAGE_CORRECTIONS) if "duplicate_key" in r["reason"]]
    assert [(r["delta_quantity"], r["delta_event_count"]) for r in audit] == [(Decimal(-3), -1)]
    check_g3_audit(lake)
    invoke("reconcile", "--lake", lake.root, "--fix")  # a second fix changes nothing
    assert len(rows(lake, VOIDED_EVENTS)) == 1


def test_a_window_fed_past_the_decimal_bound_by_two_partitions_keeps_what_fits(tmp_path):
    big = "6" + "0" * 28  # 6 × 10^28: one fits a window, two do not (the bound is ~10^29)
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_bytes(event("a", quantity=big, at=1) + b"\n")
    second.write_bytes(event("b", quantity=big, at=2) + b"\n")
    lake = Lake(tmp_path / "lake")
    invoke("run", "--input", str(first), "--input", str(second), "--lake", lake.root)
    kinds = {m["kind"] for m in reconcile_json(lake, expect=1)["mismatches"]}
    assert kinds == {"overflow"}
    invoke("corrections", "--lake", lake.root, "--once")
    assert reconcile_json(lake)["mismatches"] == []
    [voided] = rows(lake, VOIDED_EVENTS)
    assert (voided["id"], voided["reason"]) == ("b", "window_overflow")  # the later by source
    assert window_totals(lake)[("acme", "api_calls", T0)] == (Decimal(big), 1)


def test_a_late_event_its_window_cannot_take_is_quarantined_by_corrections(tmp_path):
    big = "9" * 29
    source = tmp_path / "events.jsonl"
    source.write_bytes(
        b"\n".join([event("a", quantity=big, at=1), event("b", at=200), event("late", at=5)])
        + b"\n"
    )
    lake = Lake(tmp_path / "lake")
    invoke("run", "--input", str(source), "--lake", lake.root)
    invoke("corrections", "--lake", lake.root, "--once")
    reasons = {r["event_id"]: r["reason"] for r in rows(lake, QUARANTINE)}
    assert reasons == {"late": "window_overflow"}
    assert reconcile_json(lake)["mismatches"] == []


def test_nothing_is_pending_after_corrections_even_when_maintenance_made_new_versions(tmp_path):
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"\n".join([event("a", at=1), event("b", at=200), event("c", at=5)]) + b"\n")
    lake = Lake(tmp_path / "lake")
    invoke("run", "--input", str(source), "--lake", lake.root)
    assert reconcile_json(lake)["pending_late_events"] == 1  # pending, not wrong: exit 0
    invoke("corrections", "--lake", lake.root, "--once")
    invoke("maintain", "--lake", lake.root, "--compact")
    report = reconcile_json(lake)
    assert (report["pending_late_events"], report["pending_conflicts"]) == (0, 0)
    assert "pending" not in invoke("reconcile", "--lake", lake.root)


def test_a_ledger_row_outside_its_date_partition_is_reported(tmp_path):
    source = tmp_path / "events.jsonl"
    source.write_bytes(event("a", at=1) + b"\n")
    lake = Lake(tmp_path / "lake")
    invoke("run", "--input", str(source), "--lake", lake.root)
    table = DeltaTable(lake.uri(EVENTS))
    row = table.to_pyarrow_table()
    wrong_day = pa.array([row.column("event_date")[0].as_py() + timedelta(days=1)], pa.date32())
    misfiled = row.set_column(row.schema.get_field_index("event_date"), "event_date", wrong_day)
    misfiled = misfiled.set_column(
        misfiled.schema.get_field_index("id"), "id", pa.array(["edited"], pa.string())
    )
    write_deltalake(table, misfiled.cast(EVENTS.schema), mode="append")
    report = reconcile_json(lake, expect=1)
    assert report["misfiled_events"] == 1


CATALOG = """
meters:
  - {name: api_calls, event_meter: api_calls, aggregation: sum}
  - {name: users, event_meter: api_calls, aggregation: unique_count, value: dimensions.user}
  - {name: busiest, event_meter: api_calls, aggregation: max}
"""


def test_reconcile_and_fix_under_a_catalog_and_as_of_before_it(tmp_path):
    source = tmp_path / "events.jsonl"
    source.write_bytes(
        b"\n".join(
            event(f"e{n}", quantity=str(n), at=10 * n, dimensions={"user": f"u{n % 3}"})
            for n in range(1, 13)
        )
        + b"\n"
    )
    lake = Lake(tmp_path / "lake")
    invoke("run", "--input", str(source), "--lake", lake.root)
    before_catalog = lake.table(USAGE_WINDOWS).version()
    catalog = tmp_path / "meters.yaml"
    catalog.write_text(CATALOG)
    invoke("meters", "apply", str(catalog), "--lake", lake.root)
    assert reconcile_json(lake)["mismatches"] == []

    # A window changed behind meterwax's back: a unique count too high, a max too low.
    table = lake.table(USAGE_WINDOWS)
    table.update(updates={"quantity": "CAST(99 AS DECIMAL(38, 9))"}, predicate="meter = 'users'")
    table.update(updates={"quantity": "CAST(0 AS DECIMAL(38, 9))"}, predicate="meter = 'busiest'")
    mismatches = reconcile_json(lake, expect=1)["mismatches"]
    assert {(m["meter"], m["kind"]) for m in mismatches} == {
        ("users", "wrong"),
        ("busiest", "wrong"),
    }
    invoke("reconcile", "--lake", lake.root, "--fix")
    assert reconcile_json(lake)["mismatches"] == []
    windows = {(r["meter"], r["window_start"]): r["quantity"] for r in rows(lake, USAGE_WINDOWS)}
    assert windows[("users", T0)] == 3  # u1, u2, u0 in the first minute (events 1–5)
    assert windows[("busiest", T0)] == 5
    fixes = [r for r in rows(lake, USAGE_CORRECTIONS) if r["reason"] == "reconcile_fix"]
    assert sorted((r["meter"], r["previous_quantity"], r["new_quantity"]) for r in fixes) == [
        ("busiest", 0, 5),
        ("busiest", 0, 11),
        ("busiest", 0, 12),
        ("users", 99, 1),
        ("users", 99, 3),
        ("users", 99, 3),
    ]

    # As of the version before the catalog, the lake had only the sums.
    then = json.loads(
        invoke("usage", "--lake", lake.root, "--as-of", str(before_catalog), "--format", "json")
    )
    assert {w["meter"] for w in then} == {"api_calls"}


def test_rows_landing_between_a_void_and_the_recompute_are_voided_too(tmp_path, monkeypatch):
    # Two partitions put 6·10^28 each into one window: one copy is voided. A third partition's
    # flush lands right after that void, before the recompute re-reads the ledger.
    big = "6" + "0" * 28
    files = []
    for name in ("a", "bb", "ccc"):
        path = tmp_path / f"{name}.jsonl"
        path.write_bytes(event(name, quantity=big, at=len(name)) + b"\n")
        files.append(path)
    lake = Lake(tmp_path / "lake")
    invoke("run", "--input", str(files[0]), "--input", str(files[1]), "--lake", lake.root)

    from meterwax.sinks.ledger import Ledger

    original = Ledger.void
    landed = []

    def void_then_a_flush_lands(self, copies, **kwargs):
        done = original(self, copies, **kwargs)
        if not landed:
            landed.append(True)
            flushed = run_meterwax("run", "--input", str(files[2]), "--lake", lake.root)
            assert flushed.returncode == 0, flushed.stderr
        return done

    monkeypatch.setattr(Ledger, "void", void_then_a_flush_lands)
    invoke("corrections", "--lake", lake.root, "--once")
    assert landed
    monkeypatch.undo()
    invoke("corrections", "--lake", lake.root, "--once")
    assert reconcile_json(lake)["mismatches"] == []
    assert sorted(r["id"] for r in rows(lake, VOIDED_EVENTS)) == ["bb", "ccc"]
    assert window_totals(lake)[("acme", "api_calls", T0)] == (Decimal(big), 1)
