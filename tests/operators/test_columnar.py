"""The columnar processor against the per-event one: identical outputs and state, for any input.

The per-event :class:`PartitionMeter` is the reference. Both are fed the same arbitrary
messages (valid events with repeated and conflicting keys, events from the future, late and
too late, windows that overflow, heartbeats, garbage, Kafka clocks good and bad), cut into the
same arbitrary batches, with the same snapshot-and-restore between some of them, under legacy
sums or a catalog of every aggregation. Every output and every state must be equal.
"""

from __future__ import annotations

import itertools
import pickle
from collections import Counter
from dataclasses import replace

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterwax.operators.catalog import LEGACY, Aggregation, Catalog, MeterDefinition
from meterwax.operators.columnar import ColumnarPartitionMeter
from meterwax.operators.decode import Event, decode
from meterwax.operators.dedupe import (
    BUCKET_US,
    DedupeIndex,
    content_fingerprint,
    dedupe_key,
)
from meterwax.operators.partition import MeteringRules, PartitionMeter, PartitionState
from meterwax.operators.records import PartitionOutput, SourceBatch, SourcePartition

WHERE = SourcePartition("kafka:usage", 3)
SECOND = 1_000_000
MINUTE = 60 * SECOND
T0 = 1_772_452_800  # 2026-03-02T12:00:00Z, in seconds
HUGE = "9" * 29 + ".5"  # two of these overflow any window

RULES = [
    MeteringRules(),
    MeteringRules(
        window_us=MINUTE,
        allowed_lateness_us=20 * SECOND,
        dedupe_horizon_us=10 * MINUTE,
        correction_horizon_us=30 * MINUTE,
        max_future_us=5 * MINUTE,
    ),
    MeteringRules(
        window_us=7 * SECOND,
        allowed_lateness_us=0,
        dedupe_horizon_us=7 * SECOND,
        correction_horizon_us=None,
        max_future_us=None,
    ),
    MeteringRules(
        window_us=13 * SECOND,
        allowed_lateness_us=3 * SECOND,
        dedupe_horizon_us=MINUTE,
        correction_horizon_us=40 * SECOND,
        max_future_us=0,
    ),
    MeteringRules(
        window_us=15 * SECOND,
        allowed_lateness_us=5 * SECOND,
        dedupe_horizon_us=30 * SECOND,
        correction_horizon_us=20 * SECOND,
        max_future_us=10 * SECOND,
    ),
]
EVERY_AGGREGATION = Catalog(
    4,
    (
        MeterDefinition("calls", "api_calls", Aggregation.SUM),
        MeterDefinition("requests", "api_calls", Aggregation.COUNT),
        MeterDefinition("smallest", "api_calls", Aggregation.MIN),
        MeterDefinition("largest", "cpu_seconds", Aggregation.MAX),
        MeterDefinition("last", "cpu_seconds", Aggregation.LATEST),
        MeterDefinition("regions", "api_calls", Aggregation.UNIQUE_COUNT, "dimensions.region"),
        MeterDefinition(
            "by_region",
            "api_calls",
            Aggregation.SUM,
            filter=(("dimensions.tier", ("gold",)),),
            group_by=(("region", "dimensions.region"),),
        ),
    ),
)


def _offset(choice: int, near: int, behind: int, far_behind: int, far_ahead: int) -> int:
    if choice < 60:
        return near
    if choice < 90:
        return behind
    return far_behind if choice < 95 else far_ahead


offsets = st.builds(
    _offset,
    st.integers(0, 99),
    st.integers(-10, 5),
    st.integers(-60, 5),
    st.integers(-3000, 0),
    st.integers(250, 900),
)
"""Seconds from a clock that moves 5 s a message: mostly near it, sometimes far off (rarely
ahead, since one message far ahead makes every later one late)."""

events = st.tuples(
    st.just("event"),
    st.sampled_from(["acme", "acme", "acme", "zeta", "ünï"]),
    st.integers(0, 12),  # ids repeat: retries and conflicting copies
    st.sampled_from(["api_calls", "api_calls", "cpu_seconds", "storage_gb"]),
    offsets,
    st.sampled_from(["1", "0.5", "2.250000001", "0", "18446744073.709551617", HUGE, None]),
    st.sampled_from([None, {"region": "eu"}, {"region": "us", "tier": "gold"}]),
)
retries = st.tuples(st.just("retry"), st.integers(1, 30))  # a copy of an earlier message
message = st.one_of(
    events,
    events,
    retries,
    st.tuples(st.just("heartbeat"), offsets),
    st.tuples(st.just("garbage"), st.sampled_from([b"{", b"[]", b'{"id": 1}', b""])),
)
clocks = st.one_of(
    st.none(),
    st.tuples(
        st.lists(st.one_of(st.integers(-10, 5), st.integers(-60, 600)), min_size=200, max_size=200),
        # Now and then a clock no broker should give (absent, negative, far out of range).
        st.dictionaries(st.integers(0, 199), st.sampled_from([None, 0, -1, 1 << 62, -(1 << 63)])),
    ),
)


def render(messages: list[tuple], grid: int = 1) -> list[bytes]:
    """Payloads of the messages, their times on a grid of ``grid`` seconds.

    A coarse grid puts many times exactly on the edges the rules draw (a window's end, the
    watermark, the correction horizon, the future limit), where an off-by-one would show.
    """
    payloads: list[bytes] = []
    sent: list[bytes] = []  # the events, for retries
    for position, item in enumerate(messages):
        clock = T0 + 5 * position
        if item[0] == "event":
            _, tenant, event_id, meter, delta, quantity, dimensions = item
            document: dict[str, object] = {
                "id": f"id-{event_id}",
                "tenant_id": tenant,
                "meter": meter,
                "timestamp": _iso(clock + delta, grid),
            }
            if quantity is not None:
                document["quantity"] = quantity
            if dimensions is not None:
                document["dimensions"] = dimensions
            payloads.append(orjson.dumps(document))
            sent.append(payloads[-1])
        elif item[0] == "heartbeat":
            control = {"meterwax_control": "heartbeat", "timestamp": _iso(clock + item[1], grid)}
            payloads.append(orjson.dumps(control))
        elif item[0] == "retry":
            payloads.append(sent[-item[1] % len(sent)] if sent else b"")
        else:
            payloads.append(item[1])
    return payloads


def _iso(seconds: int, grid: int = 1) -> str:
    seconds -= seconds % grid
    return np.datetime_as_string(np.datetime64(seconds, "s")) + "Z"


def stamps(chosen: tuple | None, count: int, grid: int) -> list[int | None] | None:
    """Kafka timestamps in milliseconds: near each message's clock, absent, or absurd."""
    if chosen is None:
        return None
    near, absurd = chosen
    return [
        absurd.get(position, (T0 + 5 * position + delta) // grid * grid * 1000)
        for position, delta in enumerate(near[:count])
    ]


def equal_states(one: PartitionState, other: PartitionState) -> bool:
    def plain(state: PartitionState) -> tuple:
        dedupe = state.dedupe
        return (
            state.where,
            state.max_event_us,
            state.closed_until_us,
            state.next_offset,
            state.windows,
            state.catalog_version,
            state.tainted,
            dedupe.pending,
            dedupe.contents,
            dedupe.key_format,
        )

    arrays = ("word0", "word1", "buckets")
    return plain(one) == plain(other) and all(
        np.array_equal(getattr(one.dedupe, a), getattr(other.dedupe, a)) for a in arrays
    )


class Impatient(ColumnarPartitionMeter):
    """Gives up on the fixed point after one round: batches fall back to the loop far more."""

    max_rounds = 1


def run_both(
    payloads: list[bytes],
    timestamps: list[int] | None,
    rules: MeteringRules,
    catalog: Catalog,
    cuts: list[int],
    restores: set[int],
    kind: type[ColumnarPartitionMeter] = ColumnarPartitionMeter,
) -> tuple[list[PartitionOutput], list[PartitionOutput]]:
    reference = PartitionMeter(WHERE, rules, catalog=catalog)
    columnar = kind(WHERE, rules, catalog=catalog)
    expected, actual = [], []
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(payloads)}), len(payloads)]
    for number, (start, end) in enumerate(itertools.pairwise(bounds)):
        batch = SourceBatch(
            WHERE,
            list(range(start, end)),
            payloads[start:end],
            None,
            timestamps[start:end] if timestamps is not None else None,
        )
        expected.append(reference.process(batch))
        actual.append(columnar.process(batch))
        state = reference.snapshot()
        assert equal_states(columnar.snapshot(), state)
        if number in restores:
            restored = pickle.loads(pickle.dumps(state))
            reference = PartitionMeter(WHERE, rules, restored, catalog)
            columnar = kind(WHERE, rules, pickle.loads(pickle.dumps(state)), catalog)
    expected.append(reference.finish())
    actual.append(columnar.finish())
    assert equal_states(columnar.snapshot(), reference.snapshot())
    return expected, actual


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    messages=st.lists(message, min_size=10, max_size=160),
    grid=st.sampled_from([1, 5]),
    chosen_clocks=clocks,
    rules=st.sampled_from(RULES),
    catalog=st.sampled_from([LEGACY, EVERY_AGGREGATION]),
    cuts=st.lists(st.integers(0, 160), max_size=8),
    restores=st.sets(st.integers(0, 8), max_size=4),
    kind=st.sampled_from([ColumnarPartitionMeter, Impatient]),
)
def test_the_columnar_processor_decides_exactly_as_the_per_event_one(
    messages, grid, chosen_clocks, rules, catalog, cuts, restores, kind
):
    payloads = render(messages, grid)
    expected, actual = run_both(
        payloads, stamps(chosen_clocks, len(payloads), grid), rules, catalog, cuts, restores, kind
    )
    assert actual == expected


def test_an_overflow_mid_batch_hands_the_rest_of_it_to_the_loop_with_the_state_so_far():
    """The columnar path learns of an overflow only when it adds: from there the loop decides."""
    first = ("event", "acme", 1, "api_calls", 0, HUGE, None)
    payloads = render(
        [
            first,
            ("event", "zeta", 2, "api_calls", 0, "1", None),
            ("event", "acme", 3, "api_calls", 1, HUGE, None),  # would overflow acme's window
            ("retry", 1),  # its retry: judged again, not a duplicate
            ("retry", 3),  # a duplicate of the first
            ("event", "zeta", 4, "api_calls", 200, "2", None),  # closes both windows
        ]
    )
    for catalog in (LEGACY, EVERY_AGGREGATION):
        expected, actual = run_both(payloads, None, RULES[0], catalog, [], set())
        assert actual == expected
        reasons = [row.reason for out in actual for row in out.quarantine]
        assert reasons == ["window_overflow", "window_overflow"]
        assert actual[0].counters["duplicates"] == 1


def test_a_batch_with_many_retries_of_one_key_settles_and_matches():
    """A long chain of copies: each round of the fixed point settles one more of them."""
    rules = RULES[1]
    payloads = render(
        [("event", "acme", 1, "api_calls", -delta, "1", None) for delta in range(0, 3000, 37)]
    )
    expected, actual = run_both(payloads, None, rules, LEGACY, [], set())
    assert actual == expected
    assert sum(out.counters["quarantined.conflicting_duplicate"] for out in actual) > 0


def test_keys_left_in_an_old_recovery_store_are_found_by_both():
    """A store of meterwax 0.1 leaves keys in the dict: the columnar path defers to the loop."""
    payload = render([("event", "acme", 1, "api_calls", 0, "1", None)])[0]
    seed = decode(payload)
    assert isinstance(seed, Event)
    key = dedupe_key(seed.tenant_id, seed.id)
    content = content_fingerprint(seed.meter, seed.quantity_nanos, seed.time_us)
    empty = DedupeIndex().snapshot()
    old_store = PartitionState(
        where=WHERE,
        max_event_us=seed.time_us,
        closed_until_us=seed.time_us - RULES[0].allowed_lateness_us,
        next_offset=1,
        dedupe=replace(empty, pending={key: seed.time_us // BUCKET_US}, contents={key: content}),
        windows={},
    )
    batch = SourceBatch(WHERE, [1, 2], [payload, payload])
    reference = PartitionMeter(WHERE, RULES[0], old_store).process(batch)
    columnar = ColumnarPartitionMeter(WHERE, RULES[0], old_store).process(batch)
    assert columnar == reference
    assert columnar.counters["duplicates"] == 2


def test_typical_batches_are_decided_without_the_per_event_loop(monkeypatch):
    """Retries, conflicts, late events, heartbeats and garbage do not send a batch to the loop.

    Without this, a columnar path that quietly fell back on every batch would pass every
    equivalence test.
    """
    messages = []
    for position in range(400):
        tenant = ["acme", "zeta"][position % 2]
        if position % 50 == 7:
            messages.append(("garbage", b"{"))
        elif position % 40 == 9:
            messages.append(("heartbeat", -3))
        elif position % 25 == 3:
            messages.append(("retry", 2))
        elif position % 60 == 11:
            messages.append(("event", tenant, position - 1, "api_calls", -200, "1", None))
        else:
            messages.append(("event", tenant, position, "api_calls", -(position % 7), "1.5", None))
    payloads = render(messages)
    expected, _ = run_both(payloads, None, RULES[1], LEGACY, [100, 250], set())
    counters = sum((out.counters for out in expected), Counter())
    assert counters["duplicates"] and counters["late"] and counters["heartbeats"]
    assert counters["quarantined"]

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the batch went to the per-event loop")

    monkeypatch.setattr(PartitionMeter, "_classify", refuse)
    for catalog in (LEGACY, EVERY_AGGREGATION):
        columnar = ColumnarPartitionMeter(WHERE, RULES[1], catalog=catalog)
        for start, end in itertools.pairwise([0, 100, 250, 400]):
            columnar.process(SourceBatch(WHERE, list(range(start, end)), payloads[start:end]))


def test_windows_of_another_length_in_a_restored_state_are_closed_where_the_loop_closes_them():
    """A state whose windows do not start on multiples of the window length (made with another
    length, or by hand): the columns cannot see where they close, so the loop decides."""
    made = MeteringRules(window_us=MINUTE, allowed_lateness_us=0, dedupe_horizon_us=MINUTE)
    resumed = replace(made, window_us=7 * SECOND, dedupe_horizon_us=7 * SECOND)
    first = render([("event", "acme", 1, "api_calls", 1, "1", None)])
    meter = PartitionMeter(WHERE, made)
    meter.process(SourceBatch(WHERE, [0], first))
    state = meter.snapshot()
    assert any(start % resumed.window_us for start in state.windows)
    later = render(
        [
            ("event", "acme", n, "api_calls", delta, "1", None)
            for n, delta in ((2, 2), (3, 2), (4, 9))
        ]
    )
    batch = SourceBatch(WHERE, [1, 2, 3], later)
    reference = PartitionMeter(WHERE, resumed, pickle.loads(pickle.dumps(state)))
    columnar = ColumnarPartitionMeter(WHERE, resumed, pickle.loads(pickle.dumps(state)))
    assert columnar.process(batch) == reference.process(batch)
    assert columnar.finish() == reference.finish()
