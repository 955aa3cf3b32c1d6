"""The correction flow's sink: applies one batch of pending corrections to the lake.

For each batch (late events and window conflicts up to some table versions):

1. insert the late events the ledger lacks (classified against it, within the windows'
   decimal(38, 9) bound), quarantine the conflicting copies and those that do not fit;
2. recompute every affected window from the ledger and plan the changes (operators);
3. write the audit rows, then the window rows, then the progress marker.

Every step is idempotent (see ``corrections_store``), so a crash anywhere, followed by a rerun,
applies each correction exactly once. Delivery: exactly once.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from meterwax.faults import crash_point
from meterwax.metrics import RunStats
from meterwax.operators.corrections import CORRECTIONS_FLOW, ChangeReason, LateEvent, SliceKey
from meterwax.sinks.corrections_store import CorrectionStore
from meterwax.sinks.lake import Lake

PART = "corrections"


@dataclass(frozen=True)
class CorrectionWork:
    """Pending input of the correction flow, up to two table versions."""

    late: list[LateEvent]
    conflicts: list[tuple[SliceKey, ChangeReason]]
    late_version: int
    conflicts_version: int


def apply_work(store: CorrectionStore, work: CorrectionWork) -> Counter[str]:
    """Apply one batch; return what it did (late events counted, duplicates, windows changed)."""
    inserted = store.insert_late(
        work.late, counted_by=CORRECTIONS_FLOW, fence_version=work.late_version
    )
    late_ids: dict[SliceKey, list[str]] = defaultdict(list)
    reasons: dict[SliceKey, set[ChangeReason]] = defaultdict(set)
    for event in inserted.counted:
        late_ids[event.slice].append(event.event.id)
        reasons[event.slice].add(ChangeReason.LATE_EVENTS)
    for key, reason in work.conflicts:
        reasons[key].add(reason)
    correction = store.correct_windows(reasons, late_ids=late_ids)
    crash_point("corrections.after_windows")
    store.record_progress(work.late_version, work.conflicts_version)
    return Counter(
        late_read=len(work.late),
        late_counted=len(inserted.counted),
        late_duplicates=len(inserted.classified.duplicates),
        late_quarantined=len(inserted.classified.conflicting) + len(inserted.overflowing),
        conflicts_read=len(work.conflicts),
        windows_changed=len(correction.changes),
        audit_rows=len(correction.audited),
    )


class CorrectionsSink(FixedPartitionedSink[CorrectionWork, None]):
    """One writer for the whole lake: corrections are applied by a single flow instance."""

    def __init__(self, lake: Lake, stats: RunStats | None = None) -> None:
        self._lake = lake
        self._stats = stats or RunStats()

    def list_parts(self) -> list[str]:
        """A single partition: two correction writers would race on the same windows."""
        return [PART]

    def part_fn(self, item_key: str) -> int:
        """Everything goes to the single partition."""
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Applier:
        """Build the writer (its position lives in the lake, not in Bytewax state)."""
        return _Applier(CorrectionStore(self._lake), self._stats)


class _Applier(StatefulSinkPartition[CorrectionWork, None]):
    def __init__(self, store: CorrectionStore, stats: RunStats) -> None:
        self._store = store
        self._stats = stats

    def write_batch(self, values: list[CorrectionWork]) -> None:
        for work in values:
            before = (
                self._store.stats.commits,
                self._store.stats.retries,
                self._store.stats.seconds,
            )
            self._stats.add(apply_work(self._store, work))
            self._stats.add_commits(
                self._store.stats.commits - before[0],
                self._store.stats.retries - before[1],
                self._store.stats.seconds - before[2],
            )

    def snapshot(self) -> None:
        return None
