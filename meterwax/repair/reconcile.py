"""``meterwax reconcile``: check guarantees G1 and G2 against the ledger, and repair G2.

- G1: each (tenant_id, id) is in the ledger at most once.
- G2: every ``usage_windows`` row equals the exact sum and count of its ledger events, and
  every ledger event is in a window row.

Windows are recomputed from the ledger (the source of truth) and compared row by row. A fix
goes through the same path as a correction: one audit row per change, then the new row.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from meterwax.operators.corrections import (
    ChangeReason,
    CurrentWindow,
    Totals,
    WindowChange,
    WindowKey,
)
from meterwax.operators.timeline import DAY_US, to_micros
from meterwax.sinks.arrow_rows import decimal_to_nanos, group_by_window, window_keys
from meterwax.sinks.corrections_store import CorrectionStore
from meterwax.sinks.lake import Lake
from meterwax.sinks.queries import instant_literal, sql
from meterwax.sinks.schemas import EVENTS, TIMESTAMP, USAGE_WINDOWS


@dataclass(frozen=True)
class Mismatch:
    """One window where usage_windows and the ledger disagree."""

    key: WindowKey
    kind: str
    """``missing`` (ledger events, no row), ``extra`` (a row, no events) or ``wrong``."""
    window: CurrentWindow | None
    ledger: Totals | None


@dataclass
class ReconcileReport:
    """The outcome of one check."""

    windows_checked: int
    ledger_events: int
    mismatches: list[Mismatch] = field(default_factory=list)
    duplicate_keys: list[tuple[str, str, int]] = field(default_factory=list)
    pending_late_versions: int = 0
    pending_conflict_versions: int = 0
    fixed: list[WindowChange] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when G1 and G2 hold for the range."""
        return not self.mismatches and not self.duplicate_keys


def ledger_window_totals(
    lake: Lake, window_us: int, start: datetime | None, end: datetime | None
) -> tuple[dict[WindowKey, Totals], list[tuple[str, str, int]], int]:
    """Ledger totals per window starting in [start, end), duplicate keys, and events read."""
    dataset = lake.table(EVENTS).to_pyarrow_dataset()
    condition = None
    if start is not None:
        condition = pc.field("event_date") >= pa.scalar(start.date(), pa.date32())
    if end is not None:
        # A window that starts before `end` has events until end + window: dates past end's.
        last_day = (to_micros(end) + window_us - 1) // DAY_US
        before_end = pc.field("event_date") <= pa.scalar(last_day, pa.int32()).cast(pa.date32())
        condition = before_end if condition is None else condition & before_end
    rows = dataset.to_table(
        columns=["tenant_id", "id", "meter", "event_time", "quantity"], filter=condition
    )
    micros = rows.column("event_time").cast(TIMESTAMP).cast(pa.int64()).to_numpy()
    starts = pa.array(micros - micros % window_us, pa.int64())
    keep = None
    if start is not None:
        keep = pc.greater_equal(starts, _micros(start))
    if end is not None:
        before_end = pc.less(starts, _micros(end))
        keep = before_end if keep is None else pc.and_(keep, before_end)
    if keep is not None:
        rows = rows.filter(keep)
    totals = group_by_window(rows, window_us)
    keys = rows.group_by(["tenant_id", "id"]).aggregate([("id", "count")])
    repeated = keys.filter(pc.greater(keys.column("id_count"), 1))
    duplicates = sorted(
        zip(
            repeated.column("tenant_id").to_pylist(),
            repeated.column("id").to_pylist(),
            repeated.column("id_count").to_pylist(),
            strict=True,
        )
    )
    return totals, duplicates, rows.num_rows


def _micros(moment: datetime) -> int:
    return to_micros(moment)


def window_rows(
    lake: Lake, start: datetime | None, end: datetime | None
) -> dict[WindowKey, CurrentWindow]:
    """usage_windows rows starting in [start, end)."""
    conditions = []
    if start is not None:
        conditions.append(f"window_start >= {instant_literal(start)}")
    if end is not None:
        conditions.append(f"window_start < {instant_literal(end)}")
    where = ("WHERE " + " AND ".join(conditions)) if conditions else ""
    table = sql(
        lake,
        f"SELECT tenant_id, meter, window_start, quantity, event_count, revision "
        f"FROM usage_windows {where}",
        [USAGE_WINDOWS],
    )
    return {
        key: CurrentWindow((quantity, count), revision)
        for key, quantity, count, revision in zip(
            window_keys(table),
            decimal_to_nanos(table.column("quantity")),
            table.column("event_count").to_pylist(),
            table.column("revision").to_pylist(),
            strict=True,
        )
    }


def compare(
    windows: dict[WindowKey, CurrentWindow], ledger: dict[WindowKey, Totals]
) -> list[Mismatch]:
    """Every window where the table and the ledger disagree, ordered by key."""
    mismatches = []
    for key in sorted(set(windows) | set(ledger)):
        row, truth = windows.get(key), ledger.get(key)
        if row is None:
            mismatches.append(Mismatch(key, "missing", None, truth))
        elif truth is None:
            if row.totals != (0, 0):
                mismatches.append(Mismatch(key, "extra", row, None))
        elif row.totals != truth:
            mismatches.append(Mismatch(key, "wrong", row, truth))
    return mismatches


def reconcile(
    lake: Lake, start: datetime | None = None, end: datetime | None = None, *, fix: bool = False
) -> ReconcileReport:
    """Check (and with ``fix`` repair) the windows starting in [start, end)."""
    store = CorrectionStore(lake)
    ledger, duplicates, events = ledger_window_totals(lake, store.window_us, start, end)
    windows = window_rows(lake, start, end)
    report = ReconcileReport(len(windows), events, compare(windows, ledger), duplicates)
    progress, versions = store.progress(), store.input_versions()
    report.pending_late_versions = max(0, versions[0] - progress[0])
    report.pending_conflict_versions = max(0, versions[1] - progress[1])
    if fix and report.mismatches:
        correction = store.correct_windows(
            {m.key: [ChangeReason.RECONCILE_FIX] for m in report.mismatches}
        )
        report.fixed = correction.changes
    return report


def mismatch_counts(report: ReconcileReport) -> Counter[str]:
    """How many mismatches of each kind."""
    return Counter(m.kind for m in report.mismatches)
