"""How long the correction flow takes, and how that grows with the lake.

For each lake size: a JSONL stream of on-time events (the benchmark generator, no late events),
followed by 10,000 late events spread over 1,000 windows that are already closed; ``meterwax
run`` meters it (the late ones land in ``late_events``), then ``meterwax corrections --once``
is timed. Prints one line per size and writes JSON.

    python -m meterwax.bench.corrections --sizes 250000,500000,1000000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from meterwax.flows.corrections import run_corrections
from meterwax.flows.file_source import FileSource
from meterwax.flows.metering import run_to_lake
from meterwax.metrics import RunStats
from meterwax.operators.partition import MeteringRules
from meterwax.sinks.lake import Lake
from meterwax.synthetic.generator import METERS, Workload, generate

LATE_EVENTS = 10_000
LATE_WINDOWS = 1_000


def write_stream(path: Path, events: int, seed: int = 3) -> None:
    """``events`` on-time events, then 10k late ones in 1k closed windows."""
    workload = Workload(
        events=events,
        tenants=1000,
        late=0.0,
        duplicates=0.0,
        invalid=0.0,
        cloudevents=0.0,
        events_per_second=1000,
        seed=seed,
    )
    rng = random.Random(seed)
    span_s = events / workload.events_per_second
    start = workload.start
    with path.open("wb") as handle:
        for message in generate(workload):
            handle.write(message.payload + b"\n")
        minutes = max(1, int(span_s // 60) - 2)  # windows certainly closed before the end
        chosen = rng.sample(
            [(t, m, minute) for t in range(1000) for m in METERS for minute in range(minutes)],
            LATE_WINDOWS,
        )
        for window, (tenant_number, meter, minute) in enumerate(chosen):
            tenant = f"tenant-{tenant_number:04x}"
            for n in range(LATE_EVENTS // LATE_WINDOWS):
                moment = start + timedelta(minutes=minute, seconds=rng.randrange(60))
                document = {
                    "id": f"late-{window}-{n}",
                    "tenant_id": tenant,
                    "meter": meter,
                    "quantity": 1,
                    "timestamp": moment.astimezone(UTC).isoformat(),
                }
                handle.write(orjson.dumps(document) + b"\n")


def measure(events: int, workdir: Path) -> dict[str, float]:
    """Build a lake of ``events`` plus the late events; time the corrections."""
    stream = workdir / f"stream-{events}.jsonl"
    write_stream(stream, events)
    lake = Lake(workdir / f"lake-{events}")
    source = FileSource([stream], batch_size=20_000)
    started = time.monotonic()
    stats = RunStats()
    run_to_lake(source, source.partitions, lake, MeteringRules(), stats=stats)
    run_seconds = time.monotonic() - started
    report = run_corrections(lake, once=True)
    counters = report.stats.snapshot()
    return {
        "lake_events": stats.count("counted"),
        "late_events": counters["late_read"],
        "windows_changed": counters["windows_changed"],
        "corrections_seconds": round(report.seconds, 3),
        "main_flow_seconds": round(run_seconds, 3),
    }


def main() -> None:
    """Run the measurement for each size."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="250000,500000,1000000")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="meterwax-bench-corrections-"))
    results = []
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            result = measure(size, workdir)
            results.append(result)
            print(
                f"lake {result['lake_events']:>9,} events: {result['late_events']:,} late "
                f"events into {result['windows_changed']:,} windows in "
                f"{result['corrections_seconds']:.2f}s "
                f"(main flow {result['main_flow_seconds']:.1f}s)",
                flush=True,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        args.json.write_text(
            json.dumps({"measured_at": datetime.now(UTC).isoformat(), "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
