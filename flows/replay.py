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
from datetime import datetime

from confluent_kafka import Consumer, TopicPartition

from meterwax.errors import ConfigError
from meterwax.flows.kafka_clients import read_watermarks
from meterwax.operators.corrections import (
    ChangeReason,
    LateEvent,
    WindowChange,
    WindowKey,
    classify_late_events,
    plan_window_changes,
)
from meterwax.operators.decode import Event, Heartbeat, Rejection, decode
from meterwax.operators.records import QuarantineRow, SourcePartition
from meterwax.operators.windows import window_start
from meterwax.sinks.corrections_store import CorrectionStore
from meterwax.sinks.lake import Lake

REPLAY_FLOW = "replay"
_POLL_S = 1.0


@dataclass(frozen=True)
class Message:
    """One Kafka record of the range."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None


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


def parse_offsets(text: str, *, option: str) -> dict[int, int]:
    """``0:1200,1:950`` → {0: 1200, 1: 950}."""
    offsets: dict[int, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        partition, _, offset = part.partition(":")
        if not partition.isdigit() or not offset.isdigit():
            msg = f"{option} expects PARTITION:OFFSET pairs like 0:1200,1:950; got {part!r}"
            raise ConfigError(msg)
        offsets[int(partition)] = int(offset)
    if not offsets:
        msg = f"{option} names no partition"
        raise ConfigError(msg)
    return offsets


def resolve_ranges(
    consumer: Consumer,
    topic: str,
    partitions: list[int],
    *,
    from_offsets: dict[int, int] | None,
    from_time: datetime | None,
    to_offsets: dict[int, int] | None,
    to_time: datetime | None,
) -> dict[int, tuple[int, int]]:
    """Per partition, the [start, end) offsets to replay (end defaults to the log end)."""
    ends = {p: read_watermarks(consumer, topic, p)[1] for p in partitions}
    if from_offsets is not None:
        unknown = sorted(set(from_offsets) - set(partitions))
        if unknown:
            msg = f"--from-offsets names partitions {unknown} that {topic} does not have"
            raise ConfigError(msg)
        starts = dict(from_offsets)
    else:
        starts = _offsets_at(consumer, topic, partitions, from_time, ends)
    if to_offsets is not None:
        stops = {p: min(to_offsets.get(p, ends[p]), ends[p]) for p in starts}
    elif to_time is not None:
        stops = _offsets_at(consumer, topic, list(starts), to_time, ends)
    else:
        stops = {p: ends[p] for p in starts}
    return {p: (starts[p], stops[p]) for p in sorted(starts) if stops[p] > starts[p]}


def _offsets_at(
    consumer: Consumer,
    topic: str,
    partitions: list[int],
    moment: datetime | None,
    ends: dict[int, int],
) -> dict[int, int]:
    if moment is None:
        msg = "give --from-offsets or --from-time"
        raise ConfigError(msg)
    millis = int(moment.timestamp() * 1000)
    found = consumer.offsets_for_times(
        [TopicPartition(topic, p, millis) for p in partitions], timeout=10
    )
    return {tp.partition: tp.offset if tp.offset >= 0 else ends[tp.partition] for tp in found}


def read_range(
    consumer: Consumer, topic: str, ranges: dict[int, tuple[int, int]]
) -> Iterator[Message]:
    """Every record of the ranges, partition by partition, in offset order."""
    for partition, (start, stop) in ranges.items():
        consumer.assign([TopicPartition(topic, partition, start)])
        next_offset = start
        while next_offset < stop:
            records = consumer.consume(num_messages=10_000, timeout=_POLL_S)
            for record in records:
                if record.error() is not None:
                    msg = f"reading {topic}[{partition}]: {record.error()}"
                    raise ConfigError(msg)
                if record.offset() >= stop:
                    next_offset = stop
                    break
                timestamp_type, timestamp = record.timestamp()
                yield Message(
                    partition,
                    record.offset(),
                    record.key(),
                    record.value(),
                    timestamp if timestamp_type != 0 else None,
                )
                next_offset = record.offset() + 1
        consumer.unassign()


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
    recomputed = store.ledger_totals(affected)
    if dry_run:  # the new events are not in the ledger: add them to what it holds
        for event in classified.new:
            key = (event.event.tenant_id, event.event.meter, event.window_start_us)
            quantity, count = recomputed.get(key, (0, 0))
            recomputed[key] = (quantity + event.event.quantity_nanos, count + 1)
    report.changes = plan_window_changes(
        affected,
        recomputed,
        store.current_windows(affected),
        window_us=store.window_us,
        late_ids=affected,
        reasons={k: [ChangeReason.REPLAY] for k in affected},
    )
    if not dry_run:
        store.record_changes(report.changes)
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
