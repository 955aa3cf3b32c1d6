"""``meterwax replay``: re-read a range of a topic and repair the lake without double counting.

Every message of the range is looked up in the lake: a valid event whose ``(tenant_id, id)`` is
already in the ledger counts nothing; a rejected message already in ``quarantine`` (same
coordinates) is left alone. What is missing is written exactly as the flows would have:
events into the ledger (``counted_by = replay``), each affected window recomputed from the
ledger with an audit row (``reason = replay``), rejected messages into quarantine. A range that
is already fully counted therefore changes nothing, and ``--dry-run`` shows the per-window
differences without writing.

Only offsets the main flow has already passed can be replayed: repairing ahead of it would
race it (both would count the same message).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

from meterwax.errors import ConfigError
from meterwax.kafka.ranges import Message
from meterwax.operators.corrections import (
    ChangeReason,
    LateEvent,
    WindowChange,
    WindowKey,
    classify_late_events,
)
from meterwax.operators.decode import Event, Heartbeat, Rejection, decode
from meterwax.operators.records import QuarantineRow, SourcePartition
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


def replay(lake: Lake, topic: str, messages: Iterator[Message], *, dry_run: bool) -> ReplayReport:
    """Repair the lake from ``messages`` (or, with ``dry_run``, only report what would change)."""
    store = CorrectionStore(lake)
    report = ReplayReport()
    origin = f"kafka:{topic}"
    candidates: list[LateEvent] = []
    rejected: dict[int, list[QuarantineRow]] = defaultdict(list)
    positions: dict[int, int] = {}
    for message in messages:
        report.read += 1
        if message.partition not in positions:
            positions[message.partition] = store.main_flow_position(
                SourcePartition(origin, message.partition)
            )
        if message.offset > positions[message.partition]:
            msg = (
                f"{topic}[{message.partition}] offset {message.offset} is ahead of the main "
                f"flow (it has committed up to {positions[message.partition]}): replay only "
                "what the main flow has passed, or let it catch up first"
            )
            raise ConfigError(msg)
        decoded = decode(message.value)
        if isinstance(decoded, Heartbeat):
            report.heartbeats += 1
        elif isinstance(decoded, Rejection):
            rejected[message.partition].append(
                QuarantineRow(
                    message.offset,
                    decoded.reason.value,
                    decoded.detail,
                    message.value,
                    message.key,
                    message.timestamp_ms,
                )
            )
        else:
            candidates.append(_late_event(decoded, origin, message, store.window_us))

    for partition, rows in rejected.items():
        known = store.quarantined_offsets(origin, partition, [r.offset for r in rows])
        missing = [r for r in rows if r.offset not in known]
        report.already_quarantined += len(rows) - len(missing)
        report.quarantined += len(missing)
        if missing and not dry_run:
            store.quarantine(SourcePartition(origin, partition), missing, flow=REPLAY_FLOW)

    classified = classify_late_events(candidates, store.ledger_entries({e.key for e in candidates}))
    report.already_counted = len(classified.already_inserted)
    report.duplicates = len(classified.duplicates)
    report.inserted = len(classified.new)
    affected: dict[WindowKey, list[str]] = defaultdict(list)
    for event in classified.new:
        affected[(event.event.tenant_id, event.event.meter, event.window_start_us)].append(
            event.event.id
        )
    if not dry_run:
        store.insert_into_ledger(classified.new, None, counted_by=REPLAY_FLOW)
    report.changes = store.correct_windows(
        {key: [ChangeReason.REPLAY] for key in affected},
        late_ids=affected,
        not_in_ledger_yet=[e.event for e in classified.new] if dry_run else (),
        dry_run=dry_run,
    ).changes
    return report


def _late_event(event: Event, origin: str, message: Message, window_us: int) -> LateEvent:
    return LateEvent(
        event, origin, message.partition, message.offset, window_start(event.time_us, window_us)
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
