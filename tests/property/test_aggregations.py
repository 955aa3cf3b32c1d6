"""Property: every catalog aggregation, in the main flow and recomputed from the ledger, equals
an independent computation over the same events, whatever their order and batching.

The events mix native events and OpenMeter-style CloudEvents, with missing, non-decimal and
exponent values, missing group fields and ties in event time (``latest`` must break them by
id, not by arrival). The reference is ``tests/catalog_reference.py``.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from itertools import pairwise

import orjson
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from meterwax.operators.aggregates import aggregate
from meterwax.operators.catalog import Catalog, parse_catalog
from meterwax.operators.decode import decode
from meterwax.operators.partition import MeteringRules, PartitionMeter
from meterwax.operators.records import SourceBatch, SourcePartition
from meterwax.operators.timeline import HOUR_US, MINUTE_US, from_micros
from tests.catalog_reference import comparable, meter_windows, parse_event

CATALOG_TEXT = """
meters:
  - {name: requests, event_meter: api_calls, aggregation: count}
  - {name: calls, event_meter: api_calls, aggregation: sum}
  - {name: active_users, event_meter: api_calls, aggregation: unique_count,
     value: dimensions.user_id}
  - {name: peak_seats, event_meter: seats, aggregation: max}
  - {name: fewest_seats, event_meter: seats, aggregation: min}
  - {name: seats_now, event_meter: seats, aggregation: latest}
  - name: eu_calls
    event_meter: api_calls
    aggregation: sum
    filter: {region: [eu-west-1, eu-central-1]}
    group_by: [region]
  - slug: tokens
    eventType: prompt
    aggregation: SUM
    valueProperty: $.tokens
    groupBy: {model: $.model}
  - slug: last_tokens
    eventType: prompt
    aggregation: LATEST
    valueProperty: $.tokens
"""
DOCUMENT = yaml.safe_load(CATALOG_TEXT)
CATALOG = Catalog(1, tuple(parse_catalog(DOCUMENT)))
T0 = 1_772_452_800_000_000  # 2026-03-02T12:00:00Z
WHERE = SourcePartition("file:props", 0)
RULES = MeteringRules(
    allowed_lateness_us=HOUR_US, dedupe_horizon_us=2 * HOUR_US, max_future_us=None
)

values = st.one_of(
    st.none(),
    st.integers(0, 10**6).map(str),
    st.decimals(0, 1000, places=3).map(str),
    st.sampled_from(["abc", "-1", "1e2", "0.0000000001", "", "7.000"]),
)


@st.composite
def events(draw: st.DrawFn, number: int) -> bytes:
    time_us = T0 + draw(st.integers(0, 4)) * MINUTE_US + draw(st.sampled_from([0, 1, 30_000_000]))
    stamp = from_micros(time_us).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    tenant = draw(st.sampled_from(["acme", "zeta"]))
    kind = draw(st.sampled_from(["api_calls", "seats", "prompt"]))
    event_id = f"e{number:03d}"
    if kind == "prompt":
        data: dict[str, object] = {}
        for field in ("tokens", "model"):
            value = draw(values if field == "tokens" else st.sampled_from([None, "gpt", "small"]))
            if value is not None:
                data[field] = value
        if draw(st.booleans()) and "tokens" in data and data["tokens"].isdigit():
            data["tokens"] = int(data["tokens"])  # a JSON number, exactly as written
        document = {
            "specversion": "1.0",
            "type": "prompt",
            "id": event_id,
            "time": stamp,
            "source": "app",
            "subject": tenant,
            "data": data,
        }
        return orjson.dumps(document)
    dimensions = {}
    region = draw(st.sampled_from([None, "eu-west-1", "eu-central-1", "us-east-1"]))
    if region:
        dimensions["region"] = region
    user = draw(st.sampled_from([None, "u1", "u2", "u3"]))
    if user:
        dimensions["user_id"] = user
    native: dict[str, object] = {"id": event_id, "tenant_id": tenant, "meter": kind}
    native["timestamp"] = stamp
    quantity = draw(st.one_of(st.none(), st.integers(0, 10**4).map(str), st.just("2.5")))
    if quantity is not None:
        native["quantity"] = quantity
    if dimensions:
        native["dimensions"] = dimensions
    return orjson.dumps(native)


@st.composite
def streams(draw: st.DrawFn) -> list[bytes]:
    size = draw(st.integers(1, 40))
    return [draw(events(number)) for number in range(size)]


def expected(payloads: list[bytes]) -> dict:
    parsed = [parse_event(p) for p in payloads]
    return comparable(meter_windows(parsed, DOCUMENT["meters"], timedelta(minutes=1)))


def processed(payloads: list[bytes], cuts: list[int], *, restore: bool) -> dict:
    meter = PartitionMeter(WHERE, RULES, catalog=CATALOG)
    rows = []
    bounds = [0, *sorted({c % (len(payloads) + 1) for c in cuts}), len(payloads)]
    for start, stop in pairwise(bounds):
        if start == stop:
            continue
        offsets = list(range(start, stop))
        rows += meter.process(SourceBatch(WHERE, offsets, payloads[start:stop])).windows
        if restore:
            meter = PartitionMeter(WHERE, RULES, meter.snapshot(), CATALOG)
    rows += meter.finish().windows
    windows = {
        (r.tenant_id, r.meter, from_micros(r.window_start_us), r.group_key): {
            "quantity": None if r.quantity_nanos is None else Decimal(r.quantity_nanos).scaleb(-9),
            "events": r.event_count,
            "unvalued": r.unvalued_count,
        }
        for r in rows
    }
    assert len(windows) == len(rows)  # each window closes once
    return comparable(windows)


@settings(max_examples=150, deadline=None)
@given(
    payloads=streams(),
    order=st.randoms(use_true_random=False),
    cuts=st.lists(st.integers(0, 50), max_size=4),
    restore=st.booleans(),
)
def test_main_flow_windows_equal_an_independent_computation_in_any_order(
    payloads, order, cuts, restore
):
    shuffled = list(payloads)
    order.shuffle(shuffled)
    assert processed(shuffled, cuts, restore=restore) == expected(payloads)


@settings(max_examples=150, deadline=None)
@given(payloads=streams(), order=st.randoms(use_true_random=False))
def test_recomputing_from_the_ledger_equals_the_independent_computation(payloads, order):
    decoded = [decode(p, quantity_required=False) for p in payloads]
    order.shuffle(decoded)
    found = aggregate(CATALOG, decoded, MINUTE_US)
    windows = {
        (tenant, meter, from_micros(start), group): {
            "quantity": None
            if value.quantity_nanos is None
            else Decimal(value.quantity_nanos).scaleb(-9),
            "events": value.event_count,
            "unvalued": value.unvalued_count,
        }
        for (tenant, meter, start, group), (_, value) in found.items()
    }
    assert comparable(windows) == expected(payloads)
