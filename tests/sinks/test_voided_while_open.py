"""A void of a window still open: the main flow's first total must not bring its events back.

The main flow forms a window's first total from what it counted and does not read voids; a
void recorded while the window is open finds no row to correct. The sink therefore flags every
window it inserts whose slice holds voided ledger rows, and the correction flow recomputes it.
"""

from __future__ import annotations

from meterwax.flows.corrections import run_corrections
from meterwax.operators.decode import Event
from meterwax.operators.partition import MeteringRules
from meterwax.operators.records import LedgerRow, PartitionOutput, SourcePartition, WindowRow
from meterwax.operators.voids import VoidRule
from meterwax.repair.reconcile import reconcile
from meterwax.sinks.corrections_store import CorrectionStore
from meterwax.sinks.lake import Lake
from meterwax.sinks.metering_sink import MeteringSink
from meterwax.sinks.schemas import USAGE_CORRECTIONS, USAGE_WINDOWS, WINDOW_CONFLICTS
from tests.helpers import rows

WHERE = SourcePartition("file:t", 0)
T0 = 1_772_452_800_000_000
MINUTE = 60_000_000
NANOS = 10**9


def counted(offset: int, tenant: str, quantity: int) -> PartitionOutput:
    out = PartitionOutput(WHERE, through_offset=offset)
    event = Event(tenant, f"{tenant}-{offset}", "api_calls", quantity * NANOS, T0 + offset)
    out.ledger.append(LedgerRow(event, offset))
    return out


def closed(offset: int, tenant: str, quantity: int, events: int) -> PartitionOutput:
    out = PartitionOutput(WHERE, through_offset=offset)
    out.windows.append(
        WindowRow(tenant, "api_calls", T0, T0 + MINUTE, quantity * NANOS, events, 2 * offset)
    )
    return out


def test_a_window_voided_while_open_is_recomputed_once_the_main_flow_writes_it(tmp_path):
    lake = Lake(tmp_path / "lake")
    lake.ensure_tables(MeteringRules())
    writer = MeteringSink(lake, [WHERE]).build_part("write", WHERE.key, None)
    writer.write_batch([counted(0, "acme", 5), counted(1, "acme", 7), counted(2, "beta", 3)])
    writer.snapshot()  # the ledger has the rows; every window is still open

    store = CorrectionStore(lake)
    recorded, _ = store.voids.record(
        VoidRule("acme", from_us=T0 - MINUTE, to_us=T0 + 2 * MINUTE), "load test"
    )
    outcome = store.apply_void(recorded)
    assert len(outcome.voided) == 2
    assert outcome.correction.changes == []  # no row to correct yet

    # The watermark passes: the main flow closes both windows with what it counted.
    writer.write_batch([closed(3, "acme", 12, 2), closed(3, "beta", 3, 1)])
    writer.snapshot()
    flagged = rows(lake, WINDOW_CONFLICTS)
    assert [(r["tenant_id"], r["reason"]) for r in flagged] == [("acme", "voided_while_open")]

    run_corrections(lake, once=True)
    windows = {r["tenant_id"]: (r["quantity"], r["event_count"]) for r in rows(lake, USAGE_WINDOWS)}
    assert windows["acme"][1] == 0 and not windows["acme"][0]
    assert windows["beta"][1] == 1
    audit = rows(lake, USAGE_CORRECTIONS)
    assert [(r["tenant_id"], r["reason"], r["new_event_count"]) for r in audit] == [
        ("acme", "void", 0)
    ]
    report = reconcile(lake)
    assert report.ok and report.windows_checked == 2, report
