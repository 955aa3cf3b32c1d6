"""``meterwax bench --sweep``: the benchmark at several (tenants, events) points, one topic each.

The points are a tenant sweep at the first event count, then an event sweep at the first
tenant count: tenants 1,000, 10,000, 100,000 and events 1,000,000, 4,000,000 give
(1,000, 1M), (10,000, 1M), (100,000, 1M), (1,000, 4M). Each point is one ordinary
:func:`~meterwax.bench.harness.run_bench` (a fresh topic, deleted after the point; every
check of a single benchmark), and the sweep's result keeps every point's full result.

What the sweep asks is whether per-event cost depends on the number of tenants: more tenants
means more windows open at once and more keys in every per-key structure. The summary line
compares each contestant's CPU per event (CPU seconds over events, start-up included) across
the tenant points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from meterwax.bench.harness import BenchOptions, Echo, run_bench
from meterwax.bench.runner import ContestantFailedError

DEFAULT_TENANTS = (1000, 10_000, 100_000)
DEFAULT_EVENTS = (1_000_000, 4_000_000)
DEFAULT_CONTESTANTS = ("floor", "meterwax")
FLAT_RATIO = 1.25
"""Largest over smallest CPU per event that still counts as flat: runs of the same point on
the shared 2-core machine differ by up to about 10% in CPU, so two points can differ by about
20% with nothing changed."""


@dataclass(frozen=True)
class Point:
    """One workload of the sweep."""

    tenants: int
    events: int


def sweep_points(tenants: Sequence[int], events: Sequence[int]) -> list[Point]:
    """Every tenant count at the first event count, then every other event count at the first
    tenant count."""
    return [Point(t, events[0]) for t in tenants] + [Point(tenants[0], e) for e in events[1:]]


def run_sweep(options: BenchOptions, points: Sequence[Point], echo: Echo) -> dict[str, Any]:
    """Run the benchmark at every point; ``problems`` lists every point's, prefixed by it.

    A point whose contestant failed (a process exited non-zero) is recorded with its error
    and the sweep goes on with the next point.
    """
    results: list[dict[str, Any]] = []
    problems: list[str] = []
    for number, point in enumerate(points, 1):
        echo(f"point {number}/{len(points)}: {point.tenants:,} tenants, {point.events:,} events")
        point_options = replace(options, tenants=point.tenants, events=point.events)
        try:
            result = run_bench(point_options, echo)
        except ContestantFailedError as error:
            echo(f"error: {error}")
            results.append({"tenants": point.tenants, "events": point.events, "failed": str(error)})
            problems.append(f"{_name(point)}: {error}")
            continue
        results.append(result)
        problems.extend(f"{_name(point)}: {problem}" for problem in result["problems"])
    return {
        "points": [[p.tenants, p.events] for p in points],
        "partitions": options.partitions,
        "runs_per_contestant": options.runs,
        "contestants": list(options.contestants),
        "cpu_per_event_across_tenants": cpu_flatness(results),
        "problems": problems,
        "sweep": results,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _name(point: Point) -> str:
    return f"{point.tenants:,} tenants, {point.events:,} events"


def cpu_flatness(results: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Per contestant, its CPU µs per event at each tenant point and largest / smallest.

    The tenant points are the completed points at the first point's event count. None when
    fewer than two of them completed (nothing to compare).
    """
    if not results:
        return None
    events = results[0]["events"]
    points = [r for r in results if r["events"] == events and "failed" not in r]
    if len(points) < 2:
        return None
    contestants: dict[str, Any] = {}
    for name in points[0]["contestants"]:
        per_event = [r["contestants"][name]["cpu_us_per_event"] for r in points]
        ratio = round(max(per_event) / min(per_event), 3) if min(per_event) > 0 else None
        contestants[name] = {
            "cpu_us_per_event": per_event,
            "largest_over_smallest": ratio,
            "flat": ratio is not None and ratio <= FLAT_RATIO,
        }
    return {
        "events": events,
        "tenants": [r["tenants"] for r in points],
        "flat_when_at_most": FLAT_RATIO,
        "contestants": contestants,
    }


def render_sweep(sweep: dict[str, Any]) -> str:
    """One row per (point, contestant), then whether CPU per event stayed flat."""
    header = (
        f"{'tenants':>9}{'events':>11}  {'contestant':<16}{'events/s':>10}{'× floor':>9}"
        f"{'peak RSS':>11}{'dedupe B/id':>13}{'CPU µs/event':>14}"
    )
    lines = [
        f"meterwax bench --sweep: {len(sweep['points'])} points, {sweep['partitions']} "
        f"partitions, median of {sweep['runs_per_contestant']} runs",
        header,
        "-" * len(header),
    ]
    for result in sweep["sweep"]:
        where = f"{result['tenants']:>9,}{result['events']:>11,}  "
        if "failed" in result:
            lines.append(f"{where}failed: {result['failed'].splitlines()[0]}")
            continue
        for name, entry in result["contestants"].items():
            ratio = entry["ratio_to_floor"]
            per_id = entry.get("dedupe_bytes_per_id")
            lines.append(
                f"{where}{name:<16}{entry['events_per_s']:>10,}"
                f"{(f'{ratio:.2f}' if ratio is not None else '-'):>9}"
                f"{entry['peak_rss_bytes'] / 2**20:>7,.0f} MiB"
                f"{(f'{per_id:.1f}' if per_id is not None else '-'):>13}"
                f"{entry['cpu_us_per_event']:>14.2f}"
            )
    identical = all(r.get("totals_identical") for r in sweep["sweep"])
    lines.append(f"totals identical at every point: {'yes' if identical else 'NO'}")
    lines.extend(_flatness_lines(sweep["cpu_per_event_across_tenants"]))
    return "\n".join(lines)


def _flatness_lines(flatness: dict[str, Any] | None) -> list[str]:
    """One line per contestant: its CPU µs per event across the tenant points, flat or not."""
    if flatness is None:
        return ["CPU per event across tenants: fewer than two tenant points completed"]
    tenants = " → ".join(f"{t:,}" for t in flatness["tenants"])
    lines = []
    for name, entry in flatness["contestants"].items():
        ratio = entry["largest_over_smallest"]
        low, high = min(entry["cpu_us_per_event"]), max(entry["cpu_us_per_event"])
        verdict = (
            f"largest / smallest ×{ratio:.2f}: "
            f"{'flat' if entry['flat'] else 'NOT flat'} (flat: at most "
            f"×{flatness['flat_when_at_most']:.2f})"
            if ratio is not None
            else "no CPU measured"
        )
        lines.append(
            f"CPU per event, {tenants} tenants at {flatness['events']:,} events: {name} "
            f"{low:.2f}–{high:.2f} µs, {verdict}"
        )
    return lines
