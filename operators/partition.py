"""The per-source-partition processor: decode, classify, dedupe and window, in offset order.

One :class:`PartitionMeter` owns one ordered input log (a Kafka partition or a file). It reads
each message once, in offset order, and decides from the input alone (never the wall clock)
what becomes of it:

=====================  =================================================================
outcome                rule (checked in this order)
=====================  =================================================================
quarantine             the message does not decode or fails the event contract
heartbeat              a control record: advances the partition's event time, nothing else
future_timestamp       event time > clock + max_future; the clock is the Kafka timestamp
                       of the message when there is one, else the partition watermark
duplicate              its (tenant_id, id) was counted within the dedupe horizon, with the
                       same meter, quantity and time
conflicting_duplicate  … with other content: quarantined (the counted copy stays)
too_late               event time < watermark − correction horizon
late                   its window has already closed → late-event channel (corrections)
window_overflow        counting it would take its window past decimal(38, 9)
counted                otherwise → ledger, and into its open window
=====================  =================================================================

Only a counted or late event's key is remembered: a retry of an event a rule rejected is
judged by the rules again, never taken for a duplicate of something that was not counted.

The watermark is ``max event time seen − allowed lateness`` and a window closes the moment
the watermark reaches its end. At end of input every open window is closed and the partition
is marked closed through the window of its latest event, so anything that arrives later for
those windows is late, never silently merged into a window that was already written.

Because every decision depends only on the messages and their order, the outputs are the same
whatever the batch sizes, epoch boundaries, worker count, crash points or downtime (G5).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import repeat
from typing import NamedTuple

import numpy as np

from meterwax.durations import format_duration_us
from meterwax.operators.catalog import LEGACY, LEGACY_VERSION, Catalog, CatalogSchedule
from meterwax.operators.decode import DEFAULT_MAX_EVENT_BYTES, Event, Heartbeat, Rejection, decode
from meterwax.operators.dedupe import (
    BUCKET_US,
    NOT_FOUND,
    UNKNOWN_CONTENT,
    DedupeIndex,
    DedupeSnapshot,
    alive_from,
    content_fingerprint,
    dedupe_key,
    event_content,
)
from meterwax.operators.fast_validate import fast_event
from meterwax.operators.reasons import Reason, conflict_detail, overflow_detail
from meterwax.operators.records import (
    LateRow,
    LedgerRow,
    PartitionOutput,
    QuarantineRow,
    RecomputeRow,
    SourceBatch,
    SourcePartition,
    WindowRow,
    closed_at,
    flushed_after,
)
from meterwax.operators.timeline import DAY_US, MINUTE_US, SECOND_US
from meterwax.operators.windows import CatalogWindows, OpenWindows, open_slices, window_start

NO_TIME = -(1 << 62)
"""Stands for "no event time seen yet" inside the hot loop and the columns (the state itself
uses None)."""


MAX_WINDOW = "366d"
MAX_WINDOW_US = 366 * DAY_US
"""The longest window a lake may have: a window must end, like every event time, far inside
what readers of the tables can hold."""


class RulesError(ValueError):
    """Rules that cannot work together.

    ``setting`` names the rule to change (a field name without its unit, e.g.
    ``dedupe_horizon``), so a caller can name its own flag for it.
    """

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem


@dataclass(frozen=True, slots=True)
class MeteringRules:
    """What the main flow counts, and when. All durations are microseconds.

    These defaults are the command line's defaults too. Raises :class:`RulesError` for rules
    that cannot work. A lake keeps the window length it was created with (see ``sinks.lake``):
    windows of two lengths cannot be reconciled against one ledger.
    """

    window_us: int = MINUTE_US
    allowed_lateness_us: int = 30 * SECOND_US
    dedupe_horizon_us: int = DAY_US
    correction_horizon_us: int | None = 35 * DAY_US
    """Events further behind the watermark are quarantined as ``too_late``; None: no limit."""
    max_future_us: int | None = 5 * MINUTE_US
    """Events further ahead of the partition clock are quarantined; None: no limit."""
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES

    def __post_init__(self) -> None:
        if self.window_us <= 0:
            raise RulesError("window", "must be longer than 0s")
        if self.window_us > MAX_WINDOW_US:
            problem = (
                f"{format_duration_us(self.window_us)} is longer than {MAX_WINDOW} (windows are "
                "for metering; roll them up into months or years with `meterwax usage`)"
            )
            raise RulesError("window", problem)
        for name in ("allowed_lateness", "dedupe_horizon"):
            if getattr(self, f"{name}_us") < 0:
                raise RulesError(name, "must not be negative")
        if self.max_event_bytes <= 0:
            raise RulesError("max_event_bytes", "must be at least 1")
        if self.dedupe_horizon_us < self.min_dedupe_horizon_us:
            problem = (
                f"{format_duration_us(self.dedupe_horizon_us)} must be at least window + allowed "
                f"lateness ({format_duration_us(self.window_us)} + "
                f"{format_duration_us(self.allowed_lateness_us)}): a retry must be remembered "
                "until its window closes, or it could be counted twice"
            )
            raise RulesError("dedupe_horizon", problem)

    @property
    def min_dedupe_horizon_us(self) -> int:
        """The shortest horizon that can never count a retry twice (window + lateness).

        A key is forgotten only when the max event time is a horizon past it; its window closes
        when the max event time is ``lateness`` past the window's end, at most a window after
        the key. So with ``horizon ≥ window + lateness`` a forgotten key's window is closed, and
        a retry of it is late: the correction flow finds it in the ledger.
        """
        return self.window_us + self.allowed_lateness_us


@dataclass(frozen=True, slots=True)
class PartitionState:
    """Everything a :class:`PartitionMeter` needs to resume exactly where it stopped."""

    where: SourcePartition
    max_event_us: int | None
    closed_until_us: int | None
    next_offset: int
    dedupe: DedupeSnapshot
    windows: dict[int, dict[tuple, list]]
    """Open windows by start: (tenant, meter) → [total, count] without a catalog; under one,
    (tenant, event meter, meter, group key) → accumulator."""
    catalog_version: int = LEGACY_VERSION
    tainted: dict[int, set[tuple[str, str]]] | None = None
    """Under a catalog: slices open when it changed (see ``CatalogWindows``)."""


def _state_catalog_version(state: PartitionState) -> int:
    """The catalog version a state was made under (states of meterwax 0.1 have none)."""
    try:
        return state.catalog_version
    except AttributeError:
        return LEGACY_VERSION


class Prepared(NamedTuple):
    """A batch and what the rules read of each of its messages before deciding it."""

    batch: SourceBatch
    items: list[Event | Heartbeat | Rejection]
    """Each message decoded."""
    keys: list[bytes | None]
    """Each event's idempotency key (None for other messages)."""
    seen_buckets: np.ndarray
    """The minute of the key's newest copy in the dedupe index's columns (NOT_FOUND: none)."""
    seen_contents: np.ndarray
    """That copy's content fingerprint."""


class PartitionMeter:
    """Turns one partition's messages, in offset order, into rows for every table.

    ``catalog`` says what the windows are: without one (:data:`LEGACY`) every event meter is a
    sum of its own; under one, each event feeds the windows of every meter that takes it.
    Resumed under another catalog version than its state was made with, or reaching the
    offset where its ``schedule`` switches versions, the slices open at that moment are
    *tainted*: their values are left to the correction flow (see ``CatalogWindows``), since
    their earlier events were accumulated for other meters. With a schedule, every offset is
    decided under the version the lake recorded for it, however often it is read again.
    """

    def __init__(
        self,
        where: SourcePartition,
        rules: MeteringRules,
        state: PartitionState | None = None,
        catalog: Catalog = LEGACY,
        schedule: CatalogSchedule | None = None,
    ) -> None:
        self.where = where
        self.rules = rules
        self._schedule = schedule or CatalogSchedule.constant(catalog)
        # The version that decided the last offset read: a switch takes effect when a batch
        # reaches it, as in a run that never stopped, not when the processor is built.
        last_read = state.next_offset - 1 if state is not None else 0
        self.catalog = self._schedule.at(max(last_read, 0))
        self._legacy = self.catalog.is_legacy
        if state is None:
            self._max_event_us: int | None = None
            self._closed_until_us: int | None = None
            self._next_offset = 0
            self._dedupe = DedupeIndex()
            self._windows: OpenWindows | CatalogWindows = self._new_windows()
        else:
            self._max_event_us = state.max_event_us
            self._closed_until_us = state.closed_until_us
            self._next_offset = state.next_offset
            self._dedupe = DedupeIndex(state.dedupe)
            self._windows = self._resumed_windows(state)

    def _new_windows(self) -> OpenWindows | CatalogWindows:
        if self._legacy:
            return OpenWindows(self.rules.window_us)
        return CatalogWindows(self.rules.window_us, self.catalog)

    def _resumed_windows(self, state: PartitionState) -> OpenWindows | CatalogWindows:
        version = _state_catalog_version(state)
        if version == self.catalog.version:
            if self._legacy:
                return OpenWindows(self.rules.window_us, state.windows)
            tainted = {k: set(v) for k, v in (state.tainted or {}).items()}
            return CatalogWindows(self.rules.window_us, self.catalog, state.windows, tainted)
        if self._legacy:
            msg = (
                f"{self.where.key}: the recovery state was made under meter catalog version "
                f"{version}, and this run has no catalog; a lake's catalog never goes away"
            )
            raise ValueError(msg)
        windows = CatalogWindows(self.rules.window_us, self.catalog)
        windows.taint_all(open_slices(state.windows))
        windows.taint_all({k: set(v) for k, v in (getattr(state, "tainted", None) or {}).items()})
        return windows

    @property
    def watermark_us(self) -> int | None:
        """Max event time seen minus allowed lateness (None before the first event time)."""
        if self._max_event_us is None:
            return None
        return self._max_event_us - self.rules.allowed_lateness_us

    @property
    def dedupe_keys(self) -> int:
        """How many idempotency keys the dedupe index holds now."""
        return len(self._dedupe)

    @property
    def dedupe_bytes(self) -> int:
        """Approximate bytes held by the dedupe index."""
        return self._dedupe.nbytes

    def process(self, batch: SourceBatch) -> PartitionOutput:
        """Classify every message of ``batch`` (which must continue this partition's log).

        A batch that reaches switches of the catalog schedule is decided in parts, cut at each
        switch, each part under its own version.
        """
        if not batch.offsets:
            return self._process_part(batch)
        parts, rest = [], batch
        switch = self._schedule.next_switch(batch.offsets[0])
        while switch is not None and switch <= batch.offsets[-1]:
            *before, rest = _cut(rest, switch)
            parts += before
            switch = self._schedule.next_switch(switch)
        parts.append(rest)
        outputs = []
        for part in parts:
            wanted = self._schedule.at(part.offsets[0])
            if wanted.version != self.catalog.version:
                self._switch_catalog(wanted)
            outputs.append(self._process_part(part))
        return outputs[0] if len(outputs) == 1 else _merged(outputs)

    def _switch_catalog(self, catalog: Catalog) -> None:
        """Count with ``catalog`` from here on; the windows open now are left to corrections."""
        if catalog.is_legacy:
            msg = f"{self.where.key}: a catalog schedule cannot go back to no catalog"
            raise ValueError(msg)
        old = self._windows
        if isinstance(old, CatalogWindows):
            windows, tainted = old.snapshot()
        else:
            windows, tainted = old.snapshot(), {}
        self.catalog, self._legacy = catalog, False
        switched = CatalogWindows(self.rules.window_us, catalog)
        switched.taint_all(open_slices(windows))
        switched.taint_all(tainted)
        self._windows = switched

    def _process_part(self, batch: SourceBatch) -> PartitionOutput:
        """Classify a batch under one catalog version."""
        if batch.where != self.where:
            msg = f"batch from {batch.where} given to the processor of {self.where}"
            raise ValueError(msg)
        if batch.offsets and batch.offsets[0] < self._next_offset:
            msg = (
                f"{self.where.key}: offset {batch.offsets[0]} was already processed "
                f"(next expected ≥ {self._next_offset}); input must not go backwards"
            )
            raise ValueError(msg)
        out = PartitionOutput(self.where)
        self._classify(out, self._prepare(batch))
        self._close_part(out, batch)
        return out

    def _prepare(self, batch: SourceBatch) -> Prepared:
        """What the rules read of each message: its decoding, key and remembered copy."""
        items = self._decode(batch.payloads)
        keys = [
            dedupe_key(item.tenant_id, item.id) if type(item) is Event else None for item in items
        ]
        seen_buckets, seen_contents = self._seen(keys)
        return Prepared(batch, items, keys, seen_buckets, seen_contents)

    def _decode(self, payloads: list[bytes]) -> list[Event | Heartbeat | Rejection]:
        """Every payload, decoded by the fast path or else by the full contract."""
        limit = self.rules.max_event_bytes
        if self._legacy:
            return [
                (payload and len(payload) <= limit and fast_event(payload))
                or decode(payload, max_bytes=limit, fast=False)
                for payload in payloads
            ]
        # Under a catalog, an event's meters may read fields other than its quantity.
        return [
            (payload and len(payload) <= limit and fast_event(payload, quantity_required=False))
            or decode(payload, max_bytes=limit, fast=False, quantity_required=False)
            for payload in payloads
        ]

    def _classify(self, out: PartitionOutput, prepared: Prepared, first: int = 0) -> None:
        """Decide messages ``first`` onwards of the batch, one by one, into ``out``.

        The partition's event time and closed windows move on as the messages are decided.
        """
        batch, decoded, keys = prepared.batch, prepared.items, prepared.keys
        frozen_buckets = prepared.seen_buckets.tolist()
        frozen_contents = prepared.seen_contents.tolist()
        rules = self.rules
        legacy = self._legacy
        # The loop below is the hot path of the whole flow: state lives in locals, "no time yet"
        # is a sentinel instead of None, and counters are plain ints until the end.
        lateness, window_us = rules.allowed_lateness_us, rules.window_us
        horizon, max_future = rules.dedupe_horizon_us, rules.max_future_us
        correction_horizon = rules.correction_horizon_us
        max_event = NO_TIME if self._max_event_us is None else self._max_event_us
        closed_until = NO_TIME if self._closed_until_us is None else self._closed_until_us
        oldest_alive = max(NOT_FOUND + 1, (max_event - horizon) // BUCKET_US)
        dedupe, windows = self._dedupe, self._windows
        ledger, late = out.ledger, out.late
        counted = duplicates = late_count = heartbeats = 0
        kafka_clock = batch.timestamps_ms or repeat(None)
        offsets = batch.offsets
        if first:
            offsets, decoded = offsets[first:], decoded[first:]
            kafka_clock = batch.timestamps_ms[first:] if batch.timestamps_ms else kafka_clock
        for i, (offset, item, timestamp_ms) in enumerate(
            zip(offsets, decoded, kafka_clock, strict=False), first
        ):
            kind = type(item)
            if kind is Rejection:
                self._quarantine(out, batch, i, item.reason, item.detail)
                continue
            time_us = item.time_us
            if max_future is not None:
                if timestamp_ms is not None and timestamp_ms > 0:
                    clock = timestamp_ms * 1000
                else:
                    clock = max_event - lateness if max_event != NO_TIME else None
                if clock is not None and time_us > clock + max_future:
                    self._quarantine(
                        out,
                        batch,
                        i,
                        Reason.FUTURE_TIMESTAMP,
                        future_detail(time_us, clock, max_future),
                        item if kind is Event else None,
                    )
                    continue
            if kind is Event:
                key = keys[i]
                quantity = item.quantity_nanos
                if quantity is not None:
                    content = content_fingerprint(item.meter, quantity, time_us)
                else:
                    content = event_content(item.meter, quantity, time_us, item.data)
                seen = dedupe.find(key, frozen_buckets[i], frozen_contents[i], oldest_alive)
                if seen is not None:
                    if seen in (content, UNKNOWN_CONTENT):
                        duplicates += 1
                    else:
                        self._quarantine(
                            out, batch, i, Reason.CONFLICTING_DUPLICATE, conflict_detail(item), item
                        )
                    continue
                # Only a copy that is counted (now, or late by the correction flow) is
                # remembered: a retry of a rejected event is judged by the same rules again.
                watermark = max_event - lateness
                if (
                    correction_horizon is not None
                    and max_event != NO_TIME
                    and time_us < watermark - correction_horizon
                ):
                    self._quarantine(
                        out,
                        batch,
                        i,
                        Reason.TOO_LATE,
                        too_late_detail(time_us, watermark, correction_horizon),
                        item,
                    )
                    continue
                start = time_us - time_us % window_us  # windows.window_start, inlined
                if start + window_us <= closed_until:
                    dedupe.remember(key, time_us // BUCKET_US, content, oldest_alive)
                    late_count += 1
                    late.append(LateRow(item, offset, watermark, start))
                    continue
                if not (
                    windows.add(item.tenant_id, item.meter, start, quantity)
                    if legacy
                    else windows.add(item, start)
                ):
                    self._quarantine(
                        out,
                        batch,
                        i,
                        Reason.WINDOW_OVERFLOW,
                        overflow_detail(item),
                        item,
                    )
                    continue
                dedupe.remember(key, time_us // BUCKET_US, content, oldest_alive)
                counted += 1
                ledger.append(LedgerRow(item, offset))
            else:
                heartbeats += 1
            if time_us > max_event:  # event time moves forward: maybe close windows
                max_event = time_us
                oldest_alive = max(NOT_FOUND + 1, (max_event - horizon) // BUCKET_US)
                if time_us - lateness > closed_until:
                    closed_until = time_us - lateness
                    due = windows.earliest_end_us
                    if due is not None and due <= closed_until:
                        self._emit_windows(out, closed_until, closed_at(offset))
        self._max_event_us = None if max_event == NO_TIME else max_event
        self._closed_until_us = None if closed_until == NO_TIME else closed_until
        add_counts(out, counted, duplicates, late_count, heartbeats)

    def _close_part(self, out: PartitionOutput, batch: SourceBatch) -> None:
        """What follows the decisions on a batch: counters, position, the dedupe index's upkeep."""
        if not self._legacy:
            self._count_catalog_outcomes(out)
        out.counters["read"] += len(batch)
        if batch.offsets:
            self._next_offset = batch.offsets[-1] + 1
            out.through_offset = batch.offsets[-1]
        out.content = batch.content
        dedupe = self._dedupe
        dedupe.maintain(alive_from(self._max_event_us, self.rules.dedupe_horizon_us))
        out.watermark_us = self.watermark_us
        out.dedupe_keys, out.dedupe_bytes = len(dedupe), dedupe.nbytes

    def finish(self) -> PartitionOutput:
        """End of input: close every open window and mark the partition closed through them."""
        out = PartitionOutput(self.where, through_offset=self._next_offset - 1)
        out.dedupe_keys, out.dedupe_bytes = len(self._dedupe), self._dedupe.nbytes
        self._emit_windows(out, None, flushed_after(self._next_offset - 1))
        if self._max_event_us is not None:
            end = window_start(self._max_event_us, self.rules.window_us) + self.rules.window_us
            self._closed_until_us = max(self._closed_until_us or end, end)
        out.watermark_us = self.watermark_us
        return out

    def snapshot(self) -> PartitionState:
        """Recovery state: immutable copies, cheap enough to take every epoch."""
        if isinstance(self._windows, CatalogWindows):
            windows, tainted = self._windows.snapshot()
        else:
            windows, tainted = self._windows.snapshot(), None
        return PartitionState(
            where=self.where,
            max_event_us=self._max_event_us,
            closed_until_us=self._closed_until_us,
            next_offset=self._next_offset,
            dedupe=self._dedupe.snapshot(),
            windows=windows,
            catalog_version=self.catalog.version,
            tainted=tainted,
        )

    def _seen(self, keys: list[bytes | None]) -> tuple[np.ndarray, np.ndarray]:
        """The dedupe index's columns' (bucket, fingerprint) of each message's key.

        NOT_FOUND where the message has no key or the key no entry.
        """
        present = [k for k in keys if k is not None]
        buckets, contents = self._dedupe.lookup(present)
        if len(present) == len(keys):
            return buckets, contents
        has_key = np.fromiter((k is not None for k in keys), bool, len(keys))
        all_buckets = np.full(len(keys), NOT_FOUND, dtype=buckets.dtype)
        all_contents = np.full(len(keys), UNKNOWN_CONTENT, dtype=contents.dtype)
        all_buckets[has_key], all_contents[has_key] = buckets, contents
        return all_buckets, all_contents

    def _emit_windows(self, out: PartitionOutput, until_us: int | None, position: int) -> None:
        """Close the windows that end at or before ``until_us`` (None: all) into ``out``."""
        windows = self._windows
        if isinstance(windows, OpenWindows):
            closed = windows.close_all() if until_us is None else windows.close_until(until_us)
            out.counters["windows_closed"] += len(closed)
            # A closed window is (tenant, meter, start, end, total, count): a row's first fields.
            out.windows.extend(WindowRow(*w, position) for w in closed)
            return
        closed_meters, tainted = (
            windows.close_all() if until_us is None else windows.close_until(until_us)
        )
        out.counters["windows_closed"] += len(closed_meters)
        catalog = self.catalog
        for w in closed_meters:
            value = w.value
            meter = catalog.meter(w.meter)
            out.windows.append(
                WindowRow(
                    w.tenant_id,
                    w.meter,
                    w.start_us,
                    w.end_us,
                    value.quantity_nanos,
                    value.event_count,
                    position,
                    w.group_key,
                    value.unvalued_count,
                    w.aggregation.value,
                    value.distinct,
                    value.latest,
                    meter.event_meter if meter is not None else None,
                )
            )
        if tainted:
            out.counters["slices_recomputed"] += len(tainted)
            out.recompute.extend(
                RecomputeRow(t.tenant_id, t.event_meter, t.start_us, t.end_us, position)
                for t in tainted
            )

    def _count_catalog_outcomes(self, out: PartitionOutput) -> None:
        """Move the catalog windows' counts of unmetered events and unvalued contributions."""
        windows = self._windows
        assert isinstance(windows, CatalogWindows)
        if windows.unmetered:
            out.counters["unmetered"] += windows.unmetered
            windows.unmetered = 0
        if windows.unvalued:
            out.counters["unvalued"] += windows.unvalued
            windows.unvalued = 0

    def _quarantine(
        self,
        out: PartitionOutput,
        batch: SourceBatch,
        i: int,
        reason: Reason,
        detail: str,
        event: Event | None = None,
    ) -> None:
        """Quarantine message ``i``; ``event`` when it was a valid event a rule rejected."""
        out.counters["quarantined"] += 1
        out.counters[f"quarantined.{reason.value}"] += 1
        out.quarantine.append(
            QuarantineRow(
                offset=batch.offsets[i],
                reason=reason.value,
                detail=detail,
                raw=batch.payloads[i],
                key=batch.keys[i] if batch.keys is not None else None,
                kafka_timestamp_ms=batch.timestamps_ms[i]
                if batch.timestamps_ms is not None
                else None,
                tenant_id=event.tenant_id if event is not None else None,
                event_id=event.id if event is not None else None,
            )
        )


def add_counts(
    out: PartitionOutput, counted: int, duplicates: int, late: int, heartbeats: int
) -> None:
    """Add a run of decisions' counts to ``out`` (a zero adds no key)."""
    counters = out.counters
    for name, value in (
        ("counted", counted),
        ("duplicates", duplicates),
        ("late", late),
        ("heartbeats", heartbeats),
    ):
        if value:
            counters[name] += value


def future_detail(time_us: int, clock_us: int, max_future_us: int) -> str:
    """What a ``future_timestamp`` quarantine row says."""
    return (
        f"timestamp is {_seconds(time_us - clock_us)} ahead of the partition "
        f"clock (limit {_seconds(max_future_us)})"
    )


def too_late_detail(time_us: int, watermark_us: int, correction_horizon_us: int) -> str:
    """What a ``too_late`` quarantine row says."""
    return (
        f"timestamp is {_seconds(watermark_us - time_us)} behind the watermark "
        f"(correction horizon {_seconds(correction_horizon_us)})"
    )


def _seconds(micros: int) -> str:
    seconds, remainder = divmod(micros, 1_000_000)
    return f"{seconds}.{remainder:06d}s".replace(".000000s", "s")


@dataclass
class RangeOutcome:
    """What the main flow's rules made of each message of an offset range."""

    counted: list[LedgerRow] = field(default_factory=list)
    late: list[LateRow] = field(default_factory=list)
    quarantined: list[QuarantineRow] = field(default_factory=list)
    counters: Counter[str] = field(default_factory=Counter)
    """The processor's counters over the range only (read, duplicates, heartbeats…)."""


def classify_range(
    meter: PartitionMeter, batches: Iterable[SourceBatch], start: int, stop: int
) -> RangeOutcome:
    """Classify the messages at offsets [start, stop) exactly as the main flow did.

    ``batches`` are the partition's messages from where ``meter``'s state begins (the start of
    the log for a fresh one) up to ``stop``: the same processor, fed the same messages in the
    same order, makes the same decisions. Batches are cut at ``start`` (decisions never depend
    on batch boundaries), so the outputs and counters of the range are exactly its own.
    """
    outcome = RangeOutcome()
    for batch in batches:
        for part in _cut(batch, start):
            out = meter.process(part)
            if part.offsets and start <= part.offsets[0]:
                kept = [r for r in out.ledger if r.offset < stop]
                outcome.counted += kept
                outcome.late += [r for r in out.late if r.offset < stop]
                outcome.quarantined += [r for r in out.quarantine if r.offset < stop]
                outcome.counters.update(out.counters)
    return outcome


def _merged(outputs: list[PartitionOutput]) -> PartitionOutput:
    """The outputs of consecutive parts of one batch, as one output."""
    merged = PartitionOutput(outputs[0].where)
    for out in outputs:
        merged.ledger += out.ledger
        merged.windows += out.windows
        merged.late += out.late
        merged.quarantine += out.quarantine
        merged.recompute += out.recompute
        merged.counters.update(out.counters)
    last = outputs[-1]
    merged.through_offset = max(out.through_offset for out in outputs)
    merged.watermark_us = last.watermark_us
    merged.dedupe_keys, merged.dedupe_bytes = last.dedupe_keys, last.dedupe_bytes
    merged.content = last.content
    return merged


def _cut(batch: SourceBatch, at: int) -> list[SourceBatch]:
    """``batch`` as the part before offset ``at`` and the part from it (empty parts left out)."""
    split = sum(offset < at for offset in batch.offsets)
    if split in (0, len(batch)):
        return [batch]

    def part(chosen: slice, content: tuple[int, int] | None) -> SourceBatch:
        return SourceBatch(
            batch.where,
            batch.offsets[chosen],
            batch.payloads[chosen],
            batch.keys[chosen] if batch.keys is not None else None,
            batch.timestamps_ms[chosen] if batch.timestamps_ms is not None else None,
            content,
        )

    # The bytes a file batch covers end with its last part.
    return [part(slice(None, split), None), part(slice(split, None), batch.content)]
