"""The columnar partition processor: PartitionMeter's decisions, made for a whole batch at once.

:class:`PartitionMeter` decides message by message, because each decision depends on the ones
before it: an event that is counted moves the partition's event time, which moves the
watermark, which decides whether a later event is late, too late, from the future, or a key the
dedupe index has forgotten. :class:`ColumnarPartitionMeter` makes the same decisions with array
operations over the batch, by solving that dependency as a fixed point:

1. Guess which messages move event time (every event and heartbeat) and which are remembered
   by the dedupe index (every event).
2. From the guess, compute for every message at once the partition's max event time before it
   (a running maximum), its clock, watermark, closed-until mark and oldest live dedupe minute,
   and from those its outcome, by the rules in ``partition.py``'s order.
3. The outcomes say which messages really move event time and are remembered. Repeat from 2
   with them until nothing changes.

Message ``i``'s outcome depends only on messages before it, so each round fixes at least one
more message, and a guess that reproduces itself is the sequential answer (at the first message
where it differed, its outcome would have had to change). A batch nearly always settles in two
or three rounds; one that has not settled in :data:`MAX_ROUNDS` is decided message by message.

The outcomes are then applied in offset order: ledger, late and quarantine rows, the keys to
remember, and the window updates, cut at the messages where the watermark passes a window's
end so that windows close at the same positions, with the same contents, as in the reference.
Whatever the columnar path cannot decide alone is handed to the reference loop from that
message on, with the state as of that message: a window whose total would pass decimal(38, 9)
(known only when it is added to), keys restored from an old recovery store, and settings or
clocks so extreme that the arithmetic could leave 64 bits. The result, outputs and state, is the
same as :class:`PartitionMeter`'s for every input; a property test drives both with arbitrary
batches to hold it to that.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

import numpy as np

from meterwax.operators.decode import Event, Heartbeat, Rejection
from meterwax.operators.dedupe import (
    BUCKET_US,
    NOT_FOUND,
    UNKNOWN_CONTENT,
    content_fingerprints,
    key_words,
)
from meterwax.operators.partition import (
    NO_TIME,
    PartitionMeter,
    Prepared,
    add_counts,
    future_detail,
    too_late_detail,
)
from meterwax.operators.reasons import Reason, conflict_detail
from meterwax.operators.records import (
    LateRow,
    LedgerRow,
    PartitionOutput,
    SourceBatch,
    closed_at,
)
from meterwax.operators.windows import CatalogWindows

MAX_ROUNDS = 8
"""Rounds of the fixed point before a batch is decided message by message instead."""

_SAFE = 1 << 60
"""Settings and clocks are kept below this, so every sum and difference fits in 64 bits."""

_REJECTION, _EVENT, _HEARTBEAT = 0, 1, 2
_KIND = {Rejection: _REJECTION, Event: _EVENT, Heartbeat: _HEARTBEAT}

# Outcomes, one small int per message.
_COUNTED, _DUPLICATE, _LATE, _HEARTBEAT_SEEN = 1, 2, 3, 4
_INVALID, _FUTURE, _CONFLICT, _TOO_LATE = 5, 6, 7, 8


@dataclass
class _Batch:
    """The columns a batch's decisions are made from (events' columns in offset order)."""

    kinds: np.ndarray
    times: np.ndarray
    time_list: list[int]
    clocks: np.ndarray | None
    """Microseconds of each message's Kafka timestamp, where it has one (else -1)."""
    events: np.ndarray
    """Indices of the events."""
    buckets: np.ndarray
    contents: np.ndarray
    seen_buckets: np.ndarray
    seen_contents: np.ndarray
    repeats: _Repeats | None


@dataclass
class _Repeats:
    """The events whose key occurs more than once in the batch, grouped by key."""

    order: np.ndarray
    """Message indices, grouped by key and in offset order within a key."""
    group_start: np.ndarray
    """For each position in ``order``, where its key's group starts."""


@dataclass
class _Plan:
    """The settled outcome of every message and the partition's time around it."""

    outcomes: np.ndarray
    max_before: np.ndarray
    """The partition's max event time before each message (``NO_TIME``: none yet)."""
    max_after: int
    clocks: np.ndarray | None
    remembered: np.ndarray


class ColumnarPartitionMeter(PartitionMeter):
    """:class:`PartitionMeter` with the decisions on a batch made column by column."""

    max_rounds = MAX_ROUNDS
    _aligned = False
    """Whether every open window is known to start on a multiple of the window length."""

    def _classify(self, out: PartitionOutput, prepared: Prepared, first: int = 0) -> None:
        columns = self._columns(prepared) if prepared.items and not first else None
        plan = self._plan(columns) if columns is not None else None
        if columns is None or plan is None:
            super()._classify(out, prepared, first)
            return
        self._apply(out, prepared, columns, plan)

    def _columns(self, prepared: Prepared) -> _Batch | None:
        """The batch as columns, or None when it must be decided message by message."""
        batch, decoded, keys = prepared.batch, prepared.items, prepared.keys
        rules = self.rules
        settings = (
            rules.window_us,
            rules.allowed_lateness_us,
            rules.dedupe_horizon_us,
            rules.correction_horizon_us or 0,
            rules.max_future_us or 0,
        )
        if self._dedupe.has_pending or any(abs(value) >= _SAFE for value in settings):
            return None
        if not self._windows_are_open_past(self._closed_until_us) or not self._closed_follows_max():
            return None
        size = len(decoded)
        kinds = np.fromiter(map(_KIND.__getitem__, map(type, decoded)), np.int8, size)
        time_list = [0 if type(item) is Rejection else item.time_us for item in decoded]
        try:
            times = np.array(time_list, np.int64)
            clocks = None
            if batch.timestamps_ms is not None and rules.max_future_us is not None:
                # A message without a timestamp (None) is judged by the watermark, as at 0.
                stamped = batch.timestamps_ms
                if None in stamped:
                    stamped = [0 if stamp is None else stamp for stamp in stamped]
                stamps = np.array(stamped, np.int64)
                if len(stamps) != size or stamps.max(initial=0) >= _SAFE // 1000:
                    return None
                clocks = np.where(stamps > 0, stamps * 1000, -1)
        except (OverflowError, TypeError, ValueError):
            return None
        if size and np.abs(times).max() >= _SAFE:
            return None
        events = np.flatnonzero(kinds == _EVENT)
        event_items = [decoded[i] for i in events.tolist()]
        event_keys = [keys[i] for i in events.tolist()]
        contents = np.zeros(size, np.int64)
        contents[events] = content_fingerprints(event_items)
        return _Batch(
            kinds=kinds,
            times=times,
            time_list=time_list,
            clocks=clocks,
            events=events,
            buckets=times // BUCKET_US,
            contents=contents,
            seen_buckets=prepared.seen_buckets.astype(np.int64),
            seen_contents=prepared.seen_contents.astype(np.int64),
            repeats=_repeats(events, event_keys),
        )

    def _windows_are_open_past(self, closed_until_us: int | None) -> bool:
        """Whether every open window ends after the closed mark, on a multiple of its length.

        Both hold in every state the processors make: windows close as soon as the mark
        passes their end, and start where the window length divides time. A state made by hand,
        or with another window length, may break either; the columns could then not tell where
        windows close, so the loop decides.
        """
        due = self._windows.earliest_end_us
        if due is not None and closed_until_us is not None and due <= closed_until_us:
            return False
        if self._aligned:
            return True
        window_us = self.rules.window_us
        self._aligned = all(start % window_us == 0 for start in self._windows.open_starts())
        return self._aligned

    def _closed_follows_max(self) -> bool:
        """Whether the closed-until mark is at least the watermark, as the reference keeps it.

        The columns compute the mark before each message as ``max(mark, watermark)``, which
        is what the loop's updates amount to only from a state where this holds.
        """
        if self._max_event_us is None:
            return True
        watermark = self._max_event_us - self.rules.allowed_lateness_us
        return self._closed_until_us is not None and self._closed_until_us >= watermark

    def _plan(self, columns: _Batch) -> _Plan | None:
        """Every message's outcome, settled as a fixed point (None: not settled in time)."""
        moves = columns.kinds != _REJECTION
        remembered = columns.kinds == _EVENT
        for _ in range(self.max_rounds):
            plan = self._decide(columns, moves, remembered)
            outcomes = plan.outcomes
            now_moves = (outcomes == _COUNTED) | (outcomes == _HEARTBEAT_SEEN)
            if np.array_equal(now_moves, moves) and np.array_equal(plan.remembered, remembered):
                return plan
            moves, remembered = now_moves, plan.remembered
        return None

    def _decide(self, columns: _Batch, moves: np.ndarray, remembered: np.ndarray) -> _Plan:
        """Every message's outcome, given which messages move event time and are remembered."""
        rules = self.rules
        lateness, window_us = rules.allowed_lateness_us, rules.window_us
        start_max = NO_TIME if self._max_event_us is None else self._max_event_us
        start_closed = NO_TIME if self._closed_until_us is None else self._closed_until_us
        kinds, times = columns.kinds, columns.times
        running = np.maximum.accumulate(
            np.concatenate(([start_max], np.where(moves, times, NO_TIME)))
        )
        max_before = running[:-1]
        has_time = max_before != NO_TIME
        watermark = max_before - lateness
        closed_before = np.maximum(start_closed, watermark)
        oldest_alive = np.maximum(
            (max_before - rules.dedupe_horizon_us) // BUCKET_US, NOT_FOUND + 1
        )

        outcomes = np.full(len(kinds), _INVALID, np.int8)
        valid = kinds != _REJECTION
        clocks = None
        if rules.max_future_us is not None:
            if columns.clocks is None:
                clocks, known = watermark, has_time
            else:
                stamped = columns.clocks > 0
                clocks = np.where(stamped, columns.clocks, watermark)
                known = stamped | has_time
            future = valid & known & (times > clocks + rules.max_future_us)
            outcomes[future] = _FUTURE
            valid &= ~future
        outcomes[valid & (kinds == _HEARTBEAT)] = _HEARTBEAT_SEEN
        events = valid & (kinds == _EVENT)

        # The dedupe index: its columns first, then keys remembered earlier in the batch.
        found = events & (columns.seen_buckets >= oldest_alive)
        found_content = np.where(found, columns.seen_contents, UNKNOWN_CONTENT)
        if columns.repeats is not None:
            earlier, later = _remembered_before(columns.repeats, remembered)
            alive = (columns.buckets[earlier] >= oldest_alive[later]) & ~found[later]
            alive &= events[later]
            found[later[alive]] = True
            found_content[later[alive]] = columns.contents[earlier[alive]]
        same = (found_content == columns.contents) | (found_content == UNKNOWN_CONTENT)
        outcomes[found & same] = _DUPLICATE
        outcomes[found & ~same] = _CONFLICT
        undecided = events & ~found
        if rules.correction_horizon_us is not None:
            too_late = undecided & has_time & (times < watermark - rules.correction_horizon_us)
            outcomes[too_late] = _TOO_LATE
            undecided &= ~too_late
        starts = times - times % window_us
        late = undecided & (starts + window_us <= closed_before)
        outcomes[late] = _LATE
        outcomes[undecided & ~late] = _COUNTED
        now_remembered = ((outcomes == _COUNTED) | (outcomes == _LATE)) & (
            columns.buckets >= oldest_alive
        )
        return _Plan(outcomes, max_before, int(running[-1]), clocks, now_remembered)

    def _apply(
        self, out: PartitionOutput, prepared: Prepared, columns: _Batch, plan: _Plan
    ) -> None:
        """Write the plan's rows and updates in offset order, closing windows where due.

        The batch is cut after every message where a window may close; each part's events
        go into their windows before the windows due there are closed.
        """
        lateness, window_us = self.rules.allowed_lateness_us, self.rules.window_us
        start_closed = NO_TIME if self._closed_until_us is None else self._closed_until_us
        outcomes, max_before = plan.outcomes, plan.max_before
        size = len(outcomes)
        max_after = np.append(max_before[1:], plan.max_after)
        closed_before = np.maximum(start_closed, max_before - lateness)
        closed_after = np.maximum(start_closed, max_after - lateness)
        # A window can only close where the closed-until mark passes a multiple of its length
        # (every window ends on one, and every open window ends after the mark).
        cuts = np.flatnonzero(closed_after // window_us > closed_before // window_us).tolist()
        if not cuts or cuts[-1] != size - 1:
            cuts.append(size - 1)
        batch, decoded = prepared.batch, prepared.items
        rows = _Rows(prepared, columns, plan)
        windows = self._windows
        add = self._catalog_add if isinstance(windows, CatalogWindows) else self._legacy_add
        closed_marks = closed_after.tolist()
        begin = 0
        for cut in cuts:  # only the windows depend on where they close; rows are written after
            end = cut + 1
            stop = add(rows.counted_between(begin, end), decoded, columns)
            if stop is not None:  # that event would overflow its window: the reference decides
                self._write(out, batch, rows, stop)
                self._max_event_us = _or_none(int(max_before[stop]))
                self._closed_until_us = _or_none(int(closed_before[stop]))
                super()._classify(out, prepared, stop)
                return
            due = windows.earliest_end_us
            if due is not None and due <= closed_marks[cut]:
                self._emit_windows(out, closed_marks[cut], closed_at(batch.offsets[cut]))
            begin = end
        self._write(out, batch, rows, size)
        self._max_event_us = _or_none(plan.max_after)
        self._closed_until_us = _or_none(max(start_closed, closed_marks[-1]))

    def _legacy_add(self, counted: list[int], decoded: list, columns: _Batch) -> int | None:
        """Add counted events to their windows; the first one that would overflow, if any."""
        add, window_us, times = self._windows.add, self.rules.window_us, columns.time_list
        for i in counted:
            item, time_us = decoded[i], times[i]
            if not add(
                item.tenant_id, item.meter, time_us - time_us % window_us, item.quantity_nanos
            ):
                return i
        return None

    def _catalog_add(self, counted: list[int], decoded: list, columns: _Batch) -> int | None:
        """:meth:`_legacy_add` for the windows of a meter catalog."""
        add, window_us, times = self._windows.add, self.rules.window_us, columns.time_list
        for i in counted:
            time_us = times[i]
            if not add(decoded[i], time_us - time_us % window_us):
                return i
        return None

    def _write(self, out: PartitionOutput, batch: SourceBatch, rows: _Rows, end: int) -> None:
        """The rows, counts and remembered keys of the messages before ``end``."""
        rules = self.rules
        counted = rows.counted_between(0, end)
        decoded, offsets = rows.decoded, rows.offsets
        out.ledger.extend(LedgerRow(decoded[i], offsets[i]) for i in counted)
        late = rows.between(rows.late, 0, end)
        for i in late:
            item = decoded[i]
            watermark = rows.max_before[i] - rules.allowed_lateness_us
            start = item.time_us - item.time_us % rules.window_us
            out.late.append(LateRow(item, offsets[i], watermark, start))
        for i in rows.between(rows.quarantined, 0, end):
            self._quarantine_planned(out, batch, rows, i)
        remember = rows.between(rows.remembered, 0, end)
        if remember:
            self._dedupe.remember_alive(
                [rows.keys[i] for i in remember],
                [rows.buckets[i] for i in remember],
                [rows.contents[i] for i in remember],
            )
        add_counts(
            out,
            len(counted),
            len(rows.between(rows.duplicates, 0, end)),
            len(late),
            len(rows.between(rows.heartbeats, 0, end)),
        )

    def _quarantine_planned(
        self, out: PartitionOutput, batch: SourceBatch, rows: _Rows, i: int
    ) -> None:
        """Quarantine message ``i`` for the reason its outcome gives, in the reference's words."""
        item, outcome, rules = rows.decoded[i], rows.outcomes[i], self.rules
        if outcome == _INVALID:
            self._quarantine(out, batch, i, item.reason, item.detail)
        elif outcome == _FUTURE:
            assert rows.clocks is not None
            assert rules.max_future_us is not None
            detail = future_detail(item.time_us, rows.clocks[i], rules.max_future_us)
            event = item if type(item) is Event else None
            self._quarantine(out, batch, i, Reason.FUTURE_TIMESTAMP, detail, event)
        elif outcome == _CONFLICT:
            detail = conflict_detail(item)
            self._quarantine(out, batch, i, Reason.CONFLICTING_DUPLICATE, detail, item)
        else:
            assert rules.correction_horizon_us is not None
            watermark = rows.max_before[i] - rules.allowed_lateness_us
            detail = too_late_detail(item.time_us, watermark, rules.correction_horizon_us)
            self._quarantine(out, batch, i, Reason.TOO_LATE, detail, item)


class _Rows:
    """The plan as Python lists: the message indices of each outcome, in offset order."""

    def __init__(self, prepared: Prepared, columns: _Batch, plan: _Plan) -> None:
        outcomes = plan.outcomes
        self.decoded, self.offsets, self.keys = (
            prepared.items,
            prepared.batch.offsets,
            prepared.keys,
        )
        self.outcomes = outcomes.tolist()
        self.max_before = plan.max_before.tolist()
        self.clocks = plan.clocks.tolist() if plan.clocks is not None else None
        self.buckets = columns.buckets.tolist()
        self.contents = columns.contents.tolist()
        self.counted = np.flatnonzero(outcomes == _COUNTED).tolist()
        self.late = np.flatnonzero(outcomes == _LATE).tolist()
        self.duplicates = np.flatnonzero(outcomes == _DUPLICATE).tolist()
        self.heartbeats = np.flatnonzero(outcomes == _HEARTBEAT_SEEN).tolist()
        self.quarantined = np.flatnonzero(outcomes >= _INVALID).tolist()
        self.remembered = np.flatnonzero(plan.remembered).tolist()

    def counted_between(self, begin: int, end: int) -> list[int]:
        return self.between(self.counted, begin, end)

    @staticmethod
    def between(indices: list[int], begin: int, end: int) -> list[int]:
        """The indices in [begin, end) of a sorted list."""
        return indices[bisect_left(indices, begin) : bisect_left(indices, end)]


def _or_none(time_us: int) -> int | None:
    return None if time_us == NO_TIME else time_us


def _repeats(events: np.ndarray, keys: list[bytes]) -> _Repeats | None:
    """The events whose key occurs again in the batch (None when every key is new)."""
    if len(keys) < 2:
        return None
    words = key_words(keys)
    by_key = np.lexsort((words[:, 1], words[:, 0]))
    sorted_words = words[by_key]
    same = np.zeros(len(keys), bool)
    same[1:] = (sorted_words[1:] == sorted_words[:-1]).all(axis=1)
    if not same.any():
        return None
    in_group = same.copy()
    in_group[:-1] |= same[1:]
    order = events[by_key[in_group]]
    same = same[in_group]
    positions = np.arange(len(order))
    group_start = np.maximum.accumulate(np.where(same, 0, positions))
    return _Repeats(order, group_start)


def _remembered_before(repeats: _Repeats, remembered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (earlier, later) of messages with one key, ``earlier`` remembered last before it.

    ``earlier`` is the copy the dedupe index holds when ``later`` is decided.
    """
    order = repeats.order
    positions = np.arange(len(order))
    last = np.maximum.accumulate(np.where(remembered[order], positions, -1))
    previous = np.concatenate(([-1], last[:-1]))
    has = previous >= repeats.group_start
    return order[previous[has]], order[has]
