"""``meterwax bench``: load B1 once, run every contestant on it, compare, report.

The contestants run in rounds (floor, meterwax, …, then again), not each one ``runs`` times
in a row, so a burst of load on this shared 2-core machine hits all of them alike rather
than one. Each run is its own process (see runner.py); the figures are medians over runs.

Before any number is reported, the harness checks that every run read every message of the
topic and that every contestant's window totals equal meterwax's exactly (revision 0 of
``usage_windows``: its on-time windows, before corrections), run after run. A difference is
a failure with a diagnosis, never averaged away.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from meterwax.bench.contestants import CONTESTANTS, DEFAULT, Contestant, Target
from meterwax.bench.quixenv import REPO, quix_python, quix_versions
from meterwax.bench.runner import ContestantFailedError, Measured, run_processes
from meterwax.bench.totals import Totals, compare, read_meterwax_windows, read_windows
from meterwax.bench.workload import TENANTS, LoadedTopic, delete_topic, load_topic
from meterwax.kafka.clients import Cluster
from meterwax.synthetic.generator import describe_intents

Echo = Callable[[str], None]


@dataclass(frozen=True)
class BenchOptions:
    """What to run."""

    brokers: str
    events: int = 1_000_000
    partitions: int = 4
    tenants: int = TENANTS
    runs: int = 3
    contestants: tuple[str, ...] = DEFAULT


@dataclass
class _Record:
    """Every run of one contestant, and the totals of its first run."""

    contestant: Contestant
    runs: list[tuple[Measured, int]]
    totals: Totals | None = None


def run_bench(options: BenchOptions, echo: Echo) -> dict[str, Any]:
    """Run the benchmark; the result's ``problems`` list is empty when everything checked out."""
    contestants = [CONTESTANTS[name] for name in options.contestants]
    python = quix_python() if "quix" in options.contestants else None
    cluster = Cluster(options.brokers)
    load_start = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="meterwax-bench-"))
    problems: list[str] = []
    echo(
        f"loading {options.events:,} events (B1, {options.tenants:,} tenants) into "
        f"{options.partitions} partitions…"
    )
    loaded = load_topic(cluster, options.events, options.partitions, options.tenants)
    echo(
        f"  {loaded.topic}: {describe_intents(loaded.intents)} in {loaded.seconds:.1f}s; "
        f"load average {_load()}"
    )
    records = {c.name: _Record(c, []) for c in contestants}
    try:
        target = Target(options.brokers, loaded.topic, python)
        for round_number in range(1, options.runs + 1):
            for contestant in contestants:
                record = records[contestant.name]
                lake = workdir / f"{contestant.name}-{round_number}"
                _prepare(contestant, lake)
                measured = run_processes(
                    contestant.commands(target, lake), workdir / "logs", lake.name
                )
                messages = contestant.messages(measured.outputs)
                record.runs.append((measured, messages))
                echo(_run_line(round_number, options, contestant.name, measured, messages))
                if messages != options.events:
                    problems.append(
                        f"{contestant.name} run {round_number} read {messages:,} messages, "
                        f"not {options.events:,}"
                    )
                _check_windows(record, lake, round_number, problems)
                shutil.rmtree(lake, ignore_errors=True)
        identical = _compare_contestants(records, problems)
    finally:
        delete_topic(cluster, loaded.topic)
    result = _result(options, loaded, records, identical, problems, python, load_start)
    if problems:
        echo(f"logs kept in {workdir / 'logs'}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def _prepare(contestant: Contestant, lake: Path) -> None:
    """Run the contestant's untimed preparation (B2: apply its catalog to the fresh lake)."""
    if contestant.prepare is None:
        return
    lake.parent.mkdir(parents=True, exist_ok=True)
    command = contestant.prepare(lake)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        msg = f"{contestant.name}: preparing failed: {done.stderr.strip() or done.stdout.strip()}"
        raise ContestantFailedError(msg)


def _check_windows(record: _Record, lake: Path, round_number: int, problems: list[str]) -> None:
    """Read a run's window totals; later runs must equal the first run exactly.

    A contestant with windows of its own meters (B2) is checked by its own command instead
    (reconcile: every window equals its ledger events under the catalog).
    """
    check = record.contestant.check
    if check is not None:
        done = subprocess.run(check(lake), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            problems.append(
                f"{record.contestant.name} run {round_number}: {' '.join(check(lake)[2:4])} "
                f"failed: {done.stdout.strip()[-500:]}"
            )
    kind = record.contestant.windows
    if kind is None:
        return
    totals = read_meterwax_windows(lake) if kind == "usage_windows" else read_windows(lake)
    if record.totals is None:
        record.totals = totals
        return
    name = record.contestant.name
    comparison = compare(f"{name} run 1", record.totals, f"{name} run {round_number}", totals)
    if not comparison.identical:
        problems.append(comparison.describe())


def _compare_contestants(records: dict[str, _Record], problems: list[str]) -> bool:
    """Every contestant's totals against meterwax's (or the first with windows)."""
    with_windows = [r for r in records.values() if r.totals is not None]
    if len(with_windows) < 2:
        return len(with_windows) == 1
    reference = records.get("meterwax") or with_windows[0]
    identical = True
    for record in with_windows:
        if record is reference:
            continue
        assert reference.totals is not None
        assert record.totals is not None
        comparison = compare(
            reference.contestant.name, reference.totals, record.contestant.name, record.totals
        )
        if not comparison.identical:
            identical = False
            problems.append(comparison.describe())
    return identical


def _median_entry(record: _Record, events: int) -> dict[str, Any]:
    runs = [
        {
            "seconds": round(m.seconds, 3),
            "events_per_s": round(events / m.seconds),
            "peak_rss_bytes": m.peak_rss_bytes,
            "cpu_seconds": round(m.cpu_seconds, 2),
            "load_avg_1m": round(m.load_avg_1m, 2),
            "messages": messages,
            "in_process_seconds": max(float(o.get("seconds", 0)) for o in m.outputs),
        }
        for m, messages in record.runs
    ]
    seconds = statistics.median(r["seconds"] for r in runs)
    cpu_seconds = statistics.median(m.cpu_seconds for m, _ in record.runs)
    entry: dict[str, Any] = {
        "events_per_s": round(events / seconds),
        "seconds": seconds,
        "peak_rss_bytes": round(statistics.median(r["peak_rss_bytes"] for r in runs)),
        "cpu_seconds": round(cpu_seconds, 2),
        "cpu_us_per_event": round(cpu_seconds / events * 1e6, 2),
        "processes": len(record.runs[0][0].outputs),
        "runs": runs,
    }
    if record.contestant.outcomes is not None:
        entry["outcomes"] = record.contestant.outcomes(record.runs[0][0].outputs)
    per_id = _dedupe_bytes_per_id(record)
    if per_id is not None:
        entry["dedupe_bytes_per_id"] = per_id
    if record.totals is not None:
        entry["windows"] = len(record.totals)
        entry["window_tenants"] = len({tenant for tenant, _meter, _start in record.totals})
    return entry


def _dedupe_bytes_per_id(record: _Record | None) -> float | None:
    """meterwax's dedupe index bytes per key at the end of its runs (median), if it reported."""
    if record is None:
        return None
    ratios = [
        o["dedupe_bytes"] / o["dedupe_keys"]
        for measured, _ in record.runs
        for o in measured.outputs
        if o.get("dedupe_keys")
    ]
    return round(statistics.median(ratios), 1) if ratios else None


def _result(
    options: BenchOptions,
    loaded: LoadedTopic,
    records: dict[str, _Record],
    identical: bool,
    problems: list[str],
    python: Path | None,
    load_start: tuple[float, float, float],
) -> dict[str, Any]:
    contestants = {name: _median_entry(r, options.events) for name, r in records.items()}
    floor = contestants.get("floor")
    for entry in contestants.values():
        entry["ratio_to_floor"] = (
            round(entry["events_per_s"] / floor["events_per_s"], 3) if floor else None
        )
    meterwax = records.get("meterwax")
    return {
        "events": options.events,
        "tenants": options.tenants,
        "partitions": options.partitions,
        "runs_per_contestant": options.runs,
        "totals_identical": identical and not problems,
        "dedupe_state_bytes_per_id": _dedupe_bytes_per_id(meterwax),
        "dedupe_keys": (
            meterwax.runs[0][0].outputs[0].get("dedupe_keys") if meterwax is not None else None
        ),
        "workload": {
            "name": "B1",
            "tenants": loaded.tenants,
            "meters": 3,
            "window": "1m",
            "allowed_lateness": "30s",
            "events_per_second_of_event_time": 1000,
            "intents": loaded.intents,
            "load_seconds": round(loaded.seconds, 2),
        },
        "contestants": contestants,
        "problems": problems,
        "machine": _machine(python, load_start),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _machine(python: Path | None, load_start: tuple[float, float, float]) -> dict[str, Any]:
    import confluent_kafka

    versions = {
        name: metadata.version(name)
        for name in ("bytewax", "confluent-kafka", "deltalake", "pyarrow", "pydantic")
    }
    versions["librdkafka"] = confluent_kafka.libversion()[0]
    return {
        "meterwax_commit": _commit(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "python": platform.python_version(),
        "load_avg_start": [round(x, 2) for x in load_start],
        "load_avg_end": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
        "quix_venv": quix_versions(python) if python is not None else None,
    }


def _commit() -> str | None:
    """The meterwax commit measured (with ``+dirty`` if the work tree had changes)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _run_line(
    round_number: int, options: BenchOptions, name: str, m: Measured, messages: int
) -> str:
    return (
        f"  run {round_number}/{options.runs} {name:<15}{m.seconds:>8.2f}s "
        f"{options.events / m.seconds:>10,.0f} events/s {m.peak_rss_bytes / 2**20:>7,.0f} MiB "
        f"{m.cpu_seconds:>7.1f}s CPU  {messages:,} read  (load {m.load_avg_1m:.2f})"
    )


def render_table(result: dict[str, Any]) -> str:
    """The medians as a table, one row per contestant."""
    header = (
        f"{'contestant':<16}{'events/s':>10}{'× floor':>9}{'peak RSS':>11}{'CPU s':>8}  runs (s)"
    )
    lines = [
        f"meterwax bench: {result['events']:,} events, {result['tenants']:,} tenants, "
        f"{result['partitions']} partitions, "
        f"median of {result['runs_per_contestant']} runs",
        header,
        "-" * len(header),
    ]
    for name, entry in result["contestants"].items():
        ratio = entry["ratio_to_floor"]
        lines.append(
            f"{name:<16}{entry['events_per_s']:>10,}"
            f"{(f'{ratio:.2f}' if ratio is not None else '-'):>9}"
            f"{entry['peak_rss_bytes'] / 2**20:>7,.0f} MiB{entry['cpu_seconds']:>8.1f}  "
            + " ".join(f"{r['seconds']:.2f}" for r in entry["runs"])
        )
    per_id = result["dedupe_state_bytes_per_id"]
    lines.append(
        f"totals identical: {'yes' if result['totals_identical'] else 'NO'}; meterwax dedupe "
        f"state: {f'{per_id} bytes per id' if per_id is not None else 'not reported'}; load "
        f"average {' '.join(map(str, result['machine']['load_avg_start']))} → "
        f"{' '.join(map(str, result['machine']['load_avg_end']))}"
    )
    return "\n".join(lines)
