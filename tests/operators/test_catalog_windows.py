"""The main flow's windows under a catalog: one event feeds every meter that takes it, all or
nothing, and a resume under another catalog version leaves its open slices to corrections."""

from __future__ import annotations

import orjson

from meterwax.operators.catalog import LEGACY, Aggregation, Catalog, MeterDefinition
from meterwax.operators.contract import MAX_QUANTITY_NANOS, NANOS_PER_UNIT
from meterwax.operators.partition import MeteringRules, PartitionMeter
from meterwax.operators.records import SourceBatch, SourcePartition
from meterwax.operators.timeline import MINUTE_US

WHERE = SourcePartition("file:t", 0)
RULES = MeteringRules(max_future_us=None)
T0 = 1_772_452_800_000_000
SUMS = Catalog(
    1,
    (
        MeterDefinition("calls", "api_calls", Aggregation.SUM),
        MeterDefinition("requests", "api_calls", Aggregation.COUNT),
        MeterDefinition("doubled", "api_calls", Aggregation.SUM, "dimensions.n"),
    ),
)


def payload(event_id: str, minute: int, quantity: str, **dimensions: str) -> bytes:
    stamp = f"2026-03-02T12:{minute:02d}:00Z"
    document = {"id": event_id, "tenant_id": "acme", "meter": "api_calls", "timestamp": stamp}
    document["quantity"] = quantity
    if dimensions:
        document["dimensions"] = dimensions
    return orjson.dumps(document)


def batch(start: int, *payloads: bytes) -> SourceBatch:
    return SourceBatch(WHERE, list(range(start, start + len(payloads))), list(payloads))


def test_an_event_one_of_whose_sums_would_overflow_counts_nowhere():
    meter = PartitionMeter(WHERE, RULES, catalog=SUMS)
    huge = str(MAX_QUANTITY_NANOS // NANOS_PER_UNIT)
    out = meter.process(
        batch(0, payload("a", 0, "1", n=huge), payload("b", 0, "1", n="1"), payload("c", 0, "2"))
    )
    assert [r.reason for r in out.quarantine] == ["window_overflow"]
    assert [r.event_id for r in out.quarantine] == ["b"]
    closed = {r.meter: r for r in meter.finish().windows}
    assert closed["requests"].quantity_nanos == 2 * NANOS_PER_UNIT  # b is not counted anywhere
    assert closed["calls"].quantity_nanos == 3 * NANOS_PER_UNIT
    assert closed["doubled"].unvalued_count == 1  # c has no n


def test_a_resume_under_another_catalog_leaves_the_open_slices_to_corrections():
    before = PartitionMeter(WHERE, RULES)  # no catalog
    before.process(batch(0, payload("a", 0, "1"), payload("b", 1, "2")))
    state = before.snapshot()
    assert state.catalog_version == LEGACY.version

    after = PartitionMeter(WHERE, RULES, state, SUMS)
    out = after.process(batch(2, payload("c", 1, "3"), payload("d", 5, "4")))
    # Minute 0 and 1 were open at the switch: their first values cannot be formed on the fly.
    assert [(r.event_meter, r.window_start_us) for r in out.recompute] == [
        ("api_calls", T0),
        ("api_calls", T0 + MINUTE_US),
    ]
    assert out.windows == []
    final = after.finish()
    assert {(w.meter, w.window_start_us) for w in final.windows} == {
        ("calls", T0 + 5 * MINUTE_US),
        ("requests", T0 + 5 * MINUTE_US),
        ("doubled", T0 + 5 * MINUTE_US),
    }
    # The taint survives a snapshot taken before the tainted slices closed.
    again = PartitionMeter(WHERE, RULES, state, SUMS)
    resumed = PartitionMeter(WHERE, RULES, again.snapshot(), SUMS)
    assert len(resumed.finish().recompute) == 2
