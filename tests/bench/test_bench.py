"""``meterwax bench`` options refused before any broker is asked, and the sweep's points and
summary (no broker; the sweep end to end is in tests/integration/test_bench.py)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from meterwax.bench.sweep import Point, cpu_flatness, sweep_points
from meterwax.cli.main import main

NO_BROKER = "127.0.0.1:1"
"""Nothing listens here: a refused option must be refused before any broker is asked."""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tenants", "0"], "--tenants must be at least 1, got 0"),
        (["--tenants", "-5"], "--tenants must be at least 1, got -5"),
        (["--sweep", "--sweep-tenants", "10,0"], "--sweep-tenants must be at least 1, got 0"),
        (["--sweep", "--sweep-events", "1000,many"], "--sweep-events: 'many' is not a whole"),
        (["--sweep", "--sweep-tenants", "10,10"], "--sweep-tenants: 10 given twice"),
        (["--sweep", "--tenants", "10"], "--tenants: not with --sweep"),
        (["--sweep", "--events", "1000"], "--events: not with --sweep"),
        (["--sweep-tenants", "10,20"], "--sweep-tenants: only with --sweep"),
        (["--sweep", "--contestants", "floor,turbo"], "--contestants: unknown turbo"),
    ],
)
def test_a_bad_option_is_refused_naming_it(args, message):
    result = CliRunner().invoke(main, ["bench", "--brokers", NO_BROKER, *args])
    assert result.exit_code == 2, result.output
    assert f"error: {message}" in result.output


def test_the_sweep_runs_every_tenant_count_then_every_other_event_count():
    assert sweep_points([1000, 10_000, 100_000], [1_000_000, 4_000_000]) == [
        Point(1000, 1_000_000),
        Point(10_000, 1_000_000),
        Point(100_000, 1_000_000),
        Point(1000, 4_000_000),
    ]
    assert sweep_points([5], [7]) == [Point(5, 7)]


def _point(tenants: int, events: int, **cpu_us: float) -> dict:
    return {
        "tenants": tenants,
        "events": events,
        "contestants": {name: {"cpu_us_per_event": us} for name, us in cpu_us.items()},
    }


def test_cpu_flatness_compares_the_tenant_points_only():
    results = [
        _point(1000, 100, floor=2.0, meterwax=30.0),
        _point(10_000, 100, floor=2.2, meterwax=45.0),
        {"tenants": 100_000, "events": 100, "failed": "meterwax failed: exit 1"},
        _point(1000, 400, floor=9.0, meterwax=300.0),  # the event sweep: not compared
    ]
    flatness = cpu_flatness(results)
    assert flatness["tenants"] == [1000, 10_000]
    assert flatness["contestants"]["floor"] == {
        "cpu_us_per_event": [2.0, 2.2],
        "largest_over_smallest": 1.1,
        "flat": True,
    }
    assert flatness["contestants"]["meterwax"]["largest_over_smallest"] == 1.5
    assert flatness["contestants"]["meterwax"]["flat"] is False
    assert cpu_flatness(results[2:]) is None


def test_help_shows_the_sweep_with_examples():
    result = CliRunner().invoke(main, ["bench", "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output
    assert "meterwax bench --sweep --sweep-tenants 100,1000 --sweep-events 50000,100000" in (
        result.output
    )
    for option in ("--tenants", "--sweep-tenants", "--sweep-events"):
        assert option in result.output


def test_the_per_event_costs_cover_every_step_and_sum_the_unavoidable_ones():
    from meterwax.bench.per_event import UNAVOIDABLE, measure, render, report

    costs = measure(events=3_000, repeat=1)
    assert set(UNAVOIDABLE) <= set(costs)
    assert all(cost > 0 for cost in costs.values())
    result = report(costs, floor=400_000)
    assert result["unavoidable_us_per_event"] == pytest.approx(
        sum(costs[name] for name in UNAVOIDABLE), abs=1e-6
    )
    assert result["budget_at_half_floor_us"] == 5.0  # 1 / 200,000 events/s
    assert "budget at 0.5× floor" in render(result)
