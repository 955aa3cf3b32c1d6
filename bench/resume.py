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

With ``--processes N`` every run is a cluster of N processes on loopback addresses
127.0.0.1…N, each with its own state directory (so its own recovery store), as on N hosts.
The kill hits the last process; the others stop by themselves (a Bytewax cluster stops
whole), which the killed run's time includes; the restart starts every process again.

    python -m meterwax.bench.resume --brokers localhost:9092 --events 1000000 --rounds 3
    python -m meterwax.bench.resume --brokers localhost:9092 --events 1000000 --processes 2
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
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
    processes: int = 1
    peers_stopped_after_seconds: float = 0.0
    """From the kill until every other process of the cluster had exited (0: one process)."""


def _command(brokers: str, topic: str, lake: Path, state: Path, *extra: str) -> list[str]:
    return meterwax_run_command(Target(brokers, topic), lake, "--state-dir", str(state), *extra)


def _loopback_addresses(count: int) -> str:
    """Process k at 127.0.0.<k+1> on a port free there, as separate hosts would be."""
    addresses = []
    for process in range(count):
        with socket.socket() as probe:
            probe.bind((f"127.0.0.{process + 1}", 0))
            addresses.append(f"127.0.0.{process + 1}:{probe.getsockname()[1]}")
    return ";".join(addresses)


def _commands(
    brokers: str, topic: str, lake: Path, state: Path, processes: int, *extra: str
) -> list[list[str]]:
    """One command per process; each process of a cluster has its own state directory."""
    if processes == 1:
        return [_command(brokers, topic, lake, state, *extra)]
    addresses = _loopback_addresses(processes)
    return [
        _command(brokers, topic, lake, state / f"host-{k}", "-i", str(k), "-a", addresses, *extra)
        for k in range(processes)
    ]


def _stores(state: Path) -> list[Path]:
    """Every recovery store under a run's state directory (one per process)."""
    return sorted(state.glob("**/recovery/*"))


def _ledger_versions(lake: Path) -> int:
    log = lake / "events" / "_delta_log"
    return len(list(log.glob("*.json"))) if log.exists() else 0


def _store_holds_progress(state: Path) -> bool:
    """True once the recovery stores under ``state`` would resume past offset 0."""
    return any(
        isinstance(offset, int) and offset > 0
        for offset in source_positions(*_stores(state)).values()
    )


def _ledger_rows(lake: Path) -> int:
    return DeltaTable(str(lake / "events")).to_pyarrow_dataset().count_rows()


def _directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _start(commands: list[list[str]], logs: Path | None = None) -> list[subprocess.Popen]:
    """Start every process; with ``logs``, each one's output goes to a file there (never a
    pipe, which a process of a cluster could fill while another is waited for)."""
    started = []
    for number, command in enumerate(commands):
        if logs is None:
            started.append(
                subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
            continue
        with (logs / f"process-{number}.log").open("w") as output:
            started.append(subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT))
    return started


def _wait_all(running: list[subprocess.Popen], logs: Path, what: str) -> None:
    for number, process in enumerate(running):
        if process.wait() != 0:
            output = (logs / f"process-{number}.log").read_text()[-2000:]
            raise RuntimeError(f"{what}: process {number} exited {process.returncode}:\n{output}")


def _run_to_end(commands: list[list[str]], logs: Path) -> float:
    started = time.monotonic()
    _wait_all(_start(commands, logs), logs, "the clean run")
    return time.monotonic() - started


def measure_round(
    brokers: str, topic: str, workdir: Path, kill_at: float, *extra: str, processes: int = 1
) -> Round:
    """A clean run, a killed run and its restart; checks the two lakes agree."""
    clean_lake = workdir / "clean"
    logs = workdir / "logs"
    logs.mkdir()
    clean_seconds = _run_to_end(
        _commands(brokers, topic, clean_lake, workdir / "clean-state", processes, *extra), logs
    )

    lake, state = workdir / "killed", workdir / "killed-state"
    commands = _commands(brokers, topic, lake, state, processes, *extra)
    started = time.monotonic()
    running = _start(commands)
    # Version 0 of the ledger is its creation; a kill after version 1 has work to resume.
    while (
        time.monotonic() - started < kill_at * clean_seconds
        or _ledger_versions(lake) < 2
        or not _store_holds_progress(state)
    ):
        if any(process.poll() is not None for process in running):
            msg = (
                "the run finished before its first commit could be interrupted: use more "
                "--events or a shorter --snapshot-interval"
            )
            raise RuntimeError(msg)
        time.sleep(POLL_S)
    running[-1].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    for process in running:
        process.wait()  # the others stop by themselves: a cluster cannot lose a process
    killed_after = time.monotonic() - started
    peers_stopped_after = time.monotonic() - killed_at if processes > 1 else 0.0
    store_bytes = _directory_bytes(state)
    rows_at_kill = _ledger_rows(lake)
    versions = _ledger_versions(lake)

    restarted = time.monotonic()
    running = _start(commands, logs)
    first_commit = None
    while any(process.poll() is None for process in running):
        if first_commit is None and _ledger_versions(lake) > versions:
            first_commit = time.monotonic() - restarted
        time.sleep(POLL_S)
    restart_seconds = time.monotonic() - restarted
    _wait_all(running, logs, "the restart")

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
        processes=processes,
        peers_stopped_after_seconds=round(peers_stopped_after, 3),
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
    parser.add_argument(
        "--processes", type=int, default=1, help="processes of the cluster (each its own store)"
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
                    args.brokers,
                    loaded.topic,
                    Path(workdir),
                    args.kill_at,
                    *extra,
                    processes=args.processes,
                )
            rounds.append(result)
            print(
                f"round {number}: clean {result.clean_seconds:.1f}s; killed at "
                f"{result.killed_after_seconds:.1f}s ({result.ledger_rows_at_kill:,} ledger rows, "
                f"recovery store {result.recovery_store_bytes / 1e6:.1f} MB); restart: first "
                f"commit after {result.resume_to_first_commit_seconds:.2f}s, done after "
                f"{result.restart_seconds:.1f}s; the kill cost {result.kill_cost_seconds:.1f}s"
                + (
                    f" ({args.processes} processes; the others stopped "
                    f"{result.peers_stopped_after_seconds:.2f}s after the kill)"
                    if args.processes > 1
                    else ""
                ),
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
            "processes": args.processes,
            "rounds": [asdict(r) for r in rounds],
        }
        args.json.write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
