"""The contestants: how each one is started, and how to read what it did from its output.

=================  ===========================================================================
floor              bench/floor.py: plain confluent-kafka consumers, read and discard
meterwax           ``meterwax run --stop-at-end``: one process, default settings
meterwax-2proc     the same as two processes (``-i 0|1 -a …``), two partitions each; reported
                   separately, never in place of the single-process figure
meterwax-b2        workload B2: ``meterwax run`` on the same topic into a lake with the six-meter
                   catalog :data:`B2_CATALOG` (``meters apply`` before the timed run)
naive              bench/naive.py: the per-item Bytewax pipeline
quix               bench/quix.py: Quix Streams, in ``.venv-quix``
=================  ===========================================================================
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Outputs = list[dict[str, Any]]
NAIVE = "meterwax.bench.naive"


@dataclass(frozen=True)
class Target:
    """What every contestant reads, and where the quix contestant's Python is."""

    brokers: str
    topic: str
    quix_python: Path | None = None


def _module(python: str | Path, module: str, target: Target, *extra: str) -> list[str]:
    return [str(python), "-m", module, "--brokers", target.brokers, "--topic", target.topic, *extra]


def meterwax_run_command(target: Target, lake: Path, *extra: str) -> list[str]:
    """``meterwax run --stop-at-end`` over the target's topic into ``lake``, its summary as JSON."""
    return [
        sys.executable,
        "-m",
        "meterwax",
        "run",
        "--brokers",
        target.brokers,
        "--topic",
        target.topic,
        "--lake",
        str(lake),
        "--stop-at-end",
        "--format",
        "json",
        *extra,
    ]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _two_processes(target: Target, lake: Path) -> list[list[str]]:
    addresses = ";".join(f"127.0.0.1:{_free_port()}" for _ in range(2))
    return [meterwax_run_command(target, lake, "-i", str(i), "-a", addresses) for i in range(2)]


def _quix(target: Target, lake: Path) -> list[list[str]]:
    if target.quix_python is None:
        msg = "the quix contestant needs .venv-quix (see bench/quixenv.py)"
        raise RuntimeError(msg)
    return [_module(target.quix_python, "meterwax.bench.quix", target, "--lake", str(lake))]


def _meterwax_outcomes(outputs: Outputs) -> dict[str, int]:
    return {
        "duplicates": sum(o["duplicates"] for o in outputs),
        "late": sum(o["late"] for o in outputs),
        "invalid": sum(o["quarantined"] for o in outputs),
    }


def _flow_outcomes(outputs: Outputs) -> dict[str, int]:
    return {name: outputs[0].get(name, 0) for name in ("duplicates", "late", "invalid")}


@dataclass(frozen=True)
class Contestant:
    """One contestant: its command lines, how it stores windows, what it read."""

    name: str
    commands: Callable[[Target, Path], list[list[str]]]
    windows: str | None
    """``usage_windows`` (meterwax's table), ``rows`` (bench/totals.py) or None (not compared:
    B2's windows are other meters)."""
    read_key: str
    """The field of its printed result that counts messages read (summed over processes)."""
    outcomes: Callable[[Outputs], dict[str, int]] | None = None
    prepare: Callable[[Path], list[str]] | None = None
    """A command run before the timed one, given the run's lake (B2 applies its catalog)."""
    check: Callable[[Path], list[str]] | None = None
    """A command run after it that must exit 0 (B2: ``meterwax reconcile`` of its lake)."""

    def messages(self, outputs: Outputs) -> int:
        """Messages the run read, over all its processes."""
        return sum(int(o[self.read_key]) for o in outputs)


B2_CATALOG = {
    "meters": [
        {"name": "requests", "event_meter": "api_calls", "aggregation": "count"},
        {
            "name": "regions_used",
            "event_meter": "api_calls",
            "aggregation": "unique_count",
            "value": "dimensions.region",
        },
        {"name": "peak_cpu", "event_meter": "cpu_seconds", "aggregation": "max"},
        {"name": "least_storage", "event_meter": "storage_gb_hours", "aggregation": "min"},
        {"name": "storage_now", "event_meter": "storage_gb_hours", "aggregation": "latest"},
        {
            "name": "eu_cpu",
            "event_meter": "cpu_seconds",
            "aggregation": "sum",
            "filter": {"region": ["eu-west-1"]},
            "group_by": ["plan"],
        },
    ]
}
"""Workload B2's catalog: one meter of each aggregation, one of them filtered and grouped."""


def _apply_b2_catalog(lake: Path) -> list[str]:
    catalog = lake.parent / "b2-meters.json"
    catalog.write_text(json.dumps(B2_CATALOG))  # JSON is YAML
    return [sys.executable, "-m", "meterwax", "meters", "apply", str(catalog), "--lake", str(lake)]


CONTESTANTS = {
    contestant.name: contestant
    for contestant in (
        Contestant(
            "floor",
            lambda t, _lake: [_module(sys.executable, "meterwax.bench.floor", t)],
            None,
            "messages",
        ),
        Contestant(
            "meterwax",
            lambda t, lake: [meterwax_run_command(t, lake)],
            "usage_windows",
            "read",
            _meterwax_outcomes,
        ),
        Contestant("meterwax-2proc", _two_processes, "usage_windows", "read", _meterwax_outcomes),
        Contestant(
            "meterwax-b2",
            lambda t, lake: [meterwax_run_command(t, lake)],
            None,
            "read",
            _meterwax_outcomes,
            prepare=_apply_b2_catalog,
            check=lambda lake: [sys.executable, "-m", "meterwax", "reconcile", "--lake", str(lake)],
        ),
        Contestant(
            "naive",
            lambda t, lake: [
                _module(sys.executable, "meterwax.bench.naive", t, "--lake", str(lake))
            ],
            "rows",
            "read",
            _flow_outcomes,
        ),
        Contestant("quix", _quix, "rows", "read", _flow_outcomes),
    )
}
DEFAULT = ("floor", "meterwax", "meterwax-2proc", "meterwax-b2", "naive", "quix")
