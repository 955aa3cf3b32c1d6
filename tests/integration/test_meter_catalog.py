"""A six-meter catalog over Kafka, end to end, against an independent computation.

One meter of each aggregation (count, unique_count, max, min, latest) and a filtered, grouped
sum, over a generated stream with duplicates, late and invalid events. Every window and every
day rollup must equal ``tests/catalog_reference.py`` over the events the stream means to
count; then a changed catalog is applied: its dry run writes nothing, the real apply
recomputes exactly the changed meter with audit rows, and reconcile stays clean.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from meterwax.cli.main import main
from meterwax.sinks.lake import Lake
from meterwax.sinks.schemas import ALL_TABLES, USAGE_CORRECTIONS, USAGE_WINDOWS
from meterwax.synthetic.generator import Workload, generate
from tests.catalog_reference import comparable, daily, lake_windows, meter_windows, parse_event
from tests.helpers import rows, run_cli
from tests.kafka_helpers import produce_generated

pytestmark = pytest.mark.kafka

SIX_METERS = {
    "meters": [
        {"name": "requests", "event_meter": "api_calls", "aggregation": "count"},
        {
            "name": "active_users",
            "event_meter": "api_calls",
            "aggregation": "unique_count",
            "value": "dimensions.user_id",
        },
        {"name": "peak_cpu", "event_meter": "cpu_seconds", "aggregation": "max"},
        {"name": "least_storage", "event_meter": "storage_gb_hours", "aggregation": "min"},
        {"name": "storage_now", "event_meter": "storage_gb_hours", "aggregation": "latest"},
        {
            "name": "eu_cpu",
            "event_meter": "cpu_seconds",
            "aggregation": "sum",
            "filter": {"region": ["eu-west-1"]},
            "group_by": ["plan"],
        },
    ]
}
WINDOW = timedelta(minutes=1)
START = datetime(2026, 1, 5, 23, 40, tzinfo=UTC)  # the stream crosses midnight


def invoke(*args: str, expect: int = 0) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result.stdout


def counted(messages) -> list[dict]:
    """The events the stream means to count once corrections have run (first copies)."""
    seen, events = set(), []
    for m in messages:
        if m.intent in {"valid", "late"} and (m.tenant_id, m.event_id) not in seen:
            seen.add((m.tenant_id, m.event_id))
            events.append(parse_event(m.payload))
    return events


def day_rollups(lake: Lake) -> dict[tuple, Decimal | None]:
    fixed = {"tenant_id", "meter", "period_start", "quantity", "event_count", "unvalued_count"}
    result = {}
    for row in json.loads(
        invoke("usage", "--lake", lake.root, "--granularity", "day", "--format", "json")
    ):
        groups = {k: v for k, v in row.items() if k not in fixed}
        key = json.dumps(groups, sort_keys=True, separators=(",", ":")) if groups else ""
        day = datetime.fromisoformat(row["period_start"]).astimezone(UTC)
        quantity = None if row["quantity"] is None else Decimal(row["quantity"])
        result[(row["tenant_id"], row["meter"], key, day)] = quantity
    return result


def write_catalog(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document))
    return path


def table_versions(lake: Lake) -> dict[str, int]:
    return {spec.name: lake.table(spec).version() for spec in ALL_TABLES}


def test_six_meters_over_kafka_equal_an_independent_computation(
    tmp_path, bootstrap, cluster, new_topic
):
    topic = new_topic(3)
    workload = Workload(
        events=4000,
        tenants=6,
        users=25,
        late=0.02,
        duplicates=0.03,
        invalid=0.005,
        seed=31,
        start=START,
        events_per_second=2.0,
    )
    messages = list(generate(workload))
    produce_generated(cluster, topic, messages)
    lake = Lake(tmp_path / "lake")
    catalog = write_catalog(tmp_path / "meters.yaml", SIX_METERS)
    invoke("meters", "apply", str(catalog), "--lake", lake.root)

    summary = run_cli(
        "--brokers", bootstrap, "--topic", topic, "--lake", lake.root, "--stop-at-end"
    )
    assert summary["accounted"] is True
    assert summary["catalog_version"] == 1
    assert summary["unmetered"] == 0
    invoke("corrections", "--lake", lake.root, "--once")

    events = counted(messages)
    expected = meter_windows(events, SIX_METERS["meters"], WINDOW)
    assert {key[1] for key in expected} == {m["name"] for m in SIX_METERS["meters"]}
    assert any(key[3] for key in expected)  # eu_cpu has groups
    assert comparable(lake_windows(rows(lake, USAGE_WINDOWS))) == comparable(expected)
    assert day_rollups(lake) == daily(expected)
    # unique_count over a day is the distinct users of the day, not the sum of the windows'.
    users_per_day = {k: v for k, v in daily(expected).items() if k[1] == "active_users"}
    window_sums: dict[tuple, Decimal] = {}
    for (tenant, meter, start, group), value in expected.items():
        if meter == "active_users":
            day = (tenant, meter, group, datetime(start.year, start.month, start.day, tzinfo=UTC))
            window_sums[day] = window_sums.get(day, Decimal(0)) + value["quantity"]
    assert any(window_sums[k] > users_per_day[k] for k in users_per_day)
    invoke("reconcile", "--lake", lake.root)

    # A changed catalog: eu_cpu takes a second region.
    changed = json.loads(json.dumps(SIX_METERS))
    changed["meters"][5]["filter"]["region"] = ["eu-west-1", "us-east-1"]
    new_catalog = write_catalog(tmp_path / "meters-2.yaml", changed)
    before = table_versions(lake)
    dry = json.loads(
        invoke(
            "meters",
            "apply",
            str(new_catalog),
            "--lake",
            lake.root,
            "--dry-run",
            "--format",
            "json",
        )
    )
    assert table_versions(lake) == before
    assert dry["changed"] == ["eu_cpu"] and dry["new"] == []
    assert dry["windows"] and {w["meter"] for w in dry["windows"]} == {"eu_cpu"}

    audit_before = len(rows(lake, USAGE_CORRECTIONS))
    applied = json.loads(
        invoke("meters", "apply", str(new_catalog), "--lake", lake.root, "--format", "json")
    )
    assert applied["version_after"] == 2
    audit = [r for r in rows(lake, USAGE_CORRECTIONS) if r["catalog_version_after"] == 2]
    assert len(rows(lake, USAGE_CORRECTIONS)) == audit_before + len(audit)
    assert audit and {r["meter"] for r in audit} == {"eu_cpu"}
    assert {r["reason"] for r in audit} == {"meter_change"}
    assert {(r["catalog_version_before"], r["catalog_version_after"]) for r in audit} <= {
        (1, 2),
        (None, 2),
    }
    assert len(audit) == len(applied["windows"]) == len(dry["windows"])
    expected = meter_windows(events, changed["meters"], WINDOW)
    assert comparable(lake_windows(rows(lake, USAGE_WINDOWS))) == comparable(expected)
    assert day_rollups(lake) == daily(expected)
    invoke("reconcile", "--lake", lake.root)
    # Applying the same file again changes nothing.
    invoke("meters", "apply", str(new_catalog), "--lake", lake.root)
    assert len(rows(lake, USAGE_CORRECTIONS)) == audit_before + len(audit)
