"""What a lake on an S3-compatible store costs next to a local one: throughput and commit latency.

    python -m meterwax.bench.s3 --events 200000

Starts the test suite's S3 server (scripts/s3, in memory on loopback), writes workload B1 to
four JSON Lines files (one per partition, split by tenant), and runs ``meterwax run`` over
them twice: into a local lake and into an ``s3://`` lake, on the same code. It then times
single Delta commits (an append of ``--commit-rows`` ledger-like rows, sequentially) on each
store and prints one JSON document: events/s of each run and the median and p95 of a commit.

Loopback S3 has no network latency: the ratio shows the protocol's cost (a LIST, GETs and a
conditional PUT per commit, Parquet uploads), a lower bound of what a remote store adds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from meterwax.bench.workload import b1
from meterwax.synthetic.generator import generate

REPO = Path(__file__).resolve().parents[1]
PARTITIONS = 4


def _start_server() -> tuple[subprocess.Popen[str], dict[str, str]]:
    process = subprocess.Popen(
        ["bash", str(REPO / "scripts" / "s3"), "serve", "-addr", "127.0.0.1:0", "-bucket", "lake"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("listening on "):
        process.kill()
        msg = f"the S3 server did not start: {line!r}"
        raise RuntimeError(msg)
    address = line.removeprefix("listening on ").strip()
    options = {
        "AWS_ENDPOINT_URL": f"http://{address}",
        "AWS_ALLOW_HTTP": "true",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench-secret",
    }
    return process, options


def _write_inputs(directory: Path, events: int) -> list[Path]:
    """B1 as one file per partition, each tenant in one file (its order kept)."""
    paths = [directory / f"b1-{i}.jsonl" for i in range(PARTITIONS)]
    handles = [path.open("wb") for path in paths]
    for message in generate(b1(events)):
        part = zlib.crc32(message.tenant_id.encode()) % PARTITIONS
        handles[part].write(message.payload + b"\n")
    for handle in handles:
        handle.close()
    return paths


def _run(inputs: list[Path], lake: str, options: dict[str, str] | None) -> dict[str, Any]:
    command = [sys.executable, "-m", "meterwax", "run", "--lake", lake, "--format", "json"]
    for path in inputs:
        command += ["--input", str(path)]
    env = {**os.environ, "METERWAX_STORAGE_OPTIONS": json.dumps(options)} if options else None
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    wall = time.monotonic() - started
    if done.returncode != 0:
        msg = f"meterwax run into {lake} failed: {done.stderr[-2000:]}"
        raise RuntimeError(msg)
    summary = json.loads(done.stdout)
    return {
        "read": summary["read"],
        "run_seconds": summary["seconds"],
        "events_per_second": summary["events_per_second"],
        "delta_commits": summary["delta_commits"],
        "commit_conflicts_retried": summary["commit_conflicts_retried"],
        "wall_seconds_with_startup": round(wall, 1),
    }


def _commit_latency(uri: str, options: dict[str, str] | None, commits: int, rows: int) -> dict:
    """Seconds per sequential append of ``rows`` rows to one table: median and p95."""
    batch = pa.table(
        {
            "tenant_id": [f"tenant-{i % 1000:04d}" for i in range(rows)],
            "id": [uuid.uuid4().hex for _ in range(rows)],
            "quantity": pa.array([i % 97 for i in range(rows)], pa.decimal128(38, 9)),
        }
    )
    write_deltalake(uri, batch, mode="append", storage_options=options)
    table = DeltaTable(uri, storage_options=options)
    seconds = []
    for _ in range(commits):
        started = time.perf_counter()
        write_deltalake(table, batch, mode="append")
        seconds.append(time.perf_counter() - started)
    seconds.sort()
    return {
        "commits": commits,
        "rows_per_commit": rows,
        "median_ms": round(statistics.median(seconds) * 1000, 1),
        "p95_ms": round(seconds[int(0.95 * (len(seconds) - 1))] * 1000, 1),
    }


def main() -> None:
    """Run both lakes and print the comparison as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--commits", type=int, default=60)
    parser.add_argument("--commit-rows", type=int, default=1000)
    args = parser.parse_args()
    server, options = _start_server()
    try:
        with tempfile.TemporaryDirectory(prefix="meterwax-bench-s3-") as scratch:
            work = Path(scratch)
            inputs = _write_inputs(work, args.events)
            result = {
                "events": args.events,
                "local": _run(inputs, str(work / "lake"), None),
                "s3": _run(inputs, "s3://lake/bench", options),
                "commit_local": _commit_latency(
                    str(work / "commits"), None, args.commits, args.commit_rows
                ),
                "commit_s3": _commit_latency(
                    "s3://lake/commits", options, args.commits, args.commit_rows
                ),
            }
            result["s3_over_local_events_per_second"] = round(
                result["s3"]["events_per_second"] / result["local"]["events_per_second"], 2
            )
            print(json.dumps(result, indent=2))
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
