"""Window totals: how the naive and quix contestants store them, and how all are compared.

The naive and quix contestants write one Delta table of window rows each (``windows`` under
their lake directory) with the same columns as meterwax's ``usage_windows`` key and totals:
``tenant_id``, ``meter``, ``window_start`` (UTC, µs), ``quantity`` (decimal(38, 9), exact)
and ``event_count``. The harness reads every contestant's rows back as exact integers,
``(tenant_id, meter, window_start_us) → (quantity_nanos, count)``, and compares the maps.

This module is imported by the quix contestant in its own virtual environment, so it needs
only pyarrow and deltalake.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Context, Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, write_deltalake

from meterwax.operators.timeline import to_micros

WindowKey = tuple[str, str, int]
"""(tenant_id, meter, window start in µs since the epoch)."""
Totals = dict[WindowKey, tuple[int, int]]
"""Window → (quantity in nano-units, event count)."""

WINDOWS_TABLE = "windows"
SCHEMA = pa.schema(
    [
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("meter", pa.string(), nullable=False),
        pa.field("window_start", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("quantity", pa.decimal128(38, 9), nullable=False),
        pa.field("event_count", pa.int64(), nullable=False),
    ]
)
_EXACT = Context(prec=80)
"""Wide enough for any decimal(38, 9): the default context (28 digits) would round."""


def write_windows(lake: Path, rows: Iterable[tuple[str, str, int, int, int]]) -> int:
    """Append ``(tenant_id, meter, window_start_us, nanos, count)`` rows; returns how many.

    Quantities go in as Decimals built from the integer nano-units, so nothing passes through
    a float.
    """
    tenants, meters, starts, quantities, counts = [], [], [], [], []
    for tenant, meter, start_us, nanos, count in rows:
        tenants.append(tenant)
        meters.append(meter)
        starts.append(start_us)
        quantities.append(_EXACT.scaleb(Decimal(nanos), -9))
        counts.append(count)
    if not tenants:
        return 0
    table = pa.table(
        [
            pa.array(tenants, pa.string()),
            pa.array(meters, pa.string()),
            pa.array(starts, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            pa.array(quantities, pa.decimal128(38, 9)),
            pa.array(counts, pa.int64()),
        ],
        schema=SCHEMA,
    )
    write_deltalake(str(lake / WINDOWS_TABLE), table, mode="append")
    return len(tenants)


def _nanos(quantity: Decimal) -> int:
    return int(_EXACT.scaleb(quantity, 9))


def _micros(moment: datetime) -> int:
    return to_micros(moment)


def _collect(table: pa.Table, into: Totals, *, source: str) -> Totals:
    columns = table.select(["tenant_id", "meter", "window_start", "quantity", "event_count"])
    for tenant, meter, start, quantity, count in zip(
        *(column.to_pylist() for column in columns.columns), strict=True
    ):
        key = (tenant, meter, _micros(start))
        if key in into:
            msg = f"{source}: window {key} appears twice"
            raise ValueError(msg)
        into[key] = (_nanos(quantity), count)
    return into


def read_windows(lake: Path) -> Totals:
    """A naive/quix contestant's window rows."""
    table = DeltaTable(str(lake / WINDOWS_TABLE)).to_pyarrow_table()
    return _collect(table, {}, source=str(lake))


def read_meterwax_windows(lake: Path) -> Totals:
    """meterwax's on-time windows: ``usage_windows`` rows at revision 0 (before corrections).

    Filtered in Python: ``usage_windows`` is written by MERGE, and pyarrow filters on its
    string columns fail on delta-rs 1.6 (see README, the notebook).
    """
    table = DeltaTable(str(lake / "usage_windows")).to_pyarrow_table()
    first = table.filter(pc.equal(table["revision"], 0))
    return _collect(first, {}, source=f"{lake} usage_windows")


@dataclass(frozen=True)
class Comparison:
    """How two contestants' window totals differ (empty lists: identical)."""

    reference: str
    other: str
    only_in_reference: list[WindowKey]
    only_in_other: list[WindowKey]
    different: list[tuple[WindowKey, tuple[int, int], tuple[int, int]]]

    @property
    def identical(self) -> bool:
        """True when both have the same windows with the same totals."""
        return not (self.only_in_reference or self.only_in_other or self.different)

    def describe(self, examples: int = 5) -> str:
        """A diagnosis: how many windows differ, and a few of each kind."""
        if self.identical:
            return f"{self.other} = {self.reference}"
        lines = [
            f"{self.other} ≠ {self.reference}: {len(self.only_in_reference):,} windows only in "
            f"{self.reference}, {len(self.only_in_other):,} only in {self.other}, "
            f"{len(self.different):,} with other totals"
        ]
        for key in sorted(self.only_in_reference)[:examples]:
            lines.append(f"  only in {self.reference}: {_show(key)}")
        for key in sorted(self.only_in_other)[:examples]:
            lines.append(f"  only in {self.other}: {_show(key)}")
        for key, mine, theirs in sorted(self.different)[:examples]:
            lines.append(
                f"  {_show(key)}: {self.reference} (nanos, count) = {mine}, {self.other} = {theirs}"
            )
        return "\n".join(lines)


def _show(key: WindowKey) -> str:
    tenant, meter, start_us = key
    start = datetime.fromtimestamp(start_us // 1_000_000, tz=UTC).isoformat()
    return f"({tenant}, {meter}, {start})"


def compare(reference: str, mine: Totals, other: str, theirs: Totals) -> Comparison:
    """Compare two totals maps exactly."""
    return Comparison(
        reference,
        other,
        only_in_reference=[key for key in mine if key not in theirs],
        only_in_other=[key for key in theirs if key not in mine],
        different=[
            (key, value, theirs[key])
            for key, value in mine.items()
            if key in theirs and theirs[key] != value
        ],
    )
