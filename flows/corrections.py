"""The correction flow: folds late events (and window conflicts) into windows already written.

::

    pending (polls late_events / window_conflicts for versions not yet applied)
        ─► apply (CorrectionsSink: ledger insert, recompute from the ledger, audit, windows)

It runs as its own Bytewax dataflow, one instance per lake. ``once=True`` applies everything
pending when it starts and stops; otherwise it keeps polling. Its position is the progress
marker in the lake, so it needs no Bytewax recovery store: after a crash it simply starts
again and every step it repeats is a no-op.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from meterwax.flows.execution import execute
from meterwax.metrics import RunStats
from meterwax.sinks.corrections_sink import PART, CorrectionsSink, CorrectionWork
from meterwax.sinks.corrections_store import CorrectionStore, InputVersions
from meterwax.sinks.lake import Lake

FLOW_ID = "meterwax_corrections"


class PendingCorrections(FixedPartitionedSource[CorrectionWork, None]):
    """Emits the late events and conflicts the lake's correction progress has not reached.

    Delivery: at least once (a batch emitted but not applied before a crash is emitted again);
    the sink makes applying it exactly once.
    """

    def __init__(self, lake: Lake, *, once: bool, poll_interval_s: float) -> None:
        self._lake = lake
        self._once = once
        self._poll_interval_s = poll_interval_s

    def list_parts(self) -> list[str]:
        """One partition: the lake."""
        return [PART]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Poller:
        """Start from the progress recorded in the lake."""
        return _Poller(CorrectionStore(self._lake), self._once, self._poll_interval_s)


class _Poller(StatefulSourcePartition[CorrectionWork, None]):
    def __init__(self, store: CorrectionStore, once: bool, poll_interval_s: float) -> None:
        self._store = store
        self._once = once
        self._poll_interval = timedelta(seconds=poll_interval_s)
        self._emitted = store.progress()
        self._next_poll = datetime.now(UTC)
        # With --once, "everything pending" means pending when the flow started.
        self._target = store.input_versions() if once else None

    def next_batch(self) -> list[CorrectionWork]:
        now = self._target or self._store.input_versions()
        after = self._emitted
        has_voids = now.voids > after.voids or bool(self._store.voids.active())
        if not (
            now.late > after.late
            or now.conflicts > after.conflicts
            or now.voids > after.voids
            or (has_voids and now.ledger > after.ledger)
        ):
            if self._once:
                raise StopIteration
            self._next_poll = datetime.now(UTC) + self._poll_interval
            return []
        through = InputVersions(*(max(n, a) for n, a in zip(now, after, strict=True)))
        work = CorrectionWork(
            late=self._store.read_late_events(after.late, now.late),
            conflicts=self._store.read_conflicts(after.conflicts, now.conflicts),
            through=through,
            void_changes=self._store.voids.changed_between(after.voids, now.voids),
            ledger_after=after.ledger,
        )
        self._emitted = through
        return [work]

    def next_awake(self) -> datetime | None:
        return self._next_poll

    def snapshot(self) -> None:
        return None


def build_corrections_flow(
    lake: Lake, *, once: bool, poll_interval_s: float, stats: RunStats
) -> Dataflow:
    """The correction dataflow for one lake."""
    flow = Dataflow(FLOW_ID)
    work = op.input(
        "pending", flow, PendingCorrections(lake, once=once, poll_interval_s=poll_interval_s)
    )
    keyed = op.key_on("to_lake", work, lambda _: PART)
    op.output("apply", keyed, CorrectionsSink(lake, stats))
    return flow


@dataclass
class CorrectionsReport:
    """What one run of the correction flow did."""

    stats: RunStats
    seconds: float


def run_corrections(
    lake: Lake, *, once: bool = True, poll_interval_s: float = 5.0, stats: RunStats | None = None
) -> CorrectionsReport:
    """Run the correction flow (to completion when ``once``)."""
    stats = stats or RunStats()
    started = time.monotonic()
    execute(build_corrections_flow(lake, once=once, poll_interval_s=poll_interval_s, stats=stats))
    return CorrectionsReport(stats, time.monotonic() - started)
