"""The Bytewax recovery store of a main-flow run: where it is, create it, check it on resume.

Bytewax keeps operator state (watermarks, dedupe indexes, open windows) and source offsets in
SQLite partitions under one directory, and resumes from the newest epoch complete there.
Resuming a store that was made for another input (another topic or partition count, another
window length, another lake) would silently mix states, so meterwax writes what the store was
made for next to it and refuses a mismatch.

Which store a run uses is the command line's choice (``meterwax run``); this module makes,
checks and reads stores, and names the default one (:func:`default_directory`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import pickle
import sqlite3
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path

from bytewax._bytewax import init_db_dir

from meterwax.errors import ConfigError
from meterwax.flows.metering import FLOW_ID, READ_STEP
from meterwax.operators.records import SourcePartition
from meterwax.sinks.lake import Lake

IDENTITY_FILE = "meterwax-recovery.json"
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


def default_directory(state_dir: Path, identity: StoreIdentity) -> Path:
    """The default store of a lake and input under ``state_dir``.

    Keyed by lake path, lake id and input, so a lake deleted and recreated at the same path
    starts a fresh store.
    """
    key = f"{identity.lake}\n{identity.lake_id}\n{identity.source}"
    return state_dir / "recovery" / hashlib.sha256(key.encode()).hexdigest()[:16]


def prepare_store(directory: Path, identity: StoreIdentity, *, store_partitions: int = 1) -> None:
    """Create and initialise the store if it is new; otherwise check it matches ``identity``.

    Several processes of one run may prepare the same directory at once; a lock file makes
    exactly one of them create it.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        identity_path = directory / IDENTITY_FILE
        has_state = any(directory.glob("part-*.sqlite3"))
        if not has_state:
            init_db_dir(directory, store_partitions)
            identity_path.write_text(json.dumps(asdict(identity), indent=2) + "\n")
            return
        for part in directory.glob("part-*.sqlite3"):
            discard_unfinished_epochs(part)
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


def discard_unfinished_epochs(part: Path) -> int:
    """Delete snapshots of epochs the last execution did not finish; return how many.

    Bytewax 0.21.1 resumes at the last execution's frontier F and loads, per state key, the
    newest snapshot of an epoch before F. Snapshots written during epochs ≥ F by an execution
    that then died stay in the store. If the next execution passes those epochs without
    touching the same keys (a key first seen in the aborted epoch, say), a later resume reads
    the stale snapshot: a partition processor then claims offsets its source never committed
    (seen in our fault-injection suite as "offset 0 was already processed"). Those rows can
    never be right, so they are removed before every resume. All processes of a run do this
    before any of them can finish an epoch (the cluster waits for every process), so no
    fresh snapshot is ever removed.
    """
    with closing(sqlite3.connect(part)) as db, db:
        resume_epoch = _resume_epoch(db)
        if resume_epoch is None:
            return 0
        return db.execute("DELETE FROM snaps WHERE snap_epoch >= ?", (resume_epoch,)).rowcount


def source_positions(directory: Path, step_id: str = SOURCE_STEP) -> dict[str, object]:
    """Where each source partition of a store would resume: ``{partition: position}``.

    The position is the input's own snapshot (the next Kafka offset, a file position), read
    the way Bytewax will read it: the newest snapshot of an epoch before the resume epoch.
    A partition missing from the result resumes at its start. Operators and tests use this to
    know whether a store holds progress, without starting a flow.
    """
    positions: dict[str, object] = {}
    for part in sorted(directory.glob("part-*.sqlite3")):
        with closing(sqlite3.connect(part)) as db:
            resume_epoch = _resume_epoch(db)
            if resume_epoch is None:
                continue
            newest = db.execute(
                "SELECT state_key, ser_change FROM snaps WHERE step_id = ? AND snap_epoch < ?"
                " ORDER BY snap_epoch",
                (step_id, resume_epoch),
            ).fetchall()
        for state_key, change in newest:
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
    """The epoch Bytewax resumes at: the lowest frontier of the last execution's workers."""
    latest = db.execute(
        "SELECT ex_num, worker_count, resume_epoch FROM exs ORDER BY ex_num DESC LIMIT 1"
    ).fetchone()
    if latest is None:
        return None
    ex_num, workers, resumed_at = latest
    fronts = dict(
        db.execute(
            "SELECT worker_index, worker_frontier FROM fronts WHERE ex_num = ?", (ex_num,)
        ).fetchall()
    )
    return min(max(resumed_at, fronts.get(worker, resumed_at)) for worker in range(workers))
