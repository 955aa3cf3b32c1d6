"""The Bytewax recovery store of a main-flow run: where it is, create it, check it on resume.

Bytewax keeps operator state (watermarks, dedupe indexes, open windows) and source offsets in
SQLite partitions under one directory, and resumes from the newest epoch complete there.
Resuming a store that was made for another input (another topic or partition count, another
window length, another lake) would silently mix states, so meterwax writes what the store was
made for next to it and refuses a mismatch.

A cluster of N processes keeps N stores, one per process on its own disk: process k's store
holds Bytewax partition k of N (Bytewax finds every partition in whichever process holds it,
and spreads snapshots and progress over all of them). A run holds its store's lock throughout,
so two runs never share a store.

Which store a run uses is the command line's choice (``meterwax run``); this module makes,
checks and reads stores, and names the default one (:func:`default_directory`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pickle
import socket
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from bytewax._bytewax import init_db_dir

from meterwax.errors import ConfigError, RecoveryStoreError, StoreBusyError
from meterwax.flows.metering import FLOW_ID, READ_STEP
from meterwax.operators.records import SourcePartition
from meterwax.sinks.lake import Lake

IDENTITY_FILE = "meterwax-recovery.json"
MEMBERSHIP_FILE = "meterwax-cluster.json"
LOCK_FILE = ".lock"
SOURCE_STEP = f"{FLOW_ID}.{READ_STEP}"
"""The full step id of the main flow's source: its snapshots are the source positions."""


@dataclass(frozen=True)
class StoreIdentity:
    """What a recovery store belongs to."""

    flow: str
    lake: str
    lake_id: str
    """The lake's ledger table id (:meth:`Lake.ledger_id`): a recreated lake is another lake."""
    source: str
    """The origins of the input (``kafka:<topic>`` or file origins), comma-separated."""
    partitions: int
    window_us: int


def store_identity(lake: Lake, partitions: list[SourcePartition], window_us: int) -> StoreIdentity:
    """What a store for this lake and input is made for (the lake's tables must exist)."""
    return StoreIdentity(
        flow=FLOW_ID,
        lake=lake.root,
        lake_id=lake.ledger_id(),
        source=",".join(sorted({p.source for p in partitions})),
        partitions=len(partitions),
        window_us=window_us,
    )


@dataclass(frozen=True)
class Member:
    """Which process of how many processes a store serves.

    Process ``process`` holds Bytewax partition ``process`` of ``processes``.
    """

    process: int = 0
    processes: int = 1


SINGLE = Member()


def default_directory(state_dir: Path, identity: StoreIdentity, member: Member = SINGLE) -> Path:
    """The default store of a lake and input under ``state_dir``.

    Keyed by lake path, lake id and input, so a lake deleted and recreated at the same path
    starts a fresh store; a process of a cluster gets its own (a store serves one process).
    """
    key = f"{identity.lake}\n{identity.lake_id}\n{identity.source}"
    name = hashlib.sha256(key.encode()).hexdigest()[:16]
    if member.processes > 1:
        name += f"-process-{member.process}-of-{member.processes}"
    return state_dir / "recovery" / name


@contextmanager
def hold_store(directory: Path) -> Iterator[None]:
    """Hold the store's lock for as long as the run lasts; refuse if another run holds it.

    Two runs on one store both write snapshots and frontiers into the same partitions and
    then resume from a mixture. The lock is an advisory ``flock`` on a file in the store: the
    kernel drops it when the holder exits, even by SIGKILL, so a crash never leaves it stale.
    """
    directory.mkdir(parents=True, exist_ok=True)
    lock_path = directory / LOCK_FILE
    handle = lock_path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "a process that did not say which"
            raise StoreBusyError(str(directory), holder) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        yield
    finally:
        handle.close()


def prepare_store(directory: Path, identity: StoreIdentity, *, member: Member = SINGLE) -> None:
    """Create and initialise the store if it is new; otherwise check it matches ``identity``.

    The caller holds the store (:func:`hold_store`). A new store holds exactly partition
    ``member.process`` of ``member.processes``: Bytewax finds the partitions of a cluster in
    the stores of all its processes and needs each exactly once. One process resumes here
    from its own store alone; the processes of a cluster agree first
    (:mod:`meterwax.flows.store_agreement`), which also checks which partition each holds.
    """
    directory.mkdir(parents=True, exist_ok=True)
    identity_path = directory / IDENTITY_FILE
    if not any(directory.glob("part-*.sqlite3")):
        _create_partition(directory, member)
        identity_path.write_text(json.dumps(asdict(identity), indent=2) + "\n")
        write_membership(directory, Membership(member.process, member.processes))
        return
    if not identity_path.exists():
        msg = (
            f"recovery store {directory} has state but no {IDENTITY_FILE}: it was not made "
            "by meterwax; use an empty directory"
        )
        raise ConfigError(msg)
    recorded = json.loads(identity_path.read_text())
    differences = [
        f"{name} {recorded.get(name)!r} (this run: {value!r})"
        for name, value in asdict(identity).items()
        if recorded.get(name) != value
    ]
    if differences:
        msg = (
            f"recovery store {directory} was made for another input: "
            + "; ".join(differences)
            + ". Resuming it would mix states: use another --recovery-dir (the lake's "
            "Delta log keeps a fresh start exactly once) or the original settings."
        )
        raise ConfigError(msg)
    if member.processes == 1:
        problem = partition_problem(directory, member)
        if problem:
            raise RecoveryStoreError(problem)
        for part in directory.glob("part-*.sqlite3"):
            discard_unfinished_epochs(part)


def _create_partition(directory: Path, member: Member) -> None:
    """Write partition ``member.process`` of ``member.processes`` into an empty store.

    Bytewax's initialiser makes all partitions of a count at once; the others are made
    aside and dropped, so each process's store holds its own partition only.
    """
    if member.processes == 1:
        init_db_dir(directory, 1)
        return
    with tempfile.TemporaryDirectory(dir=directory, prefix=".init-") as scratch:
        init_db_dir(Path(scratch), member.processes)
        name = f"part-{member.process}.sqlite3"
        os.replace(Path(scratch) / name, directory / name)


def store_partitions(directory: Path) -> list[tuple[int, int]]:
    """The ``(index, count)`` of every Bytewax partition in a store, as its files record them."""
    found: list[tuple[int, int]] = []
    for part in sorted(directory.glob("part-*.sqlite3")):
        with closing(sqlite3.connect(part)) as db:
            found.extend(db.execute("SELECT part_index, part_count FROM parts").fetchall())
    return sorted(found)


def partition_problem(directory: Path, member: Member) -> str | None:
    """Why a store cannot serve ``member``, or None when it holds exactly its partition.

    Bytewax looks partitions up by the index recorded inside them, not by file or host: a
    store copied from another process, or stores swapped between processes, would make one
    partition appear twice and another go missing; a store made for another cluster size
    cannot be resumed at all (Bytewax cannot rescale recovery state).
    """
    found = store_partitions(directory)
    expected = [(member.process, member.processes)]
    if found == expected:
        return None
    who = f"process {member.process} of {member.processes}"
    counts = sorted({count for _, count in found})
    if counts and counts != [member.processes]:
        sizes = " and ".join(str(count) for count in counts)
        return (
            f"recovery store {directory} ({who}) was made for a cluster of {sizes} "
            f"process(es), not {member.processes}: recovery state cannot be rescaled; run "
            f"{sizes} process(es), or start every process with a new empty store (the "
            "lake's Delta log keeps a fresh start exactly once)"
        )
    indexes = [index for index, _ in found]
    if len(indexes) == 1:
        return (
            f"recovery store {directory} ({who}) holds the partition of process "
            f"{indexes[0]}: it was copied or swapped from another process; each process "
            "keeps its own store (process k's holds partition k)"
        )
    return (
        f"recovery store {directory} ({who}) holds partitions {indexes} of "
        f"{member.processes}: a store serves one process and holds its partition only"
    )


@dataclass(frozen=True)
class Membership:
    """What a store records about the cluster it serves (``meterwax-cluster.json``).

    ``cluster`` is an id the processes agree on when they first run together; ``execution``
    the Bytewax execution this store was last prepared for. Both let a cluster tell a store
    that lived through its runs from one that was lost, restored from an older backup or
    brought over from another cluster.
    """

    process: int
    processes: int
    cluster: str | None = None
    execution: int | None = None


def read_membership(directory: Path) -> Membership | None:
    """The store's membership record, or None for a store made before clusters recorded one."""
    path = directory / MEMBERSHIP_FILE
    if not path.exists():
        return None
    return Membership(**json.loads(path.read_text()))


def write_membership(directory: Path, membership: Membership) -> None:
    """Replace the membership record atomically (a crash leaves the old or the new one)."""
    path = directory / MEMBERSHIP_FILE
    scratch = path.with_suffix(".tmp")
    with scratch.open("w") as handle:
        handle.write(json.dumps(asdict(membership), indent=2) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(scratch, path)


def discard_unfinished_epochs(part: Path, resume_at: int | None = None) -> int:
    """Delete snapshots of epochs the last execution did not finish; return how many.

    Bytewax 0.21.1 resumes at the last execution's frontier F and loads, per state key, the
    newest snapshot of an epoch before F. Snapshots written during epochs ≥ F by an execution
    that then died stay in the store. If the next execution passes those epochs without
    touching the same keys (a key first seen in the aborted epoch, say), a later resume reads
    the stale snapshot: a partition processor then claims offsets its source never committed
    (seen in our fault-injection suite as "offset 0 was already processed"). Those rows can
    never be right, so they are removed before every resume, before the run starts, so no
    fresh snapshot is ever removed.

    The epoch read from one partition alone is right only for a store that holds every
    partition (one process): a cluster spreads its progress rows over all its processes'
    partitions, so its processes agree on the epoch first and pass it as ``resume_at``.
    """
    with closing(sqlite3.connect(part)) as db, db:
        resume_epoch = _resume_epoch(db) if resume_at is None else resume_at
        if resume_epoch is None:
            return 0
        return db.execute("DELETE FROM snaps WHERE snap_epoch >= ?", (resume_epoch,)).rowcount


def source_positions(*directories: Path, step_id: str = SOURCE_STEP) -> dict[str, object]:
    """Where each source partition of a store would resume: ``{partition: position}``.

    The position is the input's own snapshot (the next Kafka offset, a file position), read
    the way Bytewax will read it: the newest snapshot of an epoch before the resume epoch.
    A partition missing from the result resumes at its start. Operators and tests use this to
    know whether a store holds progress, without starting a flow. For a cluster, pass every
    process's store: the resume epoch and the snapshots are spread over all of them.
    """
    parts = sorted(part for directory in directories for part in directory.glob("part-*.sqlite3"))
    executions: list[tuple[int, int, int]] = []
    frontiers: list[tuple[int, int, int]] = []
    for part in parts:
        with closing(sqlite3.connect(part)) as db:
            executions += db.execute("SELECT ex_num, worker_count, resume_epoch FROM exs")
            frontiers += db.execute("SELECT ex_num, worker_index, worker_frontier FROM fronts")
    resume_at = resume_epoch_of(executions, frontiers)
    if resume_at is None:
        return {}
    newest: list[tuple[int, str, bytes | None]] = []
    for part in parts:
        with closing(sqlite3.connect(part)) as db:
            newest += db.execute(
                "SELECT snap_epoch, state_key, ser_change FROM snaps"
                " WHERE step_id = ? AND snap_epoch < ?",
                (step_id, resume_at),
            ).fetchall()
    positions: dict[str, object] = {}
    for _, state_key, change in sorted(newest, key=lambda row: row[0]):
        if change is None:
            positions.pop(state_key, None)
        else:
            positions[state_key] = pickle.loads(change)  # Bytewax pickles snapshots
    return positions


def resume_epoch(part: Path) -> int | None:
    """The epoch the next execution resumes at, from one store partition (None: never run)."""
    with closing(sqlite3.connect(part)) as db:
        return _resume_epoch(db)


def _resume_epoch(db: sqlite3.Connection) -> int | None:
    """The epoch Bytewax resumes at, from the progress rows of one store partition."""
    return resume_epoch_of(
        db.execute("SELECT ex_num, worker_count, resume_epoch FROM exs").fetchall(),
        db.execute("SELECT ex_num, worker_index, worker_frontier FROM fronts").fetchall(),
    )


def resume_epoch_of(
    executions: list[tuple[int, int, int]], frontiers: list[tuple[int, int, int]]
) -> int | None:
    """The epoch Bytewax resumes at: the lowest frontier of the last execution's workers.

    ``executions`` are ``exs`` rows ``(ex_num, worker_count, resume_epoch)`` and
    ``frontiers`` are ``fronts`` rows ``(ex_num, worker_index, frontier)``. Bytewax spreads
    these rows over all partitions of a cluster by hash and computes this over all of them;
    so must anyone who wants the epoch of a cluster (None: it never ran).
    """
    if not executions:
        return None
    ex_num, workers, resumed_at = max(executions)
    fronts: dict[int, int] = {}
    for number, worker, frontier in frontiers:
        if number == ex_num:
            fronts[worker] = max(frontier, fronts.get(worker, frontier))
    return min(max(resumed_at, fronts.get(worker, resumed_at)) for worker in range(workers))
