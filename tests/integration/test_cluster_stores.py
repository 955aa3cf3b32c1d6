"""The processes of a real cluster refuse stores that are not their own, all of them, at start.

A two-process run leaves one store per process; a restart where process 1 was given a copy
of process 0's store, or a restart as three processes, must be refused by every process
before anything is read, and a restart with the right stores must change nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from meterwax.sinks.lake import Lake
from meterwax.synthetic.generator import Workload, generate
from tests.helpers import comparable_tables
from tests.kafka_helpers import produce_generated
from tests.processes import loopback_addresses, start_meterwax

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _cluster(base: tuple[str, ...], stores: list[Path], logs: Path) -> list[tuple[int, str]]:
    """Run one process per store to the end of the topic; each one's exit code and output."""
    addresses = loopback_addresses(len(stores))
    started = [
        start_meterwax(
            logs / f"{store.name}-{k}.log",
            *base,
            *("--recovery-dir", str(store), "-i", str(k), "-a", addresses),
        )
        for k, store in enumerate(stores)
    ]
    return [
        (process.wait(timeout=120), (logs / f"{store.name}-{k}.log").read_text())
        for k, (process, store) in enumerate(zip(started, stores, strict=True))
    ]


def test_a_copied_store_and_another_cluster_size_are_refused_by_every_process(
    tmp_path, bootstrap, cluster, new_topic
):
    topic = new_topic(4)
    produce_generated(cluster, topic, generate(Workload(events=2000, tenants=8, seed=3)))
    lake = Lake(tmp_path / "lake")
    base = ("run", "--brokers", bootstrap, "--topic", topic, "--lake", lake.root, "--stop-at-end")
    stores = [tmp_path / "store-0", tmp_path / "store-1"]
    for code, output in _cluster(base, stores, tmp_path):
        assert code == 0, output
    tables = comparable_tables(lake)

    copied = tmp_path / "copied"
    shutil.copytree(stores[0], copied)
    for code, output in _cluster(base, [stores[0], copied], tmp_path):
        assert code == 2, output
        assert f"recovery store {copied} (process 1 of 2) holds the partition of process 0" in (
            output
        )

    for code, output in _cluster(base, [*stores, tmp_path / "store-2"], tmp_path):
        assert code == 2, output
        assert "was made for a cluster of 2 process(es), not 3" in output

    for code, output in _cluster(base, stores, tmp_path):
        assert code == 0, output
    assert comparable_tables(lake) == tables
