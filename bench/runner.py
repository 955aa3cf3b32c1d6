"""Running a contestant in child processes and measuring them: wall time, peak RSS, CPU.

Each run is its own process (or processes, for a multi-process contestant), started by the
small launcher in launch.py (which says why), so its peak RSS is its own: ``os.wait4``
returns the resource usage of exactly that child. The clock starts just before the first
process is spawned and stops when the last one has exited, so a run is timed from its start
until its last commit (every contestant commits, then exits), its interpreter start and
imports included, as a user would time ``meterwax run``.

Children get the harness's environment without ``METERWAX_*`` and ``BYTEWAX_*`` variables,
so every contestant runs with its default settings whatever the shell exported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_LAUNCHER = Path(__file__).with_name("launch.py")


class ContestantFailedError(RuntimeError):
    """A contestant's process exited non-zero or printed no result."""


@dataclass(frozen=True)
class Measured:
    """One run: how long it took, peak memory, CPU, and each process's printed result."""

    seconds: float
    peak_rss_bytes: int
    """The sum over the run's processes of each one's peak RSS (they run at the same time)."""
    cpu_seconds: float
    load_avg_1m: float
    """The 1-minute load average just before the run started."""
    outputs: list[dict[str, Any]]


def child_environment() -> dict[str, str]:
    """This process's environment minus settings that would change a contestant's defaults."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("METERWAX_", "BYTEWAX_"))
    }


def run_processes(commands: list[list[str]], logs: Path, name: str) -> Measured:
    """Start every command at once, wait for all; stdout/stderr go to ``logs/name-i.*``."""
    logs.mkdir(parents=True, exist_ok=True)
    paths = [(logs / f"{name}-{i}.out", logs / f"{name}-{i}.err") for i in range(len(commands))]
    spec = {"commands": commands, "logs": [[str(out), str(err)] for out, err in paths]}
    load = os.getloadavg()[0]
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(_LAUNCHER), json.dumps(spec)],
        env=child_environment(),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise ContestantFailedError(f"{name}: the launcher failed: {done.stderr.strip()}")
    launched = json.loads(done.stdout)
    failures = []
    for command, (_out, err), process in zip(commands, paths, launched["processes"], strict=True):
        if process["returncode"] != 0:
            tail = err.read_text(errors="replace").strip().splitlines()[-15:]
            failures.append(
                f"exit {process['returncode']}: {' '.join(command)}\n  " + "\n  ".join(tail)
            )
    if failures:
        raise ContestantFailedError(f"{name} failed:\n" + "\n".join(failures))
    return Measured(
        seconds=launched["seconds"],
        peak_rss_bytes=sum(p["peak_rss_bytes"] for p in launched["processes"]),
        cpu_seconds=sum(p["cpu_seconds"] for p in launched["processes"]),
        load_avg_1m=load,
        outputs=[_result(out, name) for out, _ in paths],
    )


def _result(path: Path, name: str) -> dict[str, Any]:
    """The JSON object a contestant printed last (from the last line opening one).

    Bytewax's Rust side prints its own lines to stdout too ("worker 1: error connecting to
    worker 0 …; retrying" while a multi-process cluster forms).
    """
    lines = path.read_text(errors="replace").splitlines()
    for start in reversed([i for i, line in enumerate(lines) if line.startswith("{")]):
        try:
            value = json.loads("\n".join(lines[start:]))
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    msg = f"{name} printed no JSON result (see {path})"
    raise ContestantFailedError(msg)
