"""The partition processor against a plain reference model, and its documented invariants."""

from __future__ import annotations

import itertools
import pickle
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import timedelta

import bytewax.operators as op
import orjson
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import given
from hypothesis import strategies as st

from meterwax.flows.steps import meter_partitions
from meterwax.operators.contract import MAX_QUANTITY_NANOS
from meterwax.operators.decode import Event, Heartbeat, Rejection, decode
from meterwax.operators.partition import MeteringRules, PartitionMeter, classify_range
from meterwax.operators.records import PartitionOutput, SourceBatch, SourcePartition
from tests.helpers import T0, event, iso

WHERE = SourcePartition("file:test", 0)
SECOND = 1_000_000
MINUTE = 60 * SECOND
RULES = MeteringRules(
    window_us=MINUTE,
    allowed_lateness_us=20 * SECOND,
    dedupe_horizon_us=10 * MINUTE,
    correction_horizon_us=30 * MINUTE,
    max_future_us=5 * MINUTE,
)
# Sparse streams (minutes between events) would trip the future check of file input, whose
# clock is the watermark; the invariance properties are about lateness and duplicates.
NO_FUTURE_CHECK = replace(RULES, max_future_us=None)


@dataclass
class Outcome:
    """Everything a run produced, in a comparable form."""

    ledger: list[tuple] = field(default_factory=list)
    late: list[tuple] = field(default_factory=list)
    quarantine: list[tuple] = field(default_factory=list)
    windows: list[tuple] = field(default_factory=list)
    counters: Counter = field(default_factory=Counter)


def collect(outputs: list[PartitionOutput]) -> Outcome:
    outcome = Outcome()
    for out in outputs:
        outcome.ledger += [(r.offset, r.event.tenant_id, r.event.id) for r in out.ledger]
        outcome.late += [(r.offset, r.event.id, r.watermark_us) for r in out.late]
        outcome.quarantine += [(r.offset, r.reason) for r in out.quarantine]
        outcome.windows += [
            (w.tenant_id, w.meter, w.window_start_us, w.quantity_nanos, w.event_count, w.position)
            for w in out.windows
        ]
        outcome.counters.update(out.counters)
    return outcome


def reference(payloads: list[bytes], rules: MeteringRules) -> Outcome:
    """A deliberately plain model of the rules in operators/partition.py's docstring."""
    outcome = Outcome()
    max_time = None
    closed = None
    remembered: dict[tuple[str, str], tuple[int, tuple]] = {}
    open_windows: dict[tuple[str, str, int], list[int]] = {}

    def close(position):
        due = [k for k in open_windows if k[2] + rules.window_us <= closed]
        for key in sorted(due, key=lambda k: (k[2], k[0], k[1])):
            quantity, count = open_windows.pop(key)
            outcome.windows.append((key[0], key[1], key[2], quantity, count, position))

    def advance(time_us, offset):
        nonlocal max_time, closed
        if max_time is None or time_us > max_time:
            max_time = time_us
            closed = max(
                closed if closed is not None else time_us - rules.allowed_lateness_us,
                time_us - rules.allowed_lateness_us,
            )
            close(2 * offset)

    for offset, raw in enumerate(payloads):
        outcome.counters["read"] += 1
        item = decode(raw)
        if isinstance(item, Rejection):
            outcome.quarantine.append((offset, item.reason.value))
            continue
        watermark = None if max_time is None else max_time - rules.allowed_lateness_us
        if watermark is not None and item.time_us > watermark + rules.max_future_us:
            outcome.quarantine.append((offset, "future_timestamp"))
            continue
        if isinstance(item, Heartbeat):
            advance(item.time_us, offset)
            continue
        key = (item.tenant_id, item.id)
        content = (item.meter, item.quantity_nanos, item.time_us, item.dimensions)
        cutoff = None if max_time is None else (max_time - rules.dedupe_horizon_us) // MINUTE
        if key in remembered and (cutoff is None or remembered[key][0] >= cutoff):
            if remembered[key][1] == content:
                outcome.counters["duplicates"] += 1
            else:
                outcome.quarantine.append((offset, "conflicting_duplicate"))
            continue
        # Only a copy that is counted, now or late, is remembered.
        if watermark is not None and item.time_us < watermark - rules.correction_horizon_us:
            outcome.quarantine.append((offset, "too_late"))
            continue
        start = item.time_us - item.time_us % rules.window_us
        if closed is not None and start + rules.window_us <= closed:
            remembered[key] = (item.time_us // MINUTE, content)
            outcome.late.append((offset, item.id, watermark))
            continue
        totals = open_windows.setdefault((item.tenant_id, item.meter, start), [0, 0])
        if totals[0] + item.quantity_nanos > MAX_QUANTITY_NANOS:
            outcome.quarantine.append((offset, "window_overflow"))
            continue
        remembered[key] = (item.time_us // MINUTE, content)
        outcome.ledger.append((offset, item.tenant_id, item.id))
        totals[0] += item.quantity_nanos
        totals[1] += 1
        advance(item.time_us, offset)
    closed = float("inf")
    close(2 * (len(payloads) - 1) + 1)
    return outcome


def run_meter(
    payloads: list[bytes], rules: MeteringRules, cuts: list[int], *, restore: bool
) -> Outcome:
    """Feed the processor in batches cut at ``cuts``; optionally pickle-restore between batches."""
    meter = PartitionMeter(WHERE, rules)
    outputs = []
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(payloads)}), len(payloads)]
    for start, end in itertools.pairwise(bounds):
        outputs.append(
            meter.process(SourceBatch(WHERE, list(range(start, end)), payloads[start:end]))
        )
        if restore:
            meter = PartitionMeter(WHERE, rules, pickle.loads(pickle.dumps(meter.snapshot())))
    outputs.append(meter.finish())
    return collect(outputs)


message = st.one_of(
    st.tuples(
        st.just("event"),
        st.sampled_from(["acme", "zeta"]),
        st.integers(0, 25),  # id
        st.sampled_from(["api_calls", "cpu_seconds"]),
        st.integers(-2400, 2400),  # seconds relative to a moving clock
        st.sampled_from(["1", "0.5", "2.250000001", "0", "9" * 29 + ".5"]),
    ),
    st.tuples(st.just("heartbeat"), st.integers(-60, 600)),
    st.tuples(st.just("garbage"), st.sampled_from([b"{", b"[]", b'{"id": 1}'])),
)


def render(messages) -> list[bytes]:
    payloads = []
    clock = 0
    for item in messages:
        clock += 7
        if item[0] == "event":
            _, tenant, event_id, meter, delta, quantity = item
            payloads.append(
                event(
                    f"id-{event_id}",
                    tenant=tenant,
                    meter=meter,
                    quantity=quantity,
                    at=clock + delta,
                )
            )
        elif item[0] == "heartbeat":
            payloads.append(heartbeat(clock + item[1]))
        else:
            payloads.append(item[1])
    return payloads


def heartbeat(seconds: float) -> bytes:
    return orjson.dumps(
        {"meterwax_control": "heartbeat", "timestamp": iso(T0 + timedelta(seconds=seconds))}
    )


# A dedupe horizon longer than the correction horizon: a retry of a too-late event must be too
# late again, not a duplicate of something never counted.
LONG_MEMORY = replace(RULES, dedupe_horizon_us=60 * MINUTE)


@given(
    messages=st.lists(message, max_size=80),
    cuts=st.lists(st.integers(0, 80), max_size=6),
    restore=st.booleans(),
    rules=st.sampled_from([RULES, LONG_MEMORY]),
)
def test_processor_matches_the_reference_for_any_batching(messages, cuts, restore, rules):
    payloads = render(messages)
    expected = reference(payloads, rules)
    actual = run_meter(payloads, rules, cuts, restore=restore)
    assert actual.ledger == expected.ledger
    assert actual.late == expected.late
    assert actual.quarantine == expected.quarantine
    assert actual.windows == expected.windows
    assert actual.counters["duplicates"] == expected.counters["duplicates"]
    accounted = sum(
        actual.counters[k] for k in ("counted", "duplicates", "late", "quarantined", "heartbeats")
    )
    assert accounted == actual.counters["read"] == len(payloads)


def window_totals(outcome: Outcome) -> dict:
    return {(t, m, s): (q, n) for t, m, s, q, n, _ in outcome.windows}


ordered_events = st.lists(
    st.tuples(
        st.sampled_from(["acme", "zeta", "beta"]),
        st.sampled_from(["api_calls", "gb"]),
        st.integers(0, 3600),
        st.integers(0, 10**6),
    ),
    min_size=1,
    max_size=60,
    unique_by=lambda e: e[2],
)


@given(events=ordered_events, jitter=st.lists(st.integers(0, 20), min_size=60, max_size=60))
def test_totals_are_invariant_under_reordering_within_the_allowed_lateness(events, jitter):
    by_time = sorted(events, key=lambda e: e[2])
    payloads = [
        event(f"e{i}", tenant=t, meter=m, quantity=q, at=s)
        for i, (t, m, s, q) in enumerate(by_time)
    ]
    # Arrival order by time + u with 0 ≤ u ≤ lateness: nobody arrives later than the lateness.
    order = sorted(range(len(by_time)), key=lambda i: (by_time[i][2] + jitter[i], i))
    shuffled = [payloads[i] for i in order]
    in_order = run_meter(payloads, NO_FUTURE_CHECK, [], restore=False)
    reordered = run_meter(shuffled, NO_FUTURE_CHECK, [len(shuffled) // 2], restore=False)
    assert reordered.late == []
    assert window_totals(reordered) == window_totals(in_order)
    assert reordered.counters["counted"] == len(events)


@given(
    events=ordered_events,
    repeats=st.lists(st.tuples(st.integers(0, 59), st.integers(1, 30)), max_size=30),
)
def test_totals_are_invariant_under_duplication(events, repeats):
    by_time = sorted(events, key=lambda e: e[2])
    payloads = [
        event(f"e{i}", tenant=t, meter=m, quantity=q, at=s)
        for i, (t, m, s, q) in enumerate(by_time)
    ]
    with_retries = list(payloads)
    for index, delay in repeats:
        if index < len(payloads):
            position = min(len(with_retries), with_retries.index(payloads[index]) + delay)
            with_retries.insert(position, payloads[index])
    clean = run_meter(payloads, NO_FUTURE_CHECK, [], restore=False)
    retried = run_meter(with_retries, NO_FUTURE_CHECK, [7, 19], restore=True)
    assert window_totals(retried) == window_totals(clean)
    assert retried.ledger and [r[1:] for r in retried.ledger] == [r[1:] for r in clean.ledger]
    # A retry is caught by the dedupe index, or (beyond its horizon) arrives after its window
    # closed and goes to the late channel, where the correction flow finds it in the ledger,
    # or (beyond the correction horizon) is quarantined as too_late. It is never counted again.
    late_ids = {r[1] for r in retried.late}
    assert late_ids <= {r[2] for r in clean.ledger}
    assert {reason for _, reason in retried.quarantine} <= {"too_late"}
    caught = retried.counters["duplicates"] + len(retried.late) + len(retried.quarantine)
    assert caught == len(with_retries) - len(payloads)


def test_an_event_is_late_once_its_window_has_closed():
    payloads = [
        event("a", at=10),  # window 12:00
        event("b", at=85),  # watermark 12:01:05 closes window 12:00
        event("c", at=30),  # 12:00:30: its window closed → late
        event("d", at=62),  # 12:01:02 is behind the watermark but its window is open: counted
    ]
    outcome = run_meter(payloads, RULES, [], restore=False)
    assert [r[1] for r in outcome.late] == ["c"]
    assert [r[2] for r in outcome.ledger] == ["a", "b", "d"]
    assert [(w[2] - int(T0.timestamp()) * SECOND, w[4]) for w in outcome.windows] == [
        (0, 1),
        (MINUTE, 2),
    ]


def test_end_of_input_closes_the_partition_through_its_latest_window():
    meter = PartitionMeter(WHERE, RULES)
    meter.process(SourceBatch(WHERE, [0], [event("a", at=10)]))
    flushed = meter.finish()
    assert [w.event_count for w in flushed.windows] == [1]
    later = meter.process(SourceBatch(WHERE, [1], [event("b", at=50)]))
    assert [r.event.id for r in later.late] == ["b"]  # never merged into a window already written


def test_meter_partitions_operator_gives_the_same_outputs_for_any_source_batching():
    payloads = render(
        [("event", "acme", i % 9, "api_calls", (i * 37) % 200 - 100, "1") for i in range(60)]
    )

    def run_with(batch):
        batches = [
            SourceBatch(WHERE, list(range(s, min(s + batch, 60))), payloads[s : s + batch])
            for s in range(0, 60, batch)
        ]
        flow = Dataflow("meter_test")
        keyed = op.key_on(
            "key", op.input("in", flow, TestingSource(batches)), lambda b: b.where.key
        )
        out = []
        op.output("out", meter_partitions("meter", keyed, RULES), TestingSink(out))
        run_main(flow)
        return collect([o for _, o in out])

    one, seven = run_with(1), run_with(7)
    assert one.windows == seven.windows and one.ledger == seven.ledger and one.late == seven.late
    assert one.counters == seven.counters
    assert one.counters["read"] == 60


def test_future_events_are_judged_against_the_kafka_timestamp_when_there_is_one():
    meter = PartitionMeter(WHERE, RULES)
    batch = SourceBatch(
        WHERE,
        [0, 1],
        [event("a", at=0), event("b", at=400)],
        timestamps_ms=[int(T0.timestamp() * 1000), int(T0.timestamp() * 1000)],
    )
    out = meter.process(batch)
    assert [r.reason for r in out.quarantine] == ["future_timestamp"]
    assert "ahead of the partition clock" in out.quarantine[0].detail
    assert isinstance(decode(event("a")), Event)


dense_events = st.lists(
    st.tuples(
        st.sampled_from(["acme", "zeta"]),
        st.just("api_calls"),
        st.integers(0, 300),
        st.integers(0, 9),
    ),
    min_size=1,
    max_size=60,
    unique_by=lambda e: e[2],
)


@given(
    events=dense_events,
    retries=st.lists(st.tuples(st.integers(0, 59), st.integers(1, 40)), max_size=40),
    jitter=st.lists(st.integers(0, 20), min_size=60, max_size=60),
)
def test_the_shortest_allowed_horizon_never_counts_a_retry_twice(events, retries, jitter):
    # G1 in the main flow: horizon = window + lateness is enough, whatever the arrival order
    # (within the lateness) and however late the retries come.
    rules = replace(NO_FUTURE_CHECK, dedupe_horizon_us=MINUTE + 20 * SECOND)
    by_time = sorted(events, key=lambda e: e[2])
    payloads = [
        event(f"e{i}", tenant=t, meter=m, quantity=q, at=s)
        for i, (t, m, s, q) in enumerate(by_time)
    ]
    order = sorted(range(len(by_time)), key=lambda i: (by_time[i][2] + jitter[i], i))
    stream = [payloads[i] for i in order]
    for index, delay in retries:
        if index < len(payloads):
            stream.insert(min(len(stream), stream.index(payloads[index]) + delay), payloads[index])
    outcome = run_meter(stream, rules, [3, 17, 40], restore=True)
    counted = [(tenant, event_id) for _, tenant, event_id in outcome.ledger]
    assert len(counted) == len(set(counted))


def test_a_horizon_shorter_than_window_plus_lateness_is_refused():
    import pytest

    with pytest.raises(ValueError, match="at least window \\+ allowed lateness"):
        replace(RULES, dedupe_horizon_us=MINUTE)


def test_a_retry_of_a_too_late_event_is_too_late_again_even_with_a_long_dedupe_horizon():
    meter = PartitionMeter(WHERE, LONG_MEMORY)
    old = event("old", at=-45 * 60)  # 45 minutes behind: past the 30-minute correction horizon
    out = meter.process(SourceBatch(WHERE, [0, 1, 2], [event("now", at=0), old, old]))
    assert [(r.offset, r.reason) for r in out.quarantine] == [(1, "too_late"), (2, "too_late")]
    assert out.counters["duplicates"] == 0


def test_a_copy_with_another_quantity_is_a_conflicting_duplicate_with_both_sides_findable():
    meter = PartitionMeter(WHERE, RULES)
    payloads = [
        event("e1", quantity="2"),
        event("e1", quantity="2"),  # a retry: a plain duplicate
        event("e1", quantity="3"),  # the same id with other content: a producer bug
        event("e1", quantity="2", at=5),  # other time
        event("e1", quantity="2", meter="cpu_seconds"),  # other meter
    ]
    out = meter.process(SourceBatch(WHERE, list(range(5)), payloads))
    assert [r.offset for r in out.ledger] == [0]
    assert out.counters["duplicates"] == 1
    conflicts = [r for r in out.quarantine if r.reason == "conflicting_duplicate"]
    assert [r.offset for r in conflicts] == [2, 3, 4]
    assert all((r.tenant_id, r.event_id) == ("acme", "e1") for r in conflicts)
    assert (
        "quantity 3" in conflicts[0].detail and "counted copy is in events" in conflicts[0].detail
    )


def test_the_event_that_would_overflow_its_window_is_quarantined_and_judged_again_on_retry():
    meter = PartitionMeter(WHERE, RULES)
    big = "9" * 29
    payloads = [
        event("a", quantity=big),
        event("b", quantity="1"),  # would make the window 10^29: one too many
        event("c", quantity="0.5", meter="cpu_seconds"),  # another window: fine
        event("b", quantity="1"),  # its retry is judged by the same rule, not as a duplicate
    ]
    out = meter.process(SourceBatch(WHERE, [0, 1, 2, 3], payloads))
    flushed = meter.finish()
    assert [(r.offset, r.reason) for r in out.quarantine] == [
        (1, "window_overflow"),
        (3, "window_overflow"),
    ]
    assert sorted((w.meter, w.quantity_nanos, w.event_count) for w in flushed.windows) == [
        ("api_calls", MAX_QUANTITY_NANOS - 999_999_999, 1),
        ("cpu_seconds", 500_000_000, 1),
    ]


@given(
    messages=st.lists(message, min_size=1, max_size=80),
    cuts=st.lists(st.integers(0, 80), max_size=6),
    bounds=st.tuples(st.integers(0, 80), st.integers(0, 80)),
    rules=st.sampled_from([RULES, LONG_MEMORY]),
)
def test_a_replayed_range_is_classified_exactly_as_the_main_flow_did(messages, cuts, bounds, rules):
    payloads = render(messages)
    start, stop = sorted(min(b, len(payloads)) for b in bounds)
    # The main flow: everything, in whatever batches.
    main = run_meter(payloads, rules, cuts, restore=False)
    # Replay: a fresh processor fed the log from its start up to the range's end, in other
    # batches, keeping the decisions for [start, stop).
    batches = [
        SourceBatch(WHERE, list(range(s, min(s + 7, stop))), payloads[s : min(s + 7, stop)])
        for s in range(0, stop, 7)
    ]
    replayed = classify_range(PartitionMeter(WHERE, rules), batches, start, stop)

    def within(rows):
        return [r for r in rows if start <= r[0] < stop]

    assert [(r.offset, r.event.tenant_id, r.event.id) for r in replayed.counted] == within(
        main.ledger
    )
    assert [(r.offset, r.event.id, r.watermark_us) for r in replayed.late] == within(main.late)
    assert [(r.offset, r.reason) for r in replayed.quarantined] == within(main.quarantine)
    assert replayed.counters["read"] == stop - start
