"""``meterwax replay``: re-read a range of a topic and repair the lake without double counting.

Replay decides what each message of the range is exactly as the main flow did, through the
same code: it runs the main flow's partition processor, with the rules the lake remembers,
over the partition from the start of its log up to the end of the range (duplicates, late and
too-late events, future timestamps and oversized payloads all depend on what came before), and
keeps the decisions for the range. Then it writes only what the lake lacks, through the
correction paths:

- counted and late events go into the ledger if their key is not there (``counted_by =
  replay``; a message the ledger already holds at its own coordinates is already counted, a
  key it holds from elsewhere a duplicate, with other content a conflicting duplicate), and
  every window they belong to is recomputed from the ledger with an audit row (``reason =
  replay``);
- quarantined messages go into quarantine if their coordinates are not there.

A range the lake already accounts for therefore changes nothing, and ``dry_run`` shows the
per-window differences without writing. Only offsets the main flow has already passed can be
replayed: repairing ahead of it would race it (both would count the same message).

If retention has deleted the start of a partition since the main flow read it, the processor
starts from the first offset still in the log; decisions near the start of the log can then
differ from the main flow's (a lower watermark, fewer remembered keys), and replay leaves to
the lake whatever it already holds for those messages.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import groupby

from meterwax.errors import ConfigError
from meterwax.kafka.ranges import Message
from meterwax.operators.columnar import ColumnarPartitionMeter
from meterwax.operators.corrections import ChangeReason, LateEvent, SliceKey, WindowChange
from meterwax.operators.partition import RangeOutcome, classify_range
from meterwax.operators.records import DEFAULT_BATCH_SIZE, SourceBatch, SourcePartition
from meterwax.operators.windows import window_start
from meterwax.sinks.corrections_store import CorrectionStore
from meterwax.sinks.lake import Lake

REPLAY_FLOW = "replay"


@dataclass
class ReplayReport:
    """What a replay found, and what it changed (or would change, with ``dry_run``)."""

    read: int = 0
    already_counted: int = 0
    duplicates: int = 0
    inserted: int = 0
    already_quarantined: int = 0
    quarantined: int = 0
    heartbeats: int = 0
    changes: list[WindowChange] = field(default_factory=list)


def replay(
    lake: Lake,
    topic: str,
    ranges: dict[int, tuple[int, int]],
    messages: Iterator[Message],
    *,
    dry_run: bool,
) -> ReplayReport:
    """Repair the lake for ``ranges`` (partition → [start, stop) offsets).

    ``messages`` are each partition's messages from the start of its log up to the range's
    stop, partition by partition, in offset order. With ``dry_run``, only report.
    """
    store = CorrectionStore(lake)
    origin = f"kafka:{topic}"
    report = ReplayReport()
    outcomes: dict[int, RangeOutcome] = {}
    for partition, stream in groupby(messages, key=lambda m: m.partition):
        start, stop = ranges[partition]
        where = SourcePartition(origin, partition)
        _check_main_flow_passed(store, where, topic, stop)
        # Each offset decided under the catalog version the main flow decided it with.
        schedule = store.catalogs.schedule(where.key, store.catalog)
        meter = ColumnarPartitionMeter(where, store.rules, schedule=schedule)
        outcomes[partition] = classify_range(meter, _batches(where, stream), start, stop)

    late: list[LateEvent] = []
    for partition, outcome in sorted(outcomes.items()):
        report.read += outcome.counters["read"]
        report.duplicates += outcome.counters["duplicates"]
        report.heartbeats += outcome.counters["heartbeats"]
        late += _as_late(outcome, origin, partition, store.window_us)
        report.quarantined += _repair_quarantine(store, origin, partition, outcome, dry_run)
    report.already_quarantined = sum(len(o.quarantined) for o in outcomes.values())
    report.already_quarantined -= report.quarantined

    if dry_run:
        classified = store.late_classification(late)
        inserted, counted_before = classified.new, classified.already_inserted
        duplicates = len(classified.duplicates) + len(classified.conflicting)
    else:
        outcome = store.insert_late(late, counted_by=REPLAY_FLOW, fence_version=0)
        inserted, counted_before = outcome.inserted, outcome.classified.already_inserted
        duplicates = len(outcome.classified.duplicates) + len(outcome.classified.conflicting)
    report.inserted, report.already_counted = len(inserted), len(counted_before)
    report.duplicates += duplicates
    affected: dict[SliceKey, list[str]] = defaultdict(list)
    for event in inserted:
        affected[event.slice].append(event.event.id)
    report.changes = store.correct_windows(
        {key: [ChangeReason.REPLAY] for key in affected},
        late_ids=affected,
        not_in_ledger_yet=[e.event for e in inserted] if dry_run else (),
        dry_run=dry_run,
    ).changes
    return report


def _as_late(outcome: RangeOutcome, origin: str, partition: int, window_us: int) -> list[LateEvent]:
    """Counted and late events of the range alike: each must be in the ledger, once."""
    counted = [
        LateEvent(
            row.event, origin, partition, row.offset, window_start(row.event.time_us, window_us)
        )
        for row in outcome.counted
    ]
    late = [
        LateEvent(row.event, origin, partition, row.offset, row.window_start_us)
        for row in outcome.late
    ]
    return sorted(counted + late, key=lambda e: e.coordinates)


def _repair_quarantine(
    store: CorrectionStore, origin: str, partition: int, outcome: RangeOutcome, dry_run: bool
) -> int:
    """Quarantine what the range rejects and quarantine lacks; return how many."""
    rows = outcome.quarantined
    known = store.quarantined_offsets(origin, partition, [r.offset for r in rows])
    missing = [r for r in rows if r.offset not in known]
    if missing and not dry_run:
        store.quarantine(SourcePartition(origin, partition), missing, flow=REPLAY_FLOW)
    return len(missing)


def _check_main_flow_passed(
    store: CorrectionStore, where: SourcePartition, topic: str, stop: int
) -> None:
    position = store.main_flow_position(where)
    if stop - 1 > position:
        msg = (
            f"{topic}[{where.partition}] offset {stop - 1} is ahead of the main flow (it has "
            f"committed up to {position}): replay only what the main flow has passed, or let "
            "it catch up first"
        )
        raise ConfigError(msg)


def _batches(where: SourcePartition, messages: Iterable[Message]) -> Iterator[SourceBatch]:
    """Messages as the processor's batches, with their Kafka keys and timestamps."""
    batch: list[Message] = []
    for message in messages:
        batch.append(message)
        if len(batch) == DEFAULT_BATCH_SIZE:
            yield _batch(where, batch)
            batch = []
    if batch:
        yield _batch(where, batch)


def _batch(where: SourcePartition, messages: list[Message]) -> SourceBatch:
    return SourceBatch(
        where,
        [m.offset for m in messages],
        [m.value for m in messages],
        [m.key for m in messages],
        [m.timestamp_ms for m in messages],
    )


def summary(report: ReplayReport) -> Counter[str]:
    """The report's counts, for printing."""
    return Counter(
        read=report.read,
        already_counted=report.already_counted,
        duplicates=report.duplicates,
        inserted=report.inserted,
        already_quarantined=report.already_quarantined,
        quarantined=report.quarantined,
        heartbeats=report.heartbeats,
        windows_changed=len(report.changes),
    )
