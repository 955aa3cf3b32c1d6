"""Read-side helpers: SQL over the lake's tables with DataFusion (bundled with deltalake).

Results come back as pyarrow tables with plain ``string`` columns (DataFusion returns
``string_view``, which several pyarrow kernels still reject).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
from deltalake import QueryBuilder

from meterwax.errors import ConfigError
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


def parse_instant(text: str, *, option: str) -> datetime:
    """An RFC 3339 time or a date (midnight UTC), for ``--from``/``--to`` style options."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        msg = f"{option} {text!r} is not a date or an RFC 3339 time (e.g. 2026-01-31T12:00:00Z)"
        raise ConfigError(msg) from None
    if value.tzinfo is None:
        if len(text.strip()) > 10:
            msg = f"{option} {text!r} has no UTC offset; add Z or +hh:mm"
            raise ConfigError(msg)
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def time_range(
    lower: datetime | None, upper: datetime | None, *, options: tuple[str, str]
) -> tuple[datetime | None, datetime | None]:
    """``(lower, upper)`` checked to be a range: an empty one is a typo, not an empty answer.

    Raises ConfigError naming both options when ``lower`` is not before ``upper``.
    """
    if lower is not None and upper is not None and lower >= upper:
        msg = (
            f"{options[0]} {lower.isoformat()} is not before {options[1]} {upper.isoformat()}: "
            "the range is empty"
        )
        raise ConfigError(msg)
    return lower, upper


def instant_literal(value: datetime) -> str:
    """A SQL literal DataFusion compares correctly with UTC timestamp columns."""
    return literal(value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


def parse_as_of(text: str) -> int | str:
    """A Delta table version (a number) or an RFC 3339 time, for ``--as-of``."""
    stripped = text.strip()
    if stripped.isdigit():
        return int(stripped)
    moment = parse_instant(stripped, option="--as-of")
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
