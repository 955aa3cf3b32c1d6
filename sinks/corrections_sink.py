"""The correction flow's sink: applies one batch of pending corrections to the lake.

For each batch (late events, window conflicts, new ledger rows and void rules up to some
table versions):

1. insert the late events the ledger lacks (classified against it, within the windows'
   decimal(38, 9) bound), quarantine the conflicting copies and those that do not fit;
2. apply new voids and undos, and hold the ledger's new rows (late events just inserted
   included) against the voids in force: what they select is listed in ``voided_events``;
3. recompute every affected window from the ledger and plan the changes (operators);
4. write the audit rows, then the window rows, then the progress marker.

Every step is idempotent (see ``corrections_store``), so a crash anywhere, followed by a rerun,
applies each correction exactly once. Delivery: exactly once.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from meterwax.faults import crash_point
from meterwax.metrics import RunStats
from meterwax.operators.corrections import CORRECTIONS_FLOW, ChangeReason, LateEvent, SliceKey
from meterwax.sinks.corrections_store import CorrectionStore, InputVersions
from meterwax.sinks.lake import Lake

PART = "corrections"


@dataclass(frozen=True)
class CorrectionWork:
    """Pending input of the correction flow, up to some table versions."""

    late: list[LateEvent]
    conflicts: list[tuple[SliceKey, ChangeReason]]
    through: InputVersions
    """The versions this batch brings the flow up to."""
    void_changes: list[tuple[str, str]] = field(default_factory=list)
    """(void_id, action) recorded in void_rules since the last batch."""
    ledger_after: int = -1
    """The ledger version whose new rows were held against the voids (-1: from the start)."""


def apply_work(store: CorrectionStore, work: CorrectionWork) -> Counter[str]:
    """Apply one batch; return what it did (late events counted, duplicates, windows changed)."""
    inserted = store.insert_late(
        work.late, counted_by=CORRECTIONS_FLOW, fence_version=work.through.late
    )
    reasons: dict[SliceKey, set[ChangeReason]] = defaultdict(set)
    for event in inserted.counted:
        reasons[event.slice].add(ChangeReason.LATE_EVENTS)
    for copy in inserted.superseded:
        reasons[store.ledger.slice_of(copy)].add(ChangeReason.LATE_EVENTS)
    for key, reason in work.conflicts:
        reasons[key].add(reason)
    voided, void_ids = 0, {}
    if work.void_changes or store.voids.active():
        # Through the ledger's current version: the late events just inserted are in it.
        appended = store.ledger.appended(work.ledger_after, store.input_versions().ledger)
        void_reasons, void_ids, voided = store.sweep_voids(work.void_changes, appended)
        for key, found in void_reasons.items():
            reasons[key] |= found
    crash_point("corrections.after_voids")
    # The audit rows name the late events that count: not those a void took back at once.
    taken_back = store.voided_among(inserted.counted) if voided else set()
    late_ids: dict[SliceKey, list[str]] = defaultdict(list)
    for event in inserted.counted:
        if event.coordinates not in taken_back:
            late_ids[event.slice].append(event.event.id)
    correction = store.correct_windows(reasons, late_ids=late_ids, void_ids=void_ids)
    crash_point("corrections.after_windows")
    store.record_progress(work.through)
    return Counter(
        late_read=len(work.late),
        late_counted=len(inserted.counted),
        late_duplicates=len(inserted.classified.duplicates),
        late_quarantined=len(inserted.classified.conflicting) + len(inserted.overflowing),
        conflicts_read=len(work.conflicts),
        windows_changed=len(correction.changes),
        audit_rows=len(correction.audited),
        voided=voided,
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
