"""Several correction flows on one lake at once: nothing is inserted, quarantined or audited twice.

An operator's normal move is ``meterwax corrections --once`` while the following correction
flow runs. Each round copies one lake with pending late events (and window conflicts), starts
three correction processes at the same moment, and checks the lake afterwards: no ledger key
twice, every window equal to its ledger events (reconcile exits 0), every change audited in a
gap-free chain, every late event accounted for once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter

import pytest

from meterwax.sinks.lake import Lake
from meterwax.sinks.schemas import EVENTS, LATE_EVENTS, QUARANTINE
from meterwax.synthetic.generator import Workload, generate
from tests.guarantees import check_g3_audit
from tests.helpers import rows, run_cli, write
from tests.processes import meterwax_command, run_meterwax

ROUNDS = int(os.environ.get("METERWAX_CONCURRENT_ROUNDS", "20"))
FLOWS = 3


@pytest.fixture(scope="module")
def pending_lake(tmp_path_factory) -> Lake:
    """A lake whose main flow left many late events and window conflicts pending."""
    root = tmp_path_factory.mktemp("pending")
    # Two files share tenants (window conflicts); 8% late events, half with retried copies.
    first = write(
        root / "a.jsonl",
        list(generate(Workload(events=4000, tenants=4, seed=31, late=0.08, duplicates=0.05))),
    )
    second = write(
        root / "b.jsonl",
        list(generate(Workload(events=4000, tenants=4, seed=32, late=0.08, duplicates=0.05))),
    )
    lake = Lake(root / "lake")
    run_cli("--input", str(first), "--input", str(second), "--lake", lake.root)
    assert len(rows(lake, LATE_EVENTS)) > 300
    return lake


@pytest.mark.slow
@pytest.mark.fault
def test_three_correction_flows_started_at_once_count_every_late_event_once(pending_lake, tmp_path):
    late = rows(pending_lake, LATE_EVENTS)
    for round_number in range(ROUNDS):
        lake = Lake(tmp_path / f"round-{round_number}")
        shutil.copytree(pending_lake.root, lake.root)
        processes = [
            subprocess.Popen(
                meterwax_command("corrections", "--lake", lake.root, "--once"),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(FLOWS)
        ]
        for process in processes:
            _, err = process.communicate(timeout=300)
            assert process.returncode == 0, err

        ledger = rows(lake, EVENTS)
        keys = Counter((r["tenant_id"], r["id"]) for r in ledger)
        twice = [key for key, count in keys.items() if count > 1]
        assert twice == [], f"round {round_number}: {len(twice)} keys twice, e.g. {twice[:3]}"
        check = run_meterwax("reconcile", "--lake", lake.root)
        assert check.returncode == 0, f"round {round_number}: {check.stdout}{check.stderr}"
        check_g3_audit(lake)
        # Each late event is in the ledger (at its own coordinates or as a copy of a counted
        # key) or quarantined, once.
        at = {(r["origin"], r["origin_partition"], r["origin_offset"]) for r in ledger}
        quarantined = Counter(
            (r["origin"], r["origin_partition"], r["origin_offset"]) for r in rows(lake, QUARANTINE)
        )
        assert max(quarantined.values(), default=1) == 1
        for event in late:
            where = (event["origin"], event["origin_partition"], event["origin_offset"])
            assert where in at or where in quarantined or (event["tenant_id"], event["id"]) in keys
        shutil.rmtree(lake.root)
