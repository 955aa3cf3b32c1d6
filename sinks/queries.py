"""Read-side helpers: SQL over the lake's tables with DataFusion (bundled with deltalake).

Results come back as pyarrow tables with plain ``string`` columns (DataFusion returns
``string_view``, which several pyarrow kernels still reject).
"""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
from deltalake import QueryBuilder

from meterwax.operators.timeline import EPOCH, MICROSECOND
from meterwax.sinks.lake import Lake
from meterwax.sinks.schemas import TableSpec


def sql(
    lake: Lake, statement: str, tables: list[TableSpec], *, version: int | str | None = None
) -> pa.Table:
    """Run ``statement`` with each table registered under its own name.

    ``version`` (a table version number or an RFC 3339 time) time-travels every table.
    """
    builder = QueryBuilder()
    for spec in tables:
        builder.register(spec.name, lake.table(spec, version))
    result = pa.table(builder.execute(statement).read_all())
    return plain_strings(result)


def plain_strings(table: pa.Table) -> pa.Table:
    """``table`` with DataFusion's ``string_view`` columns cast to plain ``string``."""
    fields = [
        pa.field(f.name, pa.string(), f.nullable) if f.type == pa.string_view() else f
        for f in table.schema
    ]
    return table.cast(pa.schema(fields))


def literal(text: str) -> str:
    """A SQL string literal for ``text``."""
    return "'" + text.replace("'", "''") + "'"


def instant_literal(value: datetime) -> str:
    """A SQL literal DataFusion compares correctly with UTC microsecond timestamp columns.

    Built from the integer microseconds, so no step passes through nanoseconds (which end in
    2262, while event times go to year 3000) or a year printed without its leading zeros.
    """
    micros = (value - EPOCH) // MICROSECOND
    return f"arrow_cast({micros}, 'Timestamp(Microsecond, Some(\"UTC\"))')"


def window_start_expression(column: str, window_us: int) -> str:
    """SQL for the start of the window that holds ``column`` (a UTC µs timestamp).

    Integer arithmetic on microseconds: DataFusion's ``date_bin`` works in nanoseconds and
    fails past 2262.
    """
    return (
        f"arrow_cast(arrow_cast({column}, 'Int64') / {window_us} * {window_us}, "
        "'Timestamp(Microsecond, Some(\"UTC\"))')"
    )
