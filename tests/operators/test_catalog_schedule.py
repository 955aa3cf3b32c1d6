"""Catalog schedules: every offset is decided under its version, whatever the batches (G5).

A schedule says which catalog version decides which offsets of a partition. Batches may cross
any number of its switches, and a processor may be restored right at one; the tables must be
the same as when every message is its own batch and nothing ever stops.
"""

from __future__ import annotations

import itertools
import pickle

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from meterwax.operators.catalog import (
    LEGACY,
    Aggregation,
    Catalog,
    CatalogSchedule,
    MeterDefinition,
)
from meterwax.operators.columnar import ColumnarPartitionMeter
from meterwax.operators.partition import MeteringRules, PartitionMeter
from meterwax.operators.records import PartitionOutput, SourceBatch, SourcePartition

WHERE = SourcePartition("kafka:usage", 0)
RULES = MeteringRules(max_future_us=None)
A = Catalog(1, (MeterDefinition("a_sum", "api_calls", Aggregation.SUM),))
B = Catalog(2, (MeterDefinition("b_count", "api_calls", Aggregation.COUNT),))
C = Catalog(3, (MeterDefinition("c_max", "api_calls", Aggregation.MAX),))
SCHEDULES = [
    CatalogSchedule(((0, A), (1, B), (2, C))),
    CatalogSchedule(((0, LEGACY), (3, A), (4, C))),
    CatalogSchedule(((0, A), (5, B), (6, C))),
]
PAYLOADS = [
    orjson.dumps(
        {
            "id": f"e{i}",
            "tenant_id": "acme",
            "meter": "api_calls",
            "timestamp": f"2026-03-02T12:{i // 2:02d}:{i % 2 * 30:02d}Z",
            "quantity": str(i + 1),
        }
    )
    for i in range(10)
]


def tables(
    kind: type[PartitionMeter],
    schedule: CatalogSchedule,
    cuts: list[int],
    restores: set[int],
) -> list[tuple]:
    """Every row the processor writes for the batches cut at ``cuts`` (sorted: batches group
    rows by table, so only the order within a table is the log's)."""
    meter = kind(WHERE, RULES, schedule=schedule)
    outputs: list[PartitionOutput] = []
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(PAYLOADS)}), len(PAYLOADS)]
    for number, (start, end) in enumerate(itertools.pairwise(bounds)):
        batch = SourceBatch(WHERE, list(range(start, end)), PAYLOADS[start:end])
        outputs.append(meter.process(batch))
        if number in restores:
            state = pickle.loads(pickle.dumps(meter.snapshot()))
            meter = kind(WHERE, RULES, state, schedule=schedule)
    outputs.append(meter.finish())
    rows: list[tuple] = []
    for out in outputs:
        rows += [("ledger", r.offset) for r in out.ledger]
        rows += [
            ("window", w.meter, w.window_start_us, w.quantity_nanos, w.position)
            for w in out.windows
        ]
        rows += [("recompute", r.window_start_us, r.position) for r in out.recompute]
    return sorted(rows)


@settings(max_examples=150, deadline=None)
@given(
    schedule=st.sampled_from(SCHEDULES),
    cuts=st.lists(st.integers(0, 10), max_size=6),
    restores=st.sets(st.integers(0, 7), max_size=3),
    kind=st.sampled_from([PartitionMeter, ColumnarPartitionMeter]),
)
def test_any_batching_and_restores_decide_each_offset_under_its_version(
    schedule, cuts, restores, kind
):
    expected = tables(PartitionMeter, schedule, list(range(10)), set())
    assert tables(kind, schedule, cuts, restores) == expected


def test_a_batch_across_two_switches_is_cut_at_both():
    schedule = SCHEDULES[0]
    whole = tables(PartitionMeter, schedule, [], set())
    assert whole == tables(PartitionMeter, schedule, list(range(10)), set())
    assert {row[1] for row in whole if row[0] == "window"} == {"c_max"}


def test_a_restore_at_a_switch_then_end_of_input_writes_what_a_run_without_it_writes():
    schedule = CatalogSchedule(((0, LEGACY), (2, A)))
    for kind in (PartitionMeter, ColumnarPartitionMeter):
        meter = kind(WHERE, RULES, schedule=schedule)
        meter.process(SourceBatch(WHERE, [0, 1], PAYLOADS[:2]))
        state = pickle.loads(pickle.dumps(meter.snapshot()))
        straight = meter.finish()
        resumed = kind(WHERE, RULES, state, schedule=schedule).finish()
        assert resumed == straight
        assert straight.windows
