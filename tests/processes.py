"""Running meterwax as a subprocess, as users do, and waiting for what it writes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from meterwax.sinks.lake import Lake
from meterwax.sinks.schemas import TableSpec

T = TypeVar("T")


def meterwax_command(*args: str) -> list[str]:
    """The command line of a meterwax subprocess."""
    return [sys.executable, "-m", "meterwax", *args]


def run_meterwax(
    *args: str, timeout: float = 120, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run meterwax to completion in a subprocess (``env_extra`` added to its environment)."""
    return subprocess.run(
        meterwax_command(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env_extra or {})},
    )


def table_rows(lake: Lake, spec: TableSpec) -> list[dict] | None:
    """A table's rows, or None while the table does not exist yet."""
    if not lake.exists(spec):
        return None
    return lake.table(spec).to_pyarrow_table().to_pylist()


def wait_for(
    condition: Callable[[], T | None],
    *,
    what: str,
    timeout_s: float = 60,
    process: subprocess.Popen[str] | Sequence[subprocess.Popen[str]] | None = None,
) -> T:
    """Poll ``condition`` until it returns something truthy; fail at the deadline or if a
    watched ``process`` exits meanwhile, with the end of each one's log."""
    watched = (
        [] if process is None else [process] if isinstance(process, subprocess.Popen) else process
    )
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        for running in watched:
            if running.poll() is not None:
                problem = f"meterwax exited ({running.returncode}) before {what}"
                raise AssertionError(problem + _log_tails(watched))
        if time.monotonic() > deadline:
            problem = f"timed out after {timeout_s:.0f}s waiting for {what}"
            raise AssertionError(problem + _log_tails(watched))
        time.sleep(0.2)


def _log_tails(processes: Sequence[subprocess.Popen[str]], lines: int = 15) -> str:
    """The last lines of each process's log (see :func:`start_meterwax`), for a failure."""
    tails = []
    for running in processes:
        log: Path | None = getattr(running, "log_path", None)
        if log is not None and log.exists():
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            tails.append(f"\n--- {log.name} (exit {running.poll()}) ---\n" + "\n".join(tail))
    return "".join(tails)


def start_meterwax(
    log: Path, *args: str, env_extra: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start meterwax in the background, its output going to ``log`` (never a pipe that could
    fill up and block it)."""
    with log.open("w") as handle:
        process = subprocess.Popen(
            meterwax_command(*args),
            stdout=handle,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env_extra or {})},
        )
    process.log_path = log  # type: ignore[attr-defined]  # read by wait_for on a failure
    return process


def stop(process: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 60) -> int:
    """Send ``sig`` and wait for the exit status (kill it if it does not stop in time)."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def stop_cleanly(process: subprocess.Popen[str], log: Path, sig: int = signal.SIGTERM) -> str:
    """Stop a tailing command as an operator would; return its output.

    It must exit ``128 + sig`` and print no Rust panic or stack trace (Bytewax prints one when
    a signal interrupts a worker running on the main thread).
    """
    code = stop(process, sig)
    output = log.read_text()
    assert code == 128 + sig, output
    assert "panicked" not in output and "stack backtrace" not in output, output
    return output


def loopback_addresses(count: int) -> str:
    """A cluster's ``--addresses``: process k on its own loopback address ``127.0.0.<k+1>``
    (all of 127/8 is loopback on Linux), each on a port free there, as separate hosts would
    be."""
    addresses = []
    for process in range(count):
        host = f"127.0.0.{process + 1}"
        with socket.socket() as probe:
            probe.bind((host, 0))
            addresses.append(f"{host}:{probe.getsockname()[1]}")
    return ";".join(addresses)


def replay_from_start(
    bootstrap: str,
    topic: str,
    lake: Lake,
    partitions: int,
    *extra: str,
    env_extra: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``meterwax replay`` of every partition of ``topic`` from offset 0."""
    offsets = ",".join(f"{p}:0" for p in range(partitions))
    return run_meterwax(
        "replay",
        *("--brokers", bootstrap, "--topic", topic, "--lake", lake.root),
        *("--from-offsets", offsets, *extra),
        env_extra=env_extra,
    )
