"""Arrow column builders: quantities round-trip exactly over the whole decimal(38, 9) range."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from meterwax.operators.contract import MAX_QUANTITY_NANOS
from meterwax.sinks.arrow_rows import date_column, decimal_column, decimal_to_nanos

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
