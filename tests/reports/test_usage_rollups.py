"""``meterwax usage --granularity/--tz/--group-by``: exact totals on a lake built by ``meterwax run``.

The lake spans Europe/Berlin's autumn DST change (2026-10-25 01:00Z, a 25-hour day) and the
end of October (UTC and Berlin months end an hour apart). Every expectation is computed here
in plain Python from the rows of ``usage_windows`` or ``events``, with period boundaries
written down by hand from the calendar, not derived from meterwax's period code.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from meterwax.cli.main import main
from meterwax.sinks.lake import Lake
from meterwax.sinks.schemas import EVENTS, USAGE_WINDOWS
from meterwax.synthetic.generator import Workload, generate
from tests.helpers import event, rows, run_cli, write

HOUR = timedelta(hours=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# Europe/Berlin, by hand: CEST (+02) until 2026-10-25 01:00Z, then CET (+01).
BERLIN_DAYS = [
    (utc(2026, 10, 23, 22), "2026-10-24T00:00:00+02:00"),
    (utc(2026, 10, 24, 22), "2026-10-25T00:00:00+02:00"),  # 25 hours long
    (utc(2026, 10, 25, 23), "2026-10-26T00:00:00+01:00"),
    (utc(2026, 10, 30, 23), "2026-10-31T00:00:00+01:00"),
    (utc(2026, 10, 31, 23), "2026-11-01T00:00:00+01:00"),
    (utc(2026, 11, 1, 23), "2026-11-02T00:00:00+01:00"),
]
BERLIN_MONTHS = [
    (utc(2026, 9, 30, 22), "2026-10-01T00:00:00+02:00"),
    (utc(2026, 10, 31, 23), "2026-11-01T00:00:00+01:00"),
]
UTC_MONTHS = [
    (utc(2026, 10, 1), "2026-10-01T00:00:00Z"),
    (utc(2026, 11, 1), "2026-11-01T00:00:00Z"),
]


def label_from(boundaries: list[tuple[datetime, str]], moment: datetime) -> str:
    """The label of the last boundary at or before ``moment``."""
    found = [label for start, label in boundaries if start <= moment]
    assert found, moment
    return found[-1]


def berlin_hour(moment: datetime) -> str:
    """Berlin's offsets are whole hours, so its hours are UTC hours, labelled in local time."""
    start = moment.replace(minute=0, second=0, microsecond=0)
    offset = 2 if start < utc(2026, 10, 25, 1) else 1
    local = start + timedelta(hours=offset)
    return local.replace(tzinfo=None).isoformat() + f"+0{offset}:00"


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Lake:
    """Two partitions: one across the DST change, one across the end of October."""
    root = tmp_path_factory.mktemp("rollups")
    dst = Workload(
        events=5000,
        tenants=3,
        seed=21,
        tenant_prefix="north",
        start=utc(2026, 10, 24, 21, 30),
        events_per_second=0.3,
    )
    month_end = Workload(
        events=4500,
        tenants=2,
        seed=22,
        tenant_prefix="south",
        start=utc(2026, 10, 31, 21),
        events_per_second=0.3,
    )
    first = write(root / "dst.jsonl", list(generate(dst)))
    second = write(root / "month.jsonl", list(generate(month_end)))
    the_lake = Lake(root / "lake")
    run_cli("--input", str(first), "--input", str(second), "--lake", the_lake.root)
    return the_lake


def usage_json(lake: Lake, *args: str) -> list[dict]:
    result = CliRunner().invoke(main, ["usage", "--lake", lake.root, *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def as_totals(listed: list[dict], *keys: str) -> dict[tuple, tuple[Decimal, int]]:
    totals = {tuple(r[k] for k in keys): (Decimal(r["quantity"]), r["event_count"]) for r in listed}
    assert len(totals) == len(listed), "one row per key"
    return totals


def expected_from_windows(lake: Lake, label, keep=lambda r: True) -> dict:
    sums: dict = defaultdict(lambda: (Decimal(0), 0))
    for r in rows(lake, USAGE_WINDOWS):
        if keep(r):
            key = (r["tenant_id"], r["meter"], label(r["window_start"]))
            quantity, count = sums[key]
            sums[key] = (quantity + r["quantity"], count + r["event_count"])
    return dict(sums)


def test_hourly_rollup_in_berlin_has_the_repeated_hour_twice(lake):
    listed = usage_json(lake, "--granularity", "hour", "--tz", "Europe/Berlin")
    assert as_totals(listed, "tenant_id", "meter", "period_start") == expected_from_windows(
        lake, berlin_hour
    )
    starts = {r["period_start"] for r in listed}
    assert {"2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00"} <= starts
    assert set(listed[0]) == {"tenant_id", "meter", "period_start", "quantity", "event_count"}


def test_daily_rollup_in_berlin_counts_25_hours_on_the_autumn_day(lake):
    listed = usage_json(lake, "--granularity", "day", "--tz", "Europe/Berlin")
    expected = expected_from_windows(lake, lambda m: label_from(BERLIN_DAYS, m))
    assert as_totals(listed, "tenant_id", "meter", "period_start") == expected
    north = [r for r in rows(lake, USAGE_WINDOWS) if r["tenant_id"].startswith("north")]
    in_long_day = [r for r in north if utc(2026, 10, 24, 22) <= r["window_start"]]
    assert max(r["window_start"] for r in in_long_day) >= utc(2026, 10, 25, 2)  # past the change
    assert {r["period_start"] for r in listed if r["tenant_id"].startswith("north")} == {
        "2026-10-24T00:00:00+02:00",
        "2026-10-25T00:00:00+02:00",
    }


@pytest.mark.parametrize(
    ("tz", "boundaries"), [("Europe/Berlin", BERLIN_MONTHS), ("UTC", UTC_MONTHS)]
)
def test_monthly_rollup_follows_the_zone(lake, tz, boundaries):
    listed = usage_json(lake, "--granularity", "month", "--tz", tz)
    expected = expected_from_windows(lake, lambda m: label_from(boundaries, m))
    assert as_totals(listed, "tenant_id", "meter", "period_start") == expected
    south = {r["period_start"] for r in listed if r["tenant_id"].startswith("south")}
    assert south == {label for _, label in boundaries}


def test_filters_and_dates_are_read_in_the_zone(lake):
    tenant = "north-0001"
    listed = usage_json(
        lake,
        "--granularity",
        "day",
        "--tz",
        "Europe/Berlin",
        "--tenant",
        tenant,
        "--meter",
        "cpu_seconds",
        "--from",
        "2026-10-25",
        "--to",
        "2026-10-26",
    )
    day = [
        r
        for r in rows(lake, USAGE_WINDOWS)
        if r["tenant_id"] == tenant
        and r["meter"] == "cpu_seconds"
        and utc(2026, 10, 24, 22) <= r["window_start"] < utc(2026, 10, 25, 23)
    ]
    assert day
    assert listed == [
        {
            "tenant_id": tenant,
            "meter": "cpu_seconds",
            "period_start": "2026-10-25T00:00:00+02:00",
            "quantity": listed[0]["quantity"],
            "event_count": sum(r["event_count"] for r in day),
        }
    ]
    assert Decimal(listed[0]["quantity"]) == sum(r["quantity"] for r in day)


def test_group_by_a_dimension_totals_the_ledger(lake):
    listed = usage_json(
        lake, "--granularity", "hour", "--tz", "Europe/Berlin", "--group-by", "region"
    )
    expected: dict = defaultdict(lambda: (Decimal(0), 0))
    for row in rows(lake, EVENTS):
        region = dict(row["dimensions"] or []).get("region")
        key = (row["tenant_id"], row["meter"], region, berlin_hour(row["event_time"]))
        quantity, count = expected[key]
        expected[key] = (quantity + row["quantity"], count + 1)
    assert as_totals(listed, "tenant_id", "meter", "region", "period_start") == dict(expected)
    assert {r["region"] for r in listed} == {"eu-west-1", "us-east-1", "ap-south-1"}
    # No late events were corrected and no window conflicted: the ledger equals the windows.
    merged: dict = defaultdict(lambda: (Decimal(0), 0))
    for r in listed:
        key = (r["tenant_id"], r["meter"], r["period_start"])
        merged[key] = (merged[key][0] + Decimal(r["quantity"]), merged[key][1] + r["event_count"])
    assert dict(merged) == expected_from_windows(lake, berlin_hour)


def test_group_by_a_missing_dimension_gives_one_null_group(lake):
    listed = usage_json(lake, "--group-by", "colour", "--tenant", "south-0000")
    assert {r["colour"] for r in listed} == {None}
    windows = [r for r in rows(lake, USAGE_WINDOWS) if r["tenant_id"] == "south-0000"]
    assert len(listed) == len(windows)  # no --granularity: one period per window
    assert sum(Decimal(r["quantity"]) for r in listed) == sum(r["quantity"] for r in windows)


def test_csv_has_the_same_rows_as_json(lake):
    args = ["--granularity", "day", "--tz", "America/New_York", "--group-by", "plan"]
    listed = usage_json(lake, *args)
    result = CliRunner().invoke(main, ["usage", "--lake", lake.root, *args, "--format", "csv"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == "tenant_id,meter,plan,period_start,quantity,event_count"
    assert lines[1:] == [
        f"{r['tenant_id']},{r['meter']},{r['plan']},{r['period_start']},{r['quantity']},"
        f"{r['event_count']}"
        for r in listed
    ]
    assert all(r["period_start"].endswith(("-04:00", "-05:00")) for r in listed)


def test_the_table_format_lists_every_period(lake):
    result = CliRunner().invoke(
        main, ["usage", "--lake", lake.root, "--granularity", "month", "--tz", "Europe/Berlin"]
    )
    assert result.exit_code == 0, result.output
    listed = usage_json(lake, "--granularity", "month", "--tz", "Europe/Berlin")
    assert result.output.strip().endswith(f"{len(listed)} periods")
    assert "2026-11-01 00:00:00+0100" in result.output


def test_the_zone_comes_from_the_environment(lake, monkeypatch):
    monkeypatch.setenv("METERWAX_TZ", "Europe/Berlin")
    assert usage_json(lake, "--granularity", "day") == usage_json(
        lake, "--granularity", "day", "--tz", "Europe/Berlin"
    )


def test_raw_windows_are_shown_in_the_zone(lake):
    utc_rows = usage_json(lake, "--tenant", "south-0001")
    berlin_rows = usage_json(lake, "--tenant", "south-0001", "--tz", "Europe/Berlin")
    assert len(utc_rows) == len(berlin_rows) > 0
    for plain, local in zip(utc_rows, berlin_rows, strict=True):
        assert datetime.fromisoformat(plain["window_start"]) == datetime.fromisoformat(
            local["window_start"]
        )
        assert local["window_start"].endswith("+01:00")
        assert plain["quantity"] == local["quantity"]


@pytest.fixture(scope="module")
def hourly_lake(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hourly")
    source = write(
        root / "events.jsonl",
        list(generate(Workload(events=400, tenants=2, events_per_second=0.05, seed=4))),
    )
    run_cli("--input", str(source), "--lake", str(root / "lake"), "--window", "1h")
    return root / "lake"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--granularity", "minute"], "holds 1h windows, longer than a minute"),
        (
            ["--granularity", "hour", "--tz", "Asia/Kolkata"],
            "spans two hours in Asia/Kolkata (UTC+05:30)",
        ),
        (
            ["--granularity", "day", "--tz", "Pacific/Marquesas"],
            "spans two days in Pacific/Marquesas (UTC-09:30)",
        ),
        (["--group-by", "meter"], "collides with an output column"),
        (["--tz", "Mars/Olympus_Mons"], "is not an IANA time zone"),
        (["--from", "yesterday"], "--from 'yesterday' is not a date"),
        (["--from", "2026-02-01", "--to", "2026-01-01"], "is not before --to 2026-01-01"),
    ],
)
def test_impossible_rollups_are_refused_clearly(hourly_lake, args, message):
    result = CliRunner().invoke(main, ["usage", "--lake", str(hourly_lake), *args])
    assert result.exit_code == 2
    assert message in result.output


@pytest.mark.parametrize(
    "args",
    [["--granularity", "hour", "--tz", "Europe/Berlin"], ["--granularity", "day", "--tz", "UTC"]],
)
def test_windows_that_fit_the_periods_roll_up(hourly_lake, args):
    listed = usage_json(Lake(hourly_lake), *args)
    windows = rows(Lake(hourly_lake), USAGE_WINDOWS)
    assert sum(r["event_count"] for r in listed) == sum(r["event_count"] for r in windows)
    assert sum(Decimal(r["quantity"]) for r in listed) == sum(r["quantity"] for r in windows)


def test_group_by_a_dimension_leaves_voided_ledger_copies_out(tmp_path):
    # One key counted twice through two files; reconcile --fix voids the later copy.
    dims = {"region": "eu-west-1"}
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_bytes(event("k", quantity="5", at=1, dimensions=dims) + b"\n")
    second.write_bytes(event("k", quantity="5", at=1, dimensions=dims) + b"\n")
    lake = Lake(tmp_path / "lake")
    CliRunner().invoke(
        main, ["run", "--input", str(first), "--input", str(second), "--lake", lake.root]
    )
    CliRunner().invoke(main, ["corrections", "--lake", lake.root, "--once"])
    fixed = CliRunner().invoke(main, ["reconcile", "--lake", lake.root, "--fix"])
    assert fixed.exit_code == 0, fixed.output
    out = CliRunner().invoke(
        main, ["usage", "--lake", lake.root, "--group-by", "region", "--format", "json"]
    )
    [row] = json.loads(out.stdout)
    assert (Decimal(row["quantity"]), row["event_count"]) == (Decimal(5), 1)


def test_reports_past_2262_and_before_1970_do_not_crash(tmp_path):
    source = tmp_path / "late.jsonl"
    source.write_bytes(
        event("a", at=datetime(2299, 5, 1, tzinfo=UTC), dimensions={"region": "r"})
        + b"\n"
        + event("b", at=datetime(2299, 5, 1, 0, 2, tzinfo=UTC), dimensions={"region": "r"})
        + b"\n"
    )
    lake = Lake(tmp_path / "lake")
    run_cli("--input", str(source), "--lake", lake.root, "--max-future", "off")

    def ok(*args: str) -> str:
        result = CliRunner().invoke(main, [*args, "--lake", lake.root])
        assert result.exit_code == 0, result.output
        return result.stdout

    assert "2299-05-01" in ok("usage", "--group-by", "region")
    assert "2299-05-01" in ok("usage", "--from", "2299-01-01", "--to", "2999-01-01")
    assert "2 windows" in ok("usage", "--from", "2299-01-01")
    assert "0 windows" in ok("usage", "--to", "1900-01-01")
    ok("reconcile", "--from", "2299-01-01", "--to", "2999-01-01")
    ok("reconcile", "--to", "0001-01-02")
