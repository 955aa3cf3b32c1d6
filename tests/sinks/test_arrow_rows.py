"""Arrow column builders: quantities round-trip exactly over the whole decimal(38, 9) range."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from meterwax.operators.contract import MAX_EVENT_US, MAX_QUANTITY_NANOS, MIN_EVENT_US
from meterwax.operators.records import QuarantineRow, SourcePartition, WindowRow
from meterwax.sinks.arrow_rows import (
    date_column,
    decimal_column,
    decimal_to_nanos,
    quarantine_table,
    windows_table,
)
from meterwax.sinks.schemas import USAGE_WINDOWS

nanos = st.integers(-MAX_QUANTITY_NANOS, MAX_QUANTITY_NANOS)


@given(
    st.lists(
        st.one_of(nanos, st.integers(-(2**63), 2**63 - 1), st.sampled_from([2**63, -(2**63) - 1]))
    )
)
def test_decimal_column_round_trips_every_quantity_exactly(values):
    column = decimal_column(values)
    assert decimal_to_nanos(column) == values
    assert column.to_pylist() == [Decimal(f"{v}e-9") for v in values]  # exact, no context


@given(st.lists(st.integers(-(10**17), 10**17)))
def test_date_column_is_the_utc_calendar_day(micros):
    days = date_column(micros).cast("int32").to_pylist()
    assert days == [m // 86_400_000_000 for m in micros]


_texts = st.text(alphabet="abcé-_.0", min_size=1, max_size=6)
_window_rows = st.builds(
    WindowRow,
    tenant_id=_texts,
    meter=_texts,
    window_start_us=st.integers(-(10**15), 10**15),
    window_end_us=st.integers(-(10**15), 10**15),
    quantity_nanos=st.one_of(st.none(), nanos),
    event_count=st.integers(0, 10**6),
    position=st.integers(0, 10**6),
    group_key=st.one_of(
        st.just(""), st.dictionaries(_texts, st.one_of(st.none(), _texts)).map(json.dumps)
    ),
    unvalued_count=st.integers(0, 10),
    aggregation=st.sampled_from(["sum", "count", "latest", "unique_count"]),
    distinct=st.one_of(st.none(), st.lists(_texts, max_size=3).map(tuple)),
    latest=st.one_of(st.none(), st.tuples(st.integers(0, 10**15), _texts)),
)


@given(st.lists(_window_rows, max_size=8))
def test_window_rows_become_the_same_table_as_row_by_row(rows):
    # The columns are built from one transpose, with all-null columns made as such; a plain
    # row-by-row build must give the same table.
    updated = datetime(2026, 3, 2, tzinfo=UTC)
    table = windows_table(rows, revision=3, updated_at=updated, catalog_version=2)
    expected = [
        {
            "tenant_id": r.tenant_id,
            "meter": r.meter,
            "window_start": _instant(r.window_start_us),
            "window_end": _instant(r.window_end_us),
            "window_date": _instant(r.window_start_us).date(),
            "group_key": r.group_key,
            "groups": list(json.loads(r.group_key).items()) if r.group_key else None,
            "quantity": None if r.quantity_nanos is None else Decimal(f"{r.quantity_nanos}e-9"),
            "event_count": r.event_count,
            "revision": 3,
            "updated_at": updated,
            "unvalued_count": r.unvalued_count,
            "distinct_values": None if r.distinct is None else list(r.distinct),
            "latest_time": None if r.latest is None else _instant(r.latest[0]),
            "latest_id": None if r.latest is None else r.latest[1],
            "aggregation": r.aggregation,
            "catalog_version": 2,
        }
        for r in rows
    ]
    assert table.schema == USAGE_WINDOWS.schema
    assert table.to_pylist() == expected


def _instant(micros: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


@given(
    stamps=st.lists(
        st.one_of(
            st.none(),
            st.integers(-(1 << 63), (1 << 63) - 1),
            st.integers(0, MAX_EVENT_US // 1000 + 10),
        ),
        max_size=20,
    )
)
def test_any_kafka_timestamp_a_topic_accepts_becomes_a_quarantine_row(stamps):
    """A producer may set any 64-bit timestamp; the row keeps it when readers can hold it."""
    rows = [
        QuarantineRow(offset=i, reason="malformed_json", detail="x", raw=b"{", kafka_timestamp_ms=s)
        for i, s in enumerate(stamps)
    ]
    table = quarantine_table(SourcePartition("kafka:t", 0), rows, flow="main", line_numbers=False)
    kept = table.column("kafka_timestamp").to_pylist()  # readable back as datetimes
    for stamp, value in zip(stamps, kept, strict=True):
        if stamp is not None and MIN_EVENT_US <= stamp * 1000 < MAX_EVENT_US:
            assert value == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=stamp)
        else:
            assert value is None
