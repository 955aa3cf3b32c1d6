"""``meters apply`` edge cases: changed aggregations, interrupted and concurrent applies,
catalogs whose new sums would overflow, definitions as of a time."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from meterwax.cli.main import main
from meterwax.sinks.lake import Lake
from meterwax.sinks.schemas import USAGE_WINDOWS, VOIDED_EVENTS
from tests.helpers import event, rows
from tests.processes import run_meterwax


def invoke(*args: str, expect: int = 0) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result.stdout if expect == 0 else result.output


def catalog(tmp_path, name: str, *meters: dict) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"meters": list(meters)}))
    return str(path)


def seats_lake(tmp_path) -> Lake:
    source = tmp_path / "in.jsonl"
    source.write_bytes(
        b"".join(
            event(f"e{n}", meter="seats", quantity=q, at=60 * n) + b"\n"
            for n, q in enumerate(["2", "5", "4"])
        )
    )
    lake = Lake(tmp_path / "lake")
    invoke("run", "--input", str(source), "--lake", lake.root)
    return lake


def daily(lake: Lake) -> dict[str, str]:
    out = json.loads(
        invoke("usage", "--lake", lake.root, "--granularity", "day", "--format", "json")
    )
    return {r["meter"]: r["quantity"] for r in out}


@pytest.mark.parametrize(
    ("first", "second", "expected"), [("sum", "max", "5"), ("max", "sum", "11")]
)
def test_a_changed_aggregation_relabels_every_window_of_the_meter(
    tmp_path, first, second, expected
):
    lake = seats_lake(tmp_path)
    seats = {"name": "seats", "event_meter": "seats"}
    invoke(
        "meters",
        "apply",
        catalog(tmp_path, "a", {**seats, "aggregation": first}),
        "--lake",
        lake.root,
    )
    invoke(
        "meters",
        "apply",
        catalog(tmp_path, "b", {**seats, "aggregation": second}),
        "--lake",
        lake.root,
    )
    assert {r["aggregation"] for r in rows(lake, USAGE_WINDOWS)} == {second}
    assert daily(lake)["seats"] == expected
    invoke("reconcile", "--lake", lake.root)


def test_an_interrupted_apply_is_finished_by_the_next_apply_of_another_file(tmp_path):
    lake = seats_lake(tmp_path)
    seats = {"name": "seats", "event_meter": "seats"}
    first = catalog(
        tmp_path,
        "a",
        {**seats, "aggregation": "max"},
        {"name": "n", "event_meter": "seats", "aggregation": "count"},
    )
    killed = run_meterwax(
        "meters",
        "apply",
        first,
        "--lake",
        lake.root,
        env_extra={"METERWAX_CRASH_AT": "corrections.after_audit"},
    )
    assert killed.returncode == -9, killed.stderr
    second = catalog(
        tmp_path,
        "b",
        {**seats, "aggregation": "max", "unit": {"name": "k", "divide_by": 1000}},
        {"name": "n", "event_meter": "seats", "aggregation": "count"},
    )
    invoke("meters", "apply", second, "--lake", lake.root)
    invoke("reconcile", "--lake", lake.root)
    assert daily(lake) == {"seats": "5", "n": "3"}


def test_an_apply_planned_before_another_one_stored_its_version_still_recomputes_it(tmp_path):
    from meterwax.meters.apply import apply_catalog, plan_catalog
    from meterwax.meters.documents import read_catalog_file

    lake = seats_lake(tmp_path)
    seats = {"name": "seats", "event_meter": "seats"}
    invoke(
        "meters",
        "apply",
        catalog(tmp_path, "v1", {**seats, "aggregation": "count"}),
        "--lake",
        lake.root,
    )
    a, _ = read_catalog_file(
        __import__("pathlib").Path(catalog(tmp_path, "a", {**seats, "aggregation": "sum"}))
    )
    b, _ = read_catalog_file(
        __import__("pathlib").Path(
            catalog(
                tmp_path,
                "b",
                {**seats, "aggregation": "count"},
                {"name": "peak", "event_meter": "seats", "aggregation": "max"},
            )
        )
    )
    plan_b = plan_catalog(lake, b)  # B plans against v1 …
    apply_catalog(lake, plan_catalog(lake, a), source_format="meterwax")  # … A stores v2 …
    apply_catalog(lake, plan_b, source_format="meterwax")  # … and B becomes v3
    invoke("reconcile", "--lake", lake.root)
    assert daily(lake) == {"seats": "3", "peak": "5"}


def test_a_catalog_whose_new_sum_would_overflow_is_refused_and_voids_nothing(tmp_path):
    source = tmp_path / "in.jsonl"
    big = "9" + "0" * 28
    source.write_bytes(
        b"".join(
            event(f"e{n}", meter="prompt", quantity="1", at=n, dimensions={"tokens": big}) + b"\n"
            for n in range(3)
        )
    )
    lake = Lake(tmp_path / "lake")
    invoke("run", "--input", str(source), "--lake", lake.root)
    tokens = catalog(
        tmp_path,
        "t",
        {"name": "prompt", "event_meter": "prompt", "aggregation": "sum"},
        {
            "name": "tokens",
            "event_meter": "prompt",
            "aggregation": "sum",
            "value": "dimensions.tokens",
        },
    )
    out = invoke("meters", "apply", tokens, "--lake", lake.root, expect=2)
    assert "tokens" in out and "decimal(38, 9)" in out
    assert rows(lake, VOIDED_EVENTS) == []
    invoke("reconcile", "--lake", lake.root)


def test_usage_as_of_reads_the_catalog_of_that_time(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_bytes(
        b"".join(
            event(f"e{n}", quantity="1", at=n, dimensions={"region": r}) + b"\n"
            for n, r in enumerate(["eu", "us", "us"])
        )
    )
    lake = Lake(tmp_path / "lake")
    invoke("run", "--input", str(source), "--lake", lake.root)
    before = lake.table(USAGE_WINDOWS).version()
    then = invoke("usage", "--lake", lake.root, "--group-by", "region", "--format", "json")
    hours = {
        "name": "api_calls",
        "event_meter": "api_calls",
        "aggregation": "sum",
        "unit": {"name": "k", "divide_by": 1000},
    }
    invoke("meters", "apply", catalog(tmp_path, "c", hours), "--lake", lake.root)
    again = invoke(
        "usage",
        "--lake",
        lake.root,
        "--group-by",
        "region",
        "--as-of",
        str(before),
        "--format",
        "json",
    )
    assert json.loads(again) == json.loads(then)


def cloudevent(event_id: str, second: int, tokens: int) -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": event_id,
            "source": "s",
            "subject": "acme",
            "type": "z",
            "time": f"2026-03-02T12:00:{second:02d}Z",
            "data": {"tokens": tokens},
        }
    ).encode()


def test_a_rerun_after_a_catalog_change_decides_old_lines_as_they_were_decided(tmp_path):
    # Without a catalog, CloudEvents without a quantity are quarantined; with one they count.
    source = tmp_path / "in.jsonl"
    source.write_bytes(
        cloudevent("z1", 1, 10)
        + b"\n"
        + cloudevent("z2", 2, 32)
        + b"\n"
        + event("x1", meter="x", at=3)
        + b"\n"
    )
    lake = Lake(tmp_path / "lake")
    invoke("run", "--input", str(source), "--lake", lake.root)
    tokens = catalog(
        tmp_path,
        "m",
        {"name": "x", "event_meter": "x", "aggregation": "sum"},
        {"name": "tok", "event_meter": "z", "aggregation": "sum", "value": "data.tokens"},
    )
    invoke("meters", "apply", tokens, "--lake", lake.root)
    source.write_bytes(
        source.read_bytes()
        + cloudevent("z3", 4, 5)
        + b"\n"
        + event("x2", meter="x", at=300)
        + b"\n"
    )
    invoke("run", "--input", str(source), "--lake", lake.root)
    invoke("corrections", "--lake", lake.root, "--once")
    invoke("reconcile", "--lake", lake.root)  # every window holds exactly its ledger events
    windows = {r["meter"]: r["quantity"] for r in rows(lake, USAGE_WINDOWS) if r["meter"] == "tok"}
    assert windows == {"tok": 5}  # z3 only: z1 and z2 stay quarantined, as first decided


def test_ledger_rows_an_old_flow_adds_before_the_fence_is_up_are_recomputed(tmp_path, monkeypatch):
    import meterwax.meters.apply as applying

    lake = seats_lake(tmp_path)
    later = tmp_path / "later.jsonl"
    later.write_bytes(event("late-flush", meter="seats", quantity="9", at=3600) + b"\n")
    publish = applying._publish

    def an_old_flow_flushes_first(*args, **kwargs):
        flushed = run_meterwax("run", "--input", str(later), "--lake", lake.root)
        assert flushed.returncode == 0, flushed.stderr
        return publish(*args, **kwargs)

    monkeypatch.setattr(applying, "_publish", an_old_flow_flushes_first)
    peak = catalog(tmp_path, "p", {"name": "seats", "event_meter": "seats", "aggregation": "max"})
    invoke("meters", "apply", peak, "--lake", lake.root)
    invoke("reconcile", "--lake", lake.root)
    assert daily(lake) == {"seats": "9"}
