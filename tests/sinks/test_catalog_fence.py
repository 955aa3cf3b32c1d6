"""The catalog fence: once a version is published, nothing computed under an older one lands."""

from __future__ import annotations

import pytest

from meterwax.operators.catalog import Aggregation, Catalog, MeterDefinition
from meterwax.operators.decode import Event
from meterwax.operators.partition import MeteringRules
from meterwax.operators.records import LedgerRow, PartitionOutput, SourcePartition, WindowRow
from meterwax.sinks.catalog_table import CatalogChangedError, CatalogStore
from meterwax.sinks.lake import Lake
from meterwax.sinks.metering_sink import MeteringSink
from meterwax.sinks.schemas import EVENTS, USAGE_WINDOWS
from tests.helpers import rows

WHERE = SourcePartition("file:t", 0)
T0 = 1_772_452_800_000_000
CATALOG = Catalog(1, (MeterDefinition("requests", "api_calls", Aggregation.COUNT),))


def output(offset: int, *, with_window: bool) -> PartitionOutput:
    out = PartitionOutput(WHERE, through_offset=offset)
    out.ledger.append(LedgerRow(Event("acme", f"e{offset}", "api_calls", 10**9, T0), offset))
    if with_window:
        out.windows.append(
            WindowRow("acme", "api_calls", T0, T0 + 60_000_000, 10**9, 1, 2 * offset)
        )
    return out


@pytest.mark.parametrize("published_after", ["ledger", "nothing"])
def test_a_writer_on_an_older_version_is_stopped_before_it_writes(tmp_path, published_after):
    lake = Lake(tmp_path / "lake")
    lake.ensure_tables(MeteringRules())
    writer = MeteringSink(lake, [WHERE]).build_part("write", WHERE.key, None)
    store = CatalogStore(lake)
    if published_after == "ledger":
        writer.write_batch([output(0, with_window=False)])
        writer.snapshot()  # counted under version 0 before the new version existed
    store.publish(store.append(CATALOG, source_format="meterwax").version)
    writer.write_batch([output(1, with_window=True)])
    with pytest.raises(CatalogChangedError, match=r"version 1 was applied .* with version 0"):
        writer.snapshot()
    assert [r["id"] for r in rows(lake, EVENTS)] == (["e0"] if published_after == "ledger" else [])
    assert rows(lake, USAGE_WINDOWS) == []


def test_a_writer_on_the_published_version_writes(tmp_path):
    lake = Lake(tmp_path / "lake")
    lake.ensure_tables(MeteringRules())
    store = CatalogStore(lake)
    store.publish(store.append(CATALOG, source_format="meterwax").version)
    sink = MeteringSink(lake, [WHERE], catalog_version=1)
    writer = sink.build_part("write", WHERE.key, None)
    writer.write_batch([output(0, with_window=True)])
    writer.snapshot()
    assert [r["catalog_version"] for r in rows(lake, USAGE_WINDOWS)] == [1]
    assert store.current() == CATALOG
