"""What a SIGKILL costs the main flow: time to resume, work lost, and the recovery store's size.

Loads B1 into a fresh topic on the brokers given, then for each round:

1. a clean ``meterwax run --stop-at-end`` (recovery on), timed from start to exit;
2. the same run into a new lake, killed with SIGKILL after ``--kill-at`` of the clean time,
   and never before its first ledger commit and a snapshot past it (so that the restart
   really resumes);
3. the restart, timed to its first new ledger commit (the resume: interpreter start, loading
   the recovery store, re-reading the last epoch, one snapshot interval) and to its exit.

The killed-and-resumed lake must hold exactly the clean lake's ledger rows and window totals,
or the round fails: a resume time only means something for a correct resume.

    python -m meterwax.bench.resume --brokers localhost:9092 --events 1000000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from deltalake import DeltaTable

from meterwax.bench.contestants import Target, meterwax_run_command
from meterwax.bench.totals import compare, read_meterwax_windows
from meterwax.bench.workload import delete_topic, load_topic
from meterwax.flows.recovery import source_positions
from meterwax.kafka.clients import Cluster

POLL_S = 0.02


@dataclass(frozen=True)
class Round:
    """One clean run, and one killed run with its restart."""

    clean_seconds: float
    killed_after_seconds: float
    recovery_store_bytes: int
    ledger_rows_at_kill: int
    resume_to_first_commit_seconds: float
    restart_seconds: float
    kill_cost_seconds: float
    """(killed run + restart) − clean run: the work redone plus the restart itself."""


def _command(brokers: str, topic: str, lake: Path, state: Path, *extra: str) -> list[str]:
    return meterwax_run_command(Target(brokers, topic), lake, "--state-dir", str(state), *extra)


def _ledger_versions(lake: Path) -> int:
    log = lake / "events" / "_delta_log"
    return len(list(log.glob("*.json"))) if log.exists() else 0


def _store_holds_progress(state: Path) -> bool:
    """True once the default recovery store under ``state`` would resume past offset 0."""
    stores = (state / "recovery").glob("*") if (state / "recovery").exists() else ()
    return any(
        isinstance(offset, int) and offset > 0
        for store in stores
        for offset in source_positions(store).values()
    )


def _ledger_rows(lake: Path) -> int:
    return DeltaTable(str(lake / "events")).to_pyarrow_dataset().count_rows()


def _directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _run_to_end(command: list[str]) -> float:
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return time.monotonic() - started


def measure_round(brokers: str, topic: str, workdir: Path, kill_at: float, *extra: str) -> Round:
    """A clean run, a killed run and its restart; checks the two lakes agree."""
    clean_lake = workdir / "clean"
    clean_seconds = _run_to_end(
        _command(brokers, topic, clean_lake, workdir / "clean-state", *extra)
    )

    lake, state = workdir / "killed", workdir / "killed-state"
    command = _command(brokers, topic, lake, state, *extra)
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Version 0 of the ledger is its creation; a kill after version 1 has work to resume.
    while (
        time.monotonic() - started < kill_at * clean_seconds
        or _ledger_versions(lake) < 2
        or not _store_holds_progress(state)
    ):
        if process.poll() is not None:
            msg = (
                "the run finished before its first commit could be interrupted: use more "
                "--events or a shorter --snapshot-interval"
            )
            raise RuntimeError(msg)
        time.sleep(POLL_S)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_after = time.monotonic() - started
    store_bytes = _directory_bytes(state)
    rows_at_kill = _ledger_rows(lake)
    versions = _ledger_versions(lake)

    restarted = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first_commit = None
    while process.poll() is None:
        if first_commit is None and _ledger_versions(lake) > versions:
            first_commit = time.monotonic() - restarted
        time.sleep(POLL_S)
    restart_seconds = time.monotonic() - restarted
    _, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the restart exited {process.returncode}:\n{stderr[-2000:]}")

    if _ledger_rows(lake) != _ledger_rows(clean_lake):
        msg = f"ledger rows differ: resumed {_ledger_rows(lake)}, clean {_ledger_rows(clean_lake)}"
        raise RuntimeError(msg)
    comparison = compare(
        "clean", read_meterwax_windows(clean_lake), "resumed", read_meterwax_windows(lake)
    )
    if not comparison.identical:
        raise RuntimeError(f"window totals differ after the resume: {comparison.describe()}")
    return Round(
        clean_seconds=round(clean_seconds, 3),
        killed_after_seconds=round(killed_after, 3),
        recovery_store_bytes=store_bytes,
        ledger_rows_at_kill=rows_at_kill,
        resume_to_first_commit_seconds=round(first_commit or restart_seconds, 3),
        restart_seconds=round(restart_seconds, 3),
        kill_cost_seconds=round(killed_after + restart_seconds - clean_seconds, 3),
    )


def main() -> None:
    """Load the workload once and measure each round in a fresh directory."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kill-at", type=float, default=0.5, help="fraction of the clean run")
    parser.add_argument(
        "--snapshot-interval", help="passed to meterwax run (default: meterwax's own, 5s)"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cluster = Cluster(args.brokers)
    loaded = load_topic(cluster, args.events, args.partitions)
    extra = ("--snapshot-interval", args.snapshot_interval) if args.snapshot_interval else ()
    rounds: list[Round] = []
    try:
        for number in range(1, args.rounds + 1):
            with tempfile.TemporaryDirectory(prefix="meterwax-bench-resume-") as workdir:
                result = measure_round(
                    args.brokers, loaded.topic, Path(workdir), args.kill_at, *extra
                )
            rounds.append(result)
            print(
                f"round {number}: clean {result.clean_seconds:.1f}s; killed at "
                f"{result.killed_after_seconds:.1f}s ({result.ledger_rows_at_kill:,} ledger rows, "
                f"recovery store {result.recovery_store_bytes / 1e6:.1f} MB); restart: first "
                f"commit after {result.resume_to_first_commit_seconds:.2f}s, done after "
                f"{result.restart_seconds:.1f}s; the kill cost {result.kill_cost_seconds:.1f}s",
                flush=True,
            )
    finally:
        delete_topic(cluster, loaded.topic)
    median = statistics.median(r.resume_to_first_commit_seconds for r in rounds)
    print(f"median time from restart to first commit: {median:.2f}s")
    if args.json:
        document = {
            "measured_at": datetime.now(UTC).isoformat(),
            "events": args.events,
            "partitions": args.partitions,
            "rounds": [asdict(r) for r in rounds],
        }
        args.json.write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
