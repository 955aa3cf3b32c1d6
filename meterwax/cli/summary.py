"""The one-screen summary printed at the end of ``meterwax run`` (and its JSON form)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from meterwax.metrics import RunStats
from meterwax.operators.records import SourcePartition


@dataclass
class RunReport:
    """What a run did, for the summary."""

    stats: RunStats
    seconds: float
    partitions: list[SourcePartition] = field(default_factory=list)
    workers: int = 1
    stopped_by: str | None = None
    """The signal that stopped a run before the end of its input (None: it ran to the end)."""


OUTCOMES = ("counted", "duplicates", "late", "quarantined")
"""Every message read ends in exactly one of these (heartbeats are control records)."""


def summary_data(report: RunReport, *, title: str) -> dict[str, Any]:
    """The summary as plain data (what ``--format json`` prints)."""
    counters: Counter[str] = report.stats.snapshot()
    reasons = {
        key.split(".", 1)[1]: value
        for key, value in sorted(counters.items())
        if key.startswith("quarantined.")
    }
    read = counters["read"]
    accounted = sum(counters[name] for name in OUTCOMES) + counters["heartbeats"]
    return {
        "title": title,
        "read": read,
        "counted": counters["counted"],
        "already_committed": counters["already_committed"],
        "duplicates": counters["duplicates"],
        "late": counters["late"],
        "quarantined": counters["quarantined"],
        "quarantined_by_reason": reasons,
        "heartbeats": counters["heartbeats"],
        "catalog_version": report.stats.catalog_version,
        "unmetered": counters["unmetered"],
        "unvalued": counters["unvalued"],
        "slices_recomputed": counters["slices_recomputed"],
        "windows_written": counters["windows_closed"],
        "windows_already_written": counters["windows_already_written"],
        "accounted": accounted == read,
        "seconds": round(report.seconds, 3),
        "events_per_second": round(read / report.seconds) if report.seconds > 0 else None,
        "delta_commits": report.stats.commits,
        "commit_conflicts_retried": report.stats.commit_retries,
        "partitions": [p.key for p in report.partitions],
        # The dedupe index at the end of the run, over this process's partitions (the
        # benchmark reports bytes per key from these).
        "dedupe_keys": sum(report.stats.dedupe_keys.values()),
        "dedupe_bytes": sum(report.stats.dedupe_bytes.values()),
        "workers": report.workers,
    }


def render_summary(data: dict[str, Any]) -> str:
    """Human-readable summary; every number a reader needs to trust the run."""
    lines = [data["title"]]

    def row(label: str, value: int, note: str = "") -> None:
        lines.append(f"  {label:<22}{value:>14,}{('   ' + note) if note else ''}")

    row("events read", data["read"])
    row("counted", data["counted"], "→ events (ledger) and usage_windows")
    if data["catalog_version"]:
        row(
            "  no meter takes them",
            data["unmetered"],
            f"in the ledger; no meter of catalog version {data['catalog_version']} uses them",
        )
        row(
            "  taken unvalued",
            data["unvalued"],
            "meter contributions without a value (usage_windows.unvalued_count)",
        )
    if data["already_committed"]:
        row(
            "  already in the lake",
            data["already_committed"],
            "written by an earlier run: skipped, never counted twice",
        )
    row("duplicates", data["duplicates"], "dropped: same (tenant_id, id) seen before")
    row("late", data["late"], "→ late_events; `meterwax corrections --once` counts them")
    row("quarantined", data["quarantined"], "→ quarantine" if data["quarantined"] else "")
    for reason, count in data["quarantined_by_reason"].items():
        row(f"  {reason}", count)
    if data["heartbeats"]:
        row("heartbeats", data["heartbeats"])
    row("windows written", data["windows_written"])
    if data["slices_recomputed"]:
        row(
            "  left to corrections",
            data["slices_recomputed"],
            "open when the catalog changed: → window_conflicts",
        )
    if data["windows_already_written"]:
        row("  already in the lake", data["windows_already_written"], "skipped, as above")
    check = "✓" if data["accounted"] else "✗ MISMATCH"
    lines.append(f"  read = counted + duplicates + late + quarantined: {check}")
    rate = data["events_per_second"]
    lines.append(
        f"  {data['seconds']:.1f}s"
        + (f", {rate:,} events/s" if rate else "")
        + f"; {data['delta_commits']} Delta commits"
        + f" ({data['commit_conflicts_retried']} conflicts retried)"
    )
    return "\n".join(lines)
