"""Recovery stores of a cluster: which store fits which process, and what the processes agree.

The decision every process of a cluster takes from all stores' reports is a pure function
(``agree``), tested here on every way a store can be wrong; the two-process fault test runs
it for real.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from bytewax._bytewax import init_db_dir

from meterwax.errors import RecoveryStoreError, StoreBusyError
from meterwax.flows.recovery import (
    Member,
    Membership,
    hold_store,
    partition_problem,
    store_partitions,
)
from meterwax.flows.store_agreement import StoreReport, agree


def _report(process: int, **fields) -> StoreReport:
    base = StoreReport(
        process=process,
        directory=f"/disk-{process}",
        problem=None,
        membership=Membership(process, 2, "c1", 3),
        has_rows=True,
        oldest_snapshot=5,
        executions=[],
        frontiers=[],
        proposal=f"proposal-{process}",
    )
    return replace(base, **fields)


def _store(tmp_path: Path, name: str, count: int, *indexes: int) -> Path:
    """A store holding the given partitions of ``count`` (made by Bytewax's initialiser)."""
    directory = tmp_path / name
    scratch = tmp_path / f"{name}-all"
    scratch.mkdir()
    init_db_dir(scratch, count)
    directory.mkdir()
    for index in indexes:
        (scratch / f"part-{index}.sqlite3").rename(directory / f"part-{index}.sqlite3")
    return directory


def test_a_store_fits_only_the_process_whose_partition_it_holds(tmp_path):
    own = _store(tmp_path, "own", 2, 1)
    assert store_partitions(own) == [(1, 2)]
    assert partition_problem(own, Member(1, 2)) is None
    assert "holds the partition of process 1: it was copied or swapped" in partition_problem(
        own, Member(0, 2)
    )
    assert "made for a cluster of 2 process(es), not 3" in partition_problem(own, Member(1, 3))
    both = _store(tmp_path, "both", 2, 0, 1)
    assert "holds partitions [0, 1] of 2" in partition_problem(both, Member(0, 2))


def test_the_processes_resume_at_the_epoch_of_every_store_together():
    # Bytewax hashes each progress row to one partition: here the execution row is in
    # process 1's store and the frontiers are split, as in a real run.
    reports = [
        _report(0, executions=[], frontiers=[(3, 0, 40)]),
        _report(1, executions=[(2, 2, 10), (3, 2, 30)], frontiers=[(3, 1, 38), (2, 0, 99)]),
    ]
    agreement = agree(reports, 2)
    assert agreement.resume_epoch == 38
    assert agreement.cluster == "c1"
    assert agreement.execution == 4


def test_a_fresh_cluster_takes_process_0s_cluster_id():
    reports = [
        _report(p, membership=Membership(p, 2), has_rows=False, oldest_snapshot=None)
        for p in (1, 0)
    ]
    agreement = agree(reports, 2)
    assert agreement.cluster == "proposal-0"
    assert agreement.execution == 0
    assert agreement.resume_epoch is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"has_rows": False, "oldest_snapshot": None, "membership": Membership(1, 2)},
            "recovery store of process 1 (/disk-1) is empty while the store of process 0",
        ),
        ({"membership": Membership(1, 2, "c2", 3)}, "belong to different clusters"),
        ({"membership": Membership(1, 2, "c1", 2)}, "is older than the cluster's last run"),
        ({"problem": "holds the partition of process 0"}, "holds the partition of process 0"),
    ],
)
def test_a_store_that_did_not_live_through_the_clusters_runs_is_refused(change, message):
    reports = [
        _report(0, executions=[(3, 2, 30)], frontiers=[(3, 0, 40), (3, 1, 41)]),
        _report(1, **change),
    ]
    with pytest.raises(RecoveryStoreError) as refused:
        agree(reports, 2)
    assert message in str(refused.value)


def test_a_store_with_snapshots_but_without_the_progress_rows_lost_with_its_peer_is_held():
    # The lost store held every progress row: no epoch is known, but the survivor has state.
    reports = [
        _report(0, executions=[], frontiers=[], oldest_snapshot=1),
        _report(1, has_rows=False, oldest_snapshot=None, membership=None),
    ]
    with pytest.raises(RecoveryStoreError, match=r"process 1 .* is empty"):
        agree(reports, 2)


def test_an_empty_store_next_to_one_whose_run_finished_no_epoch_is_no_loss():
    reports = [
        _report(0, executions=[(0, 2, 1)], frontiers=[], oldest_snapshot=1),
        _report(1, has_rows=False, oldest_snapshot=None),
    ]
    assert agree(reports, 2).resume_epoch == 1


def test_a_second_holder_of_a_store_is_refused_and_told_who_holds_it(tmp_path):
    store = tmp_path / "store"
    with hold_store(store):
        with pytest.raises(StoreBusyError) as busy, hold_store(store):
            pass
        assert str(store) in str(busy.value)
        assert "held by another run (pid " in str(busy.value)
    with hold_store(store):  # released with its holder
        pass


SETUP = (("lake", "id 1"), ("input", "kafka:usage"), ("--workers", "1"), ("recovery", "a store"))


def test_processes_started_with_different_lakes_inputs_or_workers_are_refused():
    for key, other in (("lake", "id 2"), ("input", "kafka:other"), ("--workers", "2")):
        changed = tuple((k, other if k == key else v) for k, v in SETUP)
        reports = [_report(0, setup=SETUP), _report(1, setup=changed)]
        with pytest.raises(RecoveryStoreError, match=rf"differ in {key} \(process 0: .*, "):
            agree(reports, 2)
    assert agree([_report(0, setup=SETUP), _report(1, setup=SETUP)], 2).cluster == "c1"


def test_a_cluster_without_stores_agrees_and_one_with_some_stores_is_refused():
    bare = tuple((k, "--no-recovery" if k == "recovery" else v) for k, v in SETUP)
    without = [
        _report(p, directory="", membership=None, has_rows=False, setup=bare) for p in (0, 1)
    ]
    assert agree(without, 2).resume_epoch is None
    with pytest.raises(RecoveryStoreError, match=r"differ in recovery"):
        agree([_report(0, setup=SETUP), without[1]], 2)
