"""Voids: counted events taken back by a durable rule, every aggregation recomputed, audited.

Every test checks the windows against an independent computation (``catalog_reference``)
over the events meant to count minus the voided ones, for a catalog with one meter of each
aggregation, and ends with a clean ``reconcile``.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
import yaml
from click.testing import CliRunner

from meterwax.cli.main import main
from meterwax.sinks.lake import Lake
from meterwax.sinks.schemas import (
    ALL_TABLES,
    EVENTS,
    USAGE_CORRECTIONS,
    USAGE_WINDOWS,
    VOIDED_EVENTS,
)
from tests.catalog_reference import comparable, lake_windows, meter_windows, parse_event
from tests.guarantees import check_g3_audit
from tests.helpers import T0, event, rows
from tests.processes import run_meterwax

WINDOW = timedelta(minutes=1)
CATALOG = {
    "meters": [
        {"name": "api_calls", "event_meter": "api_calls", "aggregation": "sum"},
        {"name": "requests", "event_meter": "api_calls", "aggregation": "count"},
        {"name": "biggest", "event_meter": "api_calls", "aggregation": "max"},
        {"name": "smallest", "event_meter": "api_calls", "aggregation": "min"},
        {"name": "last", "event_meter": "api_calls", "aggregation": "latest"},
        {
            "name": "users",
            "event_meter": "api_calls",
            "aggregation": "unique_count",
            "value": "dimensions.user",
        },
    ]
}


def invoke(*args: str, expect: int = 0) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result.stdout if expect == 0 else result.output


def stream(prefix: str, count: int, *, start: float = 0.0, source: str = "app") -> list[bytes]:
    return [
        event(
            f"{prefix}{n}",
            quantity=str(n % 7 + 1),
            at=start + 5 * n,
            dimensions={"user": f"u{n % 4}"},
            source=source,
        )
        for n in range(count)
    ]


def lake_with(tmp_path, lines: list[bytes]) -> Lake:
    lake = Lake(tmp_path / "lake")
    catalog = tmp_path / "meters.yaml"
    catalog.write_text(yaml.safe_dump(CATALOG))
    invoke("meters", "apply", str(catalog), "--lake", lake.root)
    run(tmp_path, lake, lines, "a")
    return lake


def run(tmp_path, lake: Lake, lines: list[bytes], name: str) -> None:
    source = tmp_path / f"{name}.jsonl"
    source.write_bytes(b"".join(line + b"\n" for line in lines))
    invoke("run", "--input", str(source), "--lake", lake.root, "--format", "json")
    invoke("corrections", "--lake", lake.root, "--once")


def expected(lines: list[bytes], voided: set[str]) -> dict:
    events = [parse_event(line) for line in lines]
    kept = [e for e in events if e["id"] not in voided]
    return comparable(meter_windows(kept, CATALOG["meters"], WINDOW))


def windows(lake: Lake) -> dict:
    return comparable(lake_windows(rows(lake, USAGE_WINDOWS)))


def versions(lake: Lake) -> dict[str, int]:
    return {spec.name: lake.table(spec).version() for spec in ALL_TABLES if lake.exists(spec)}


def void(lake: Lake, *args: str, expect: int = 0) -> dict | str:
    out = invoke("void", "--lake", lake.root, *args, "--format", "json", expect=expect)
    return json.loads(out) if expect == 0 else out


def test_a_void_by_ids_recomputes_every_aggregation_with_audit_rows(tmp_path):
    lines = stream("e", 40)
    lake = lake_with(tmp_path, lines)
    before = windows(lake)
    assert before == expected(lines, set())
    billed_then = lake.table(USAGE_WINDOWS).version()

    targets = ["e3", "e4", "e12", "missing-1"]
    args = ["--tenant", "acme", *(a for t in targets for a in ("--id", t)), "--reason", "INC-7"]
    unchanged = versions(lake)
    dry = void(lake, *args, "--dry-run")
    assert versions(lake) == unchanged  # a dry run writes nothing
    assert dry["voided"] == 3 and dry["ids_not_in_ledger"] == ["missing-1"]
    assert dry["windows"]

    done = void(lake, *args)
    assert done["void_id"] == dry["void_id"] and done["voided"] == 3
    assert windows(lake) == expected(lines, {"e3", "e4", "e12"})
    assert {w["meter"] for w in done["windows"]} == {m["name"] for m in CATALOG["meters"]}
    # The ledger still holds the events; voided_events lists them with the void's id.
    assert {"e3", "e4", "e12"} <= {r["id"] for r in rows(lake, EVENTS)}
    assert sorted((r["id"], r["void_id"]) for r in rows(lake, VOIDED_EVENTS)) == [
        (i, done["void_id"]) for i in ("e12", "e3", "e4")
    ]
    audit = [r for r in rows(lake, USAGE_CORRECTIONS) if r["reason"] == "void"]
    assert len(audit) == len(done["windows"]) == done["audit_rows_written"]
    assert {r["void_id"] for r in audit} == {done["void_id"]}
    check_g3_audit(lake)
    invoke("reconcile", "--lake", lake.root)

    # What was billed before the void is still there to read.
    then = json.loads(
        invoke("usage", "--lake", lake.root, "--as-of", str(billed_then), "--format", "json")
    )
    assert sum(int(w["quantity"]) for w in then if w["meter"] == "requests") == 40

    # Repeating the void is a no-op.
    again = void(lake, *args)
    assert again["already_recorded"] and again["voided"] == 0 and again["windows"] == []
    assert len([r for r in rows(lake, USAGE_CORRECTIONS) if r["reason"] == "void"]) == len(audit)


def test_a_range_void_holds_for_events_that_arrive_later_and_can_be_undone(tmp_path):
    early = stream("e", 30, source="app") + stream("t", 10, start=2, source="load-test")
    lake = lake_with(tmp_path, early)
    start, end = T0, T0 + timedelta(minutes=10)
    args = (
        *("--tenant", "acme", "--source", "load-test"),
        *("--from", start.isoformat(), "--to", end.isoformat(), "--reason", "load test"),
    )
    done = void(lake, *args)
    assert done["voided"] == 10
    test_ids = {f"t{n}" for n in range(10)}
    assert windows(lake) == expected(early, test_ids)

    # More test traffic in the range, on time (a new window) and late (an old one): none of
    # it counts once the correction flow has run.
    later = [
        *[event(f"u{n}", quantity="9", at=170 + n, source="load-test") for n in range(5)],
        event("late-test", quantity="5", at=3, source="load-test"),
        event("late-real", quantity="5", at=4, source="app"),
    ]
    run(tmp_path, lake, later, "b")
    everything = early + later
    late_voided = test_ids | {f"u{n}" for n in range(5)} | {"late-test"}
    assert windows(lake) == expected(everything, late_voided)
    invoke("reconcile", "--lake", lake.root)

    undone = json.loads(
        invoke(
            "void",
            "--lake",
            lake.root,
            "--undo",
            done["void_id"],
            "--reason",
            "wrong source",
            "--format",
            "json",
        )
    )
    assert undone["windows_changed"] > 0
    assert windows(lake) == expected(everything, set())
    assert any(r["reason"] == "void_undone" for r in rows(lake, USAGE_CORRECTIONS))
    check_g3_audit(lake)
    invoke("reconcile", "--lake", lake.root)


def test_a_void_recorded_before_its_late_events_arrive(tmp_path):
    lines = stream("e", 30)
    lake = lake_with(tmp_path, lines)
    done = void(lake, "--tenant", "acme", "--id", "late-1", "--id", "late-2", "--reason", "dup")
    assert done["voided"] == 0 and done["ids_not_in_ledger"] == ["late-1", "late-2"]
    late = [event("late-1", quantity="4", at=1), event("late-2", quantity="4", at=61)]
    run(tmp_path, lake, [*stream("f", 5, start=200), *late], "b")
    assert {r["id"] for r in rows(lake, VOIDED_EVENTS)} == {"late-1", "late-2"}
    assert windows(lake) == expected(
        [*lines, *stream("f", 5, start=200), *late], {"late-1", "late-2"}
    )
    # They never counted: no audit row mentions them.
    assert not any(
        "late-1" in (r["late_event_ids"] or []) and r["void_id"] is None
        for r in rows(lake, USAGE_CORRECTIONS)
        if r["new_event_count"] > 0 and r["reason"] == "late_events"
    )
    invoke("reconcile", "--lake", lake.root)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--tenant", "acme", "--from", "2026-03-02T12:00:00Z", "--to", "2026-03-02T11:00:00Z"),
            "--to: 2026-03-02T11:00:00.000000Z is not after from",
        ),
        (
            ("--tenant", "acme", "--from", "2026-01-01", "--to", "2026-03-01"),
            "--force: the range is 59d wide, more than the safety limit of 31d",
        ),
        (("--tenant", "nobody", "--id", "x"), "--tenant 'nobody': the ledger has no events"),
        (("--tenant", "acme"), "nothing to void"),
        (("--tenant", "acme", "--id", "x", "--from", "2026-03-02"), "--from and --to: give both"),
    ],
)
def test_bad_voids_are_refused_naming_the_setting(tmp_path, args, message):
    lake = lake_with(tmp_path, stream("e", 3))
    output = void(lake, *args, "--reason", "r", expect=2)
    assert message in output
    assert not rows(lake, VOIDED_EVENTS)


@pytest.mark.parametrize(
    "crash_at", ["void.after_rule", "void.after_voided_events", "corrections.after_audit"]
)
def test_a_void_killed_between_its_commits_is_finished_by_a_rerun(tmp_path, crash_at):
    lines = stream("e", 40)
    lake = lake_with(tmp_path, lines)
    args = (
        "void",
        "--lake",
        lake.root,
        "--tenant",
        "acme",
        "--id",
        "e5",
        "--id",
        "e17",
        "--reason",
        "x",
    )
    killed = run_meterwax(*args, env_extra={"METERWAX_CRASH_AT": crash_at})
    assert killed.returncode == -9, killed.stdout + killed.stderr
    # No window changed without its audit row (an audit row may lead its change: it is
    # written first).
    audited = {
        (r["tenant_id"], r["meter"], r["window_start"], r["revision"])
        for r in rows(lake, USAGE_CORRECTIONS)
    }
    for window in rows(lake, USAGE_WINDOWS):
        key = (window["tenant_id"], window["meter"], window["window_start"])
        assert all((*key, n) in audited for n in range(1, window["revision"] + 1)), window
    # Either a rerun of the void or the correction flow finishes it.
    finisher = (
        args if crash_at != "void.after_rule" else ("corrections", "--lake", lake.root, "--once")
    )
    done = run_meterwax(*finisher)
    assert done.returncode == 0, done.stdout + done.stderr
    assert windows(lake) == expected(lines, {"e5", "e17"})
    check_g3_audit(lake)
    assert run_meterwax("reconcile", "--lake", lake.root).returncode == 0


def test_reconcile_reports_a_void_whose_events_arrived_after_it(tmp_path):
    lines = stream("e", 20)
    lake = lake_with(tmp_path, lines)
    void(lake, "--tenant", "acme", "--id", "late-1", "--reason", "INC-9")  # not there yet
    later = stream("late-", 3, start=600.0)
    source = tmp_path / "b.jsonl"
    source.write_bytes(b"".join(line + b"\n" for line in later))
    invoke("run", "--input", str(source), "--lake", lake.root)  # on time: counted for now

    out = invoke("reconcile", "--lake", lake.root, expect=1)
    assert "1 ledger rows are selected by a void in force and still count" in out
    invoke("corrections", "--lake", lake.root, "--once")
    assert windows(lake) == expected(lines + later, {"late-1"})
    check_g3_audit(lake)
    invoke("reconcile", "--lake", lake.root)


def test_usage_as_of_a_time_a_void_was_in_force_still_leaves_its_events_out_after_an_undo(
    tmp_path,
):
    lines = stream("e", 20)
    lake = Lake(tmp_path / "lake")  # no catalog: rollups by dimension read the ledger
    run(tmp_path, lake, lines, "a")
    done = void(lake, "--tenant", "acme", "--id", "e3", "--reason", "INC-3")
    voided_then = str(lake.table(USAGE_WINDOWS).version())

    def by_user(*as_of: str) -> list:
        out = invoke("usage", "--lake", lake.root, "--group-by", "user", *as_of, "--format", "json")
        return json.loads(out)

    billed_then = by_user("--as-of", voided_then)
    assert billed_then == by_user()  # the void is in force now too
    invoke("void", "--lake", lake.root, "--undo", done["void_id"], "--reason", "wrong one")
    assert by_user() != billed_then  # e3 counts again from now on
    assert by_user("--as-of", voided_then) == billed_then


def test_an_undo_killed_after_its_rule_is_finished_by_running_it_again(tmp_path):
    lines = stream("e", 30)
    lake = lake_with(tmp_path, lines)
    done = void(lake, "--tenant", "acme", "--id", "e4", "--id", "e9", "--reason", "INC-4")
    undo = ("void", "--lake", lake.root, "--undo", done["void_id"], "--reason", "wrong ones")
    killed = run_meterwax(*undo, env_extra={"METERWAX_CRASH_AT": "void.after_undo_rule"})
    assert killed.returncode == -9, killed.stdout + killed.stderr
    assert windows(lake) == expected(lines, {"e4", "e9"})  # recorded, not applied yet

    again = run_meterwax(*undo)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "was undone already" in again.stdout
    assert windows(lake) == expected(lines, set())
    audit = [r for r in rows(lake, USAGE_CORRECTIONS) if r["reason"] == "void_undone"]
    assert audit and {r["void_id"] for r in audit} == {done["void_id"]}
    check_g3_audit(lake)
    assert run_meterwax("reconcile", "--lake", lake.root).returncode == 0


@pytest.mark.parametrize("second_copy_from", ["aa", "zz"])
def test_a_voided_late_key_is_not_counted_again_through_a_copy_from_elsewhere(
    tmp_path, second_copy_from
):
    """Whichever file's coordinates sort first, the voided key stays voided, and undoing the
    void makes it count once (a copy that superseded the voided one counted it twice)."""
    lake = Lake(tmp_path / "lake")

    def late_copy(name: str, closer: str, quantity: int) -> None:
        lines = [  # the closer moves the file's watermark first; the copy of k is then late
            event(closer, meter="other", quantity=str(quantity), at=600.0),
            event("k", quantity="7", at=5.0),
        ]
        (tmp_path / f"{name}.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
        invoke("run", "--input", str(tmp_path / f"{name}.jsonl"), "--lake", lake.root)
        invoke("corrections", "--lake", lake.root, "--once")

    def k_window() -> list[tuple[int, int]]:
        found = [r for r in rows(lake, USAGE_WINDOWS) if r["meter"] == "api_calls"]
        return [(int(r["quantity"] or 0), r["event_count"]) for r in found]

    late_copy("zb", "fz", 100)
    assert k_window() == [(7, 1)]
    done = void(lake, "--tenant", "acme", "--id", "k", "--reason", "double emit")
    assert k_window() == [(0, 0)]
    late_copy(second_copy_from, "fa", 1000)
    assert k_window() == [(0, 0)]  # still voided
    assert run_meterwax("reconcile", "--lake", lake.root).returncode == 0

    invoke("void", "--lake", lake.root, "--undo", done["void_id"], "--reason", "it was real")
    invoke("corrections", "--lake", lake.root, "--once")
    assert k_window() == [(7, 1)]  # counted once, not once per copy
    check_g3_audit(lake)
    assert run_meterwax("reconcile", "--lake", lake.root).returncode == 0


def test_an_undo_that_would_overflow_a_window_is_refused(tmp_path):
    big = "60000000000000000000000000000"  # 6e28: two of them pass decimal(38, 9)
    lake = Lake(tmp_path / "lake")
    for name, event_id, at in (("ua", "A", 5.0), ("ub", "B", 10.0)):
        (tmp_path / f"{name}.jsonl").write_bytes(event(event_id, quantity=big, at=at) + b"\n")
    invoke("run", "--input", str(tmp_path / "ua.jsonl"), "--lake", lake.root)
    done = void(lake, "--tenant", "acme", "--id", "A", "--reason", "test traffic")
    invoke("run", "--input", str(tmp_path / "ub.jsonl"), "--lake", lake.root)
    invoke("corrections", "--lake", lake.root, "--once")
    billed = [(r["quantity"], r["event_count"]) for r in rows(lake, USAGE_WINDOWS)]

    out = invoke("void", "--lake", lake.root, "--undo", done["void_id"], "--reason", "no", expect=2)
    assert "past decimal(38, 9)" in out and "Nothing was undone" in out
    assert [(r["quantity"], r["event_count"]) for r in rows(lake, USAGE_WINDOWS)] == billed
    assert {r["id"] for r in rows(lake, VOIDED_EVENTS)} == {"A"}  # B still counts
    assert run_meterwax("reconcile", "--lake", lake.root).returncode == 0


def test_a_range_of_dates_means_the_days_of_tz_as_in_usage(tmp_path):
    lake = Lake(tmp_path / "lake")
    times = {"a": "2026-03-01T23:30:00Z", "b": "2026-03-02T12:00:00Z", "c": "2026-03-02T23:30:00Z"}
    lines = [event(i, at=datetime.fromisoformat(t)) for i, t in times.items()]
    (tmp_path / "tz.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
    invoke("run", "--input", str(tmp_path / "tz.jsonl"), "--lake", lake.root, "--max-future", "off")
    day = ("--tenant", "acme", "--from", "2026-03-02", "--to", "2026-03-03", "--reason", "x")
    berlin = void(lake, *day, "--tz", "Europe/Berlin", "--dry-run")
    assert sorted(e["id"] for e in berlin["events"]) == ["a", "b"]  # 23:00Z to 23:00Z
    utc = void(lake, *day, "--dry-run")
    assert sorted(e["id"] for e in utc["events"]) == ["b", "c"]


def test_audit_rows_name_only_the_late_events_that_count(tmp_path):
    lake = Lake(tmp_path / "lake")
    closer = event("f1", quantity="10", at=600.0)  # moves the watermark: the rest is late
    first = [event("e1", quantity="1", at=5.0), closer, event("late1", quantity="100", at=20.0)]
    source = tmp_path / "l1.jsonl"
    source.write_bytes(b"".join(line + b"\n" for line in first))
    invoke("run", "--input", str(source), "--lake", lake.root, "--max-future", "off")
    void(lake, "--tenant", "acme", "--id", "late1", "--id", "late2", "--reason", "test")
    more = [
        event("f2", quantity="20", at=610.0),
        event("late2", quantity="1000", at=30.0),
        event("late3", quantity="5", at=40.0),
    ]
    (tmp_path / "l2.jsonl").write_bytes(b"".join(line + b"\n" for line in more))
    invoke("run", "--input", str(tmp_path / "l2.jsonl"), "--lake", lake.root, "--max-future", "off")
    invoke("corrections", "--lake", lake.root, "--once")

    first = [r for r in rows(lake, USAGE_WINDOWS) if r["window_start"] == T0]
    assert [(int(r["quantity"]), r["event_count"]) for r in first] == [(6, 2)]
    named = {i for r in rows(lake, USAGE_CORRECTIONS) for i in (r["late_event_ids"] or [])}
    assert named == {"late3"}
    check_g3_audit(lake)


def test_a_catalog_meter_name_given_as_the_events_meter_is_refused(tmp_path):
    lake = lake_with(tmp_path, stream("e", 5))
    args = ("--tenant", "acme", "--meter", "requests", "--reason", "x")
    span = ("--from", "2026-03-02T00:00:00Z", "--to", "2026-03-03T00:00:00Z")
    out = void(lake, *args, *span, expect=2)
    assert "--meter 'requests': a catalog meter" in out and "--meter 'api_calls'" in out
    assert void(lake, "--tenant", "acme", "--meter", "api_calls", *span, "--reason", "x")["voided"]
