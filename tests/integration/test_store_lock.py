"""Two runs on one recovery store at once: the second is refused while the first holds it.

Both would write snapshots and frontiers into the same Bytewax partitions and the next resume
would read a mixture of the two; the first run's lock, held for as long as it runs, keeps the
second out, and goes with its holder.
"""

from __future__ import annotations

import pytest

from meterwax.sinks.lake import Lake
from meterwax.synthetic.generator import Workload, generate
from tests.kafka_helpers import produce_generated
from tests.processes import run_meterwax, start_meterwax, stop_cleanly, wait_for

pytestmark = pytest.mark.kafka


def test_a_second_run_on_a_store_another_run_holds_is_refused(
    tmp_path, bootstrap, cluster, new_topic
):
    topic = new_topic(2)
    produce_generated(cluster, topic, generate(Workload(events=300, tenants=3, seed=4)))
    store = tmp_path / "recovery"
    args = (
        *("run", "--brokers", bootstrap, "--topic", topic),
        *("--lake", Lake(tmp_path / "lake").root, "--recovery-dir", str(store)),
    )
    log = tmp_path / "first.log"
    first = start_meterwax(log, *args)
    wait_for(lambda: "tailing" in log.read_text(), what="the first run to start", process=first)

    second = run_meterwax(*args, "--stop-at-end")
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"error: recovery store {store} is held by another run (pid {first.pid}" in (
        second.stderr
    )

    stop_cleanly(first, log)
    after = run_meterwax(*args, "--stop-at-end")
    assert after.returncode == 0, after.stderr[-3000:]
