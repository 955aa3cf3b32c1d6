"""The processes of a cluster agree on their recovery stores before the main flow starts.

Each process of a Bytewax cluster keeps its own store (process k: partition k of N), and
Bytewax spreads every snapshot and progress row over all partitions by hash. A resume is
therefore exact only if every store is the one its process held through the cluster's last
run: a lost store (recreated empty) drops the state that hashed to it while the others keep
theirs; a store restored from an older backup, or brought over from another cluster, mixes
states from different moments. Bytewax 0.21 catches some of these, late and not all (it
only compares partition counts, indexes and the epoch each partition has garbage-collected
to), and the snapshots of epochs the last run did not finish must be removed at the epoch
the whole cluster resumes from, which no single store knows.

So before the main flow, the processes run a small dataflow over the same addresses in which
every process sends a report of its store to every process. The report also carries the
process's setup (which lake, which input, its counting rules, workers, whether it keeps a
store): processes started with different ones would split one input over two lakes, or never
meet in the same dataflow, so they are refused here too. Processes without a recovery store
take part all the same. Each then decides the same thing
from the same reports (:func:`agree`): refuse with one message naming every bad store, or go
on with a common cluster id, execution number and resume epoch, which each process records in
and applies to its own store.
"""

from __future__ import annotations

import sqlite3
import uuid
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from meterwax.errors import RecoveryStoreError
from meterwax.flows.execution import execute
from meterwax.flows.recovery import (
    Member,
    Membership,
    discard_unfinished_epochs,
    partition_problem,
    read_membership,
    resume_epoch_of,
    write_membership,
)

FLOW_ID = "meterwax_store_agreement"


@dataclass(frozen=True)
class StoreReport:
    """What one process tells the others about its store (pickled between processes)."""

    process: int
    directory: str
    problem: str | None
    """Why the store cannot serve this process (:func:`partition_problem`), if it cannot."""
    membership: Membership | None
    has_rows: bool
    """Whether Bytewax wrote anything but the partition's own definition."""
    oldest_snapshot: int | None
    """The epoch of the oldest snapshot in the store (None: it holds none)."""
    executions: list[tuple[int, int, int]]
    frontiers: list[tuple[int, int, int]]
    proposal: str
    """A fresh cluster id, used if no store has one yet (process 0's wins)."""
    setup: tuple[tuple[str, str], ...] = ()
    """What every process must have alike: lake, input, rules, workers, recovery."""


@dataclass(frozen=True)
class Agreement:
    """What every process of the cluster decided alike from all reports."""

    cluster: str
    execution: int
    """The number Bytewax gives the execution about to start."""
    resume_epoch: int | None
    """The epoch the cluster resumes at (None: it never ran)."""


def report_store(
    directory: Path, member: Member, setup: tuple[tuple[str, str], ...] = ()
) -> StoreReport:
    """Read this process's store for the others."""
    executions: list[tuple[int, int, int]] = []
    frontiers: list[tuple[int, int, int]] = []
    has_rows = False
    snapshot_epochs: list[int] = []
    for part in sorted(directory.glob("part-*.sqlite3")):
        with closing(sqlite3.connect(part)) as db:
            executions += db.execute("SELECT ex_num, worker_count, resume_epoch FROM exs")
            frontiers += db.execute("SELECT ex_num, worker_index, worker_frontier FROM fronts")
            (oldest,) = db.execute("SELECT MIN(snap_epoch) FROM snaps").fetchone()
            if oldest is not None:
                snapshot_epochs.append(oldest)
            has_rows = has_rows or any(
                db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()
                for table in ("exs", "fronts", "commits", "snaps")
            )
    return StoreReport(
        process=member.process,
        directory=str(directory),
        problem=partition_problem(directory, member),
        membership=read_membership(directory),
        has_rows=has_rows,
        oldest_snapshot=min(snapshot_epochs, default=None),
        executions=executions,
        frontiers=frontiers,
        proposal=uuid.uuid4().hex,
        setup=setup,
    )


def report_no_store(member: Member, setup: tuple[tuple[str, str], ...]) -> StoreReport:
    """The report of a process that keeps no recovery store (``--no-recovery``)."""
    return StoreReport(
        process=member.process,
        directory="",
        problem=None,
        membership=None,
        has_rows=False,
        oldest_snapshot=None,
        executions=[],
        frontiers=[],
        proposal=uuid.uuid4().hex,
        setup=setup,
    )


def setup_problems(reports: list[StoreReport]) -> list[str]:
    """Why these processes cannot run as one cluster: settings that differ between them."""
    problems = []
    keys = sorted({key for report in reports for key, _ in report.setup})
    for key in keys:
        values = {r.process: dict(r.setup).get(key, "—") for r in reports}
        if len(set(values.values())) > 1:
            listed = ", ".join(f"process {p}: {v}" for p, v in sorted(values.items()))
            problems.append(f"the processes differ in {key} ({listed})")
    if problems:
        problems[-1] += "; start every process of a cluster with the same settings"
    return problems


def agree(reports: list[StoreReport], processes: int) -> Agreement:
    """Decide, from every process's report, whether and how the cluster resumes.

    Deterministic in the reports, so every process reaches the same decision.
    """
    reports = sorted(reports, key=lambda report: report.process)
    if [report.process for report in reports] != list(range(processes)):
        heard = [report.process for report in reports]
        msg = f"expected a store report from each of {processes} processes, got {heard}"
        raise RecoveryStoreError(msg)
    problems = setup_problems(reports)
    if problems or not any(report.directory for report in reports):
        if problems:
            raise RecoveryStoreError("; ".join(problems))
        return Agreement(cluster=reports[0].proposal, execution=0, resume_epoch=None)
    problems = [report.problem for report in reports if report.problem]
    executions = [row for report in reports for row in report.executions]
    frontiers = [row for report in reports for row in report.frontiers]
    resume_epoch = resume_epoch_of(executions, frontiers)
    # A store with snapshots a resume would load holds state; an empty one next to it was
    # lost or replaced (a store whose run never finished an epoch holds nothing to lose).
    # (With no resume epoch at all while snapshots exist, the progress rows were in the
    # store that is gone.)
    holding = [
        r
        for r in reports
        if r.oldest_snapshot is not None
        and (resume_epoch is None or r.oldest_snapshot < resume_epoch)
    ]
    empty = [report for report in reports if not report.has_rows]
    if holding and empty:
        problems.append(
            f"the recovery store of {_who(empty)} is empty while the store of {_who(holding)} "
            "holds state: a store was lost or replaced, and resuming the others without it "
            "would drop the state Bytewax kept in it; restore it, or start every process with "
            "a new empty store (the lake's Delta log keeps a fresh start exactly once)"
        )
    used = [report for report in reports if report.has_rows]
    clusters = {_cluster(report) for report in used}
    if len(clusters) > 1:
        listed = ", ".join(f"process {r.process}: {_cluster(r)}" for r in used)
        problems.append(
            f"the recovery stores belong to different clusters ({listed}): each process must "
            "resume the store it ran with"
        )
    # Every process records the execution it is about to run before it runs, so a store
    # that saw the last execution records at least its number.
    latest = max((row[0] for row in [*executions, *frontiers]), default=-1)
    behind = [r for r in used if _execution(r) < latest]
    if behind:
        problems.append(
            f"the recovery store of {_who(behind)} is older than the cluster's last run "
            f"(execution {latest}): it was restored from an earlier backup or copied; restore "
            "the newest one, or start every process with a new empty store"
        )
    if problems:
        raise RecoveryStoreError("; ".join(problems))
    cluster = next(iter(clusters)) if clusters and None not in clusters else reports[0].proposal
    return Agreement(cluster=cluster, execution=latest + 1, resume_epoch=resume_epoch)


def apply_agreement(directory: Path, member: Member, agreement: Agreement) -> None:
    """Record the agreement in this process's store and drop its unfinished epochs."""
    write_membership(
        directory,
        Membership(member.process, member.processes, agreement.cluster, agreement.execution),
    )
    if agreement.resume_epoch is not None:
        for part in directory.glob("part-*.sqlite3"):
            discard_unfinished_epochs(part, agreement.resume_epoch)


def agree_on_stores(
    directory: Path | None,
    member: Member,
    addresses: list[str],
    *,
    setup: tuple[tuple[str, str], ...] = (),
    workers: int = 1,
) -> Agreement:
    """Exchange store reports with the other processes, decide, and apply the decision.

    Every process of the cluster must call this with the same addresses; it returns once all
    have reported (Bytewax retries connecting to peers that are not up yet).
    """
    report = (
        report_store(directory, member, setup)
        if directory is not None
        else report_no_store(member, setup)
    )
    reports = exchange(report, member, addresses, workers=workers)
    agreement = agree(reports, member.processes)
    if directory is not None:
        apply_agreement(directory, member, agreement)
    return agreement


def exchange(
    report: StoreReport, member: Member, addresses: list[str], *, workers: int = 1
) -> list[StoreReport]:
    """Send ``report`` to every process of the cluster and return every process's report."""
    inbox: list[StoreReport] = []
    flow = Dataflow(FLOW_ID)
    sent = op.input("reports", flow, _ReportSource(report))
    addressed = op.flat_map(
        "address", sent, lambda r: [(_part(p), r) for p in range(member.processes)]
    )
    op.output("inbox", addressed, _Inbox(member.process, inbox))
    execute(flow, workers=workers, process_id=member.process, addresses=addresses)
    return inbox


def _part(process: int) -> str:
    """The name of a process's partition in the exchange: sorts in process order."""
    return f"{process:06d}"


class _ReportSource(FixedPartitionedSource[StoreReport, None]):
    """One partition per process, on that process only, holding its report."""

    def __init__(self, report: StoreReport) -> None:
        self._report = report

    def list_parts(self) -> list[str]:
        return [_part(self._report.process)]

    def build_part(
        self, step_id: str, for_part: str, resume_state: None
    ) -> StatefulSourcePartition[StoreReport, None]:
        return _OneReport(self._report)


class _OneReport(StatefulSourcePartition[StoreReport, None]):
    def __init__(self, report: StoreReport) -> None:
        self._pending = [report]

    def next_batch(self) -> list[StoreReport]:
        if not self._pending:
            raise StopIteration
        batch, self._pending = self._pending, []
        return batch

    def snapshot(self) -> None:
        return None


class _Inbox(FixedPartitionedSink[StoreReport, None]):
    """One partition per process, on that process only: reports addressed to it land here."""

    def __init__(self, process: int, inbox: list[StoreReport]) -> None:
        self._process = process
        self._inbox = inbox

    def list_parts(self) -> list[str]:
        return [_part(self._process)]

    def part_fn(self, item_key: str) -> int:
        return int(item_key)

    def build_part(
        self, step_id: str, for_part: str, resume_state: None
    ) -> StatefulSinkPartition[StoreReport, None]:
        return _InboxPartition(self._inbox)


class _InboxPartition(StatefulSinkPartition[StoreReport, None]):
    def __init__(self, inbox: list[StoreReport]) -> None:
        self._inbox = inbox

    def write_batch(self, values: list[StoreReport]) -> None:
        self._inbox.extend(values)

    def snapshot(self) -> None:
        return None


def _who(reports: list[StoreReport]) -> str:
    return " and ".join(f"process {r.process} ({r.directory})" for r in reports)


def _cluster(report: StoreReport) -> str | None:
    return report.membership.cluster if report.membership is not None else None


def _execution(report: StoreReport) -> int:
    """The execution a store was last prepared for (-1: none recorded)."""
    if report.membership is None or report.membership.execution is None:
        return -1
    return report.membership.execution
