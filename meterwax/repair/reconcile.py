"""``meterwax reconcile``: check guarantees G1 and G2 against the ledger, and repair them.

The independent witness. It reads the ledger and the windows itself (never through the
flows' own paths) and checks:

- G1: each (tenant_id, id) counts once: a key with two counting copies (a retry that came
  back with a new time after the dedupe horizon) is reported; ``--fix`` voids the later copies
  (by source coordinates) and recomputes their windows, with audit rows (``duplicate_key``);
- G2: every ``usage_windows`` row equals the value its counting ledger events give under the
  current meter catalog (voided copies left out), and every such value is in a window row; a
  ``sum`` window whose ledger total does not fit decimal(38, 9) is reported as ``overflow``
  (``--fix`` voids the copies it cannot take, in source order);
- every ledger row sits in the date partition of its event time.

A fix goes through the correction sequence: one audit row per change, then the new row. It
also says whether corrections are pending: late events or window conflicts the correction
flow has not applied yet (the windows then differ from the ledger until it runs).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from meterwax.operators.aggregates import SUM, SliceKey, WindowKey, WindowValue
from meterwax.operators.catalog import Catalog
from meterwax.operators.contract import MAX_QUANTITY_NANOS
from meterwax.operators.corrections import (
    ChangeReason,
    CurrentWindow,
    WindowChange,
    slice_of,
)
from meterwax.operators.timeline import DAY_US, to_micros
from meterwax.operators.windows import window_start
from meterwax.sinks.arrow_rows import window_keys, window_values
from meterwax.sinks.corrections_store import CorrectionStore
from meterwax.sinks.lake import Lake
from meterwax.sinks.ledger import (
    COORDINATES,
    EVENT_COLUMNS,
    LedgerCopy,
    coordinates_of,
    events_of,
    rows_matching,
    slice_values,
    voided_coordinates,
)
from meterwax.sinks.queries import instant_literal, sql
from meterwax.sinks.schemas import EVENTS, TIMESTAMP, USAGE_WINDOWS, VOIDED_EVENTS
from meterwax.sinks.voids_table import VoidStore
from meterwax.sinks.windows_table import WINDOW_COLUMNS

VOID_DUPLICATE = "duplicate_key"
"""The void id of the later copies of a key counted twice."""


@dataclass(frozen=True)
class Mismatch:
    """One window where usage_windows and the ledger disagree."""

    key: WindowKey
    kind: str
    """``missing`` (ledger events, no row), ``extra`` (a row, no events), ``wrong``, or
    ``overflow`` (its ledger events add up past decimal(38, 9))."""
    window: CurrentWindow | None
    ledger: WindowValue | None


@dataclass
class LedgerCheck:
    """What reading the ledger found, for a range of windows."""

    values: dict[WindowKey, WindowValue]
    """Per meter window, the value its counting events give under the current catalog."""
    duplicates: dict[tuple[str, str], list[LedgerCopy]]
    """Keys with more than one counting copy, their copies in coordinate order."""
    events: int
    """Counting ledger rows read."""
    misfiled: int
    """Rows whose ``event_date`` is not the UTC date of their ``event_time``."""


@dataclass
class ReconcileReport:
    """The outcome of one check."""

    windows_checked: int
    ledger_events: int
    mismatches: list[Mismatch] = field(default_factory=list)
    duplicate_keys: list[tuple[str, str, int]] = field(default_factory=list)
    misfiled_events: int = 0
    pending_late_events: int = 0
    pending_conflicts: int = 0
    fixed: list[WindowChange] = field(default_factory=list)
    voided: int = 0
    pending_voids: int = 0
    """Ledger rows a void in force selects that are not voided yet (they still count)."""

    @property
    def ok(self) -> bool:
        """True when G1 and G2 hold for the range and every row is in its date partition.

        And no void in force waits to take back rows: until the correction flow lists them,
        the windows agree with a ledger that still counts them.
        """
        return (
            not self.mismatches
            and not self.duplicate_keys
            and not self.misfiled_events
            and not self.pending_voids
        )


def read_ledger(
    lake: Lake, catalog: Catalog, window_us: int, start: datetime | None, end: datetime | None
) -> LedgerCheck:
    """Ledger values per window starting in [start, end), duplicate keys, misfiled rows."""
    condition = None
    if start is not None:
        condition = pc.field("event_date") >= pa.scalar(start.date(), pa.date32())
    if end is not None:
        # A window that starts before `end` has events until end + window: dates past end's.
        last_day = (to_micros(end) + window_us - 1) // DAY_US
        before_end = pc.field("event_date") <= pa.scalar(last_day, pa.int32()).cast(pa.date32())
        condition = before_end if condition is None else condition & before_end
    ledger = lake.table(EVENTS)
    present = set(ledger.schema().to_arrow().names)
    wanted = EVENT_COLUMNS if not catalog.is_legacy else ["tenant_id", "id", "meter", "quantity"]
    wanted = [*wanted, "event_time", "event_date", *COORDINATES]
    columns = [c for c in dict.fromkeys(wanted) if c in present]
    rows = ledger.to_pyarrow_dataset().to_table(columns=columns, filter=condition)
    micros = rows.column("event_time").cast(TIMESTAMP).cast(pa.int64()).to_numpy()
    keep = None
    if start is not None:
        keep = pc.greater_equal(pa.array(window_start(micros, window_us)), to_micros(start))
    if end is not None:
        before_end = pc.less(pa.array(window_start(micros, window_us)), to_micros(end))
        keep = before_end if keep is None else pc.and_(keep, before_end)
    if keep is not None:
        rows = rows.filter(keep)
    voided = voided_coordinates(lake.table(VOIDED_EVENTS), VoidStore(lake))
    rows = rows_matching(rows, voided, COORDINATES, matching=False)
    micros = rows.column("event_time").cast(TIMESTAMP).cast(pa.int64()).to_numpy()
    days = rows.column("event_date").cast(pa.int32()).to_numpy(zero_copy_only=False)
    misfiled = int((micros // DAY_US != days).sum())
    return LedgerCheck(
        slice_values(catalog, rows, window_us), _duplicates(rows), rows.num_rows, misfiled
    )


def _duplicates(rows: pa.Table) -> dict[tuple[str, str], list[LedgerCopy]]:
    keys = rows.group_by(["tenant_id", "id"]).aggregate([("id", "count")])
    repeated = keys.filter(pc.greater(keys.column("id_count"), 1))
    if repeated.num_rows == 0:
        return {}
    copies = rows_matching(rows, repeated, ["tenant_id", "id"], matching=True)
    found: dict[tuple[str, str], list[LedgerCopy]] = defaultdict(list)
    for event, where in zip(events_of(copies), coordinates_of(copies), strict=True):
        found[(event.tenant_id, event.id)].append(LedgerCopy(event, where))
    return {key: sorted(group, key=lambda c: c.coordinates) for key, group in sorted(found.items())}


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
    present = set(lake.table(USAGE_WINDOWS).schema().to_arrow().names)
    columns = ", ".join(c for c in WINDOW_COLUMNS if c in present)
    table = sql(lake, f"SELECT {columns} FROM usage_windows {where}", [USAGE_WINDOWS])
    labels = (
        table.column("aggregation").to_pylist()
        if "aggregation" in table.column_names
        else [None] * table.num_rows
    )
    return {
        key: CurrentWindow(value, revision, aggregation=label or "sum")
        for key, value, revision, label in zip(
            window_keys(table),
            window_values(table),
            table.column("revision").to_pylist(),
            labels,
            strict=True,
        )
    }


def compare(
    catalog: Catalog,
    windows: dict[WindowKey, CurrentWindow],
    ledger: dict[WindowKey, WindowValue],
) -> list[Mismatch]:
    """Every window where the table and the ledger disagree, ordered by key.

    Windows of meters the catalog no longer has are history, not checked.
    """
    mismatches = []
    for key in sorted(set(windows) | set(ledger)):
        meter = catalog.meter(key[1])
        if meter is None:
            continue
        row, truth = windows.get(key), ledger.get(key)
        if (
            truth is not None
            and meter.aggregation is SUM
            and (truth.quantity_nanos or 0) > MAX_QUANTITY_NANOS
        ):
            mismatches.append(Mismatch(key, "overflow", row, truth))
        elif row is None:
            mismatches.append(Mismatch(key, "missing", None, truth))
        elif truth is None:
            if row.value.event_count or row.value.unvalued_count:
                mismatches.append(Mismatch(key, "extra", row, None))
        elif row.value != truth or row.aggregation != meter.aggregation.value:
            mismatches.append(Mismatch(key, "wrong", row, truth))
    return mismatches


def reconcile(
    lake: Lake, start: datetime | None = None, end: datetime | None = None, *, fix: bool = False
) -> ReconcileReport:
    """Check (and with ``fix`` repair) the windows starting in [start, end)."""
    store = CorrectionStore(lake)
    catalog = store.catalog
    ledger = read_ledger(lake, catalog, store.window_us, start, end)
    windows = window_rows(lake, start, end)
    report = ReconcileReport(
        len(windows),
        ledger.events,
        compare(catalog, windows, ledger.values),
        [(t, i, len(copies)) for (t, i), copies in ledger.duplicates.items()],
        ledger.misfiled,
    )
    report.pending_late_events, report.pending_conflicts = store.pending()
    report.pending_voids = store.unapplied_voids()
    if fix and (report.mismatches or ledger.duplicates):
        later = [copy for copies in ledger.duplicates.values() for copy in copies[1:]]
        report.voided = store.ledger.void(later, void_id=VOID_DUPLICATE, reason=VOID_DUPLICATE)
        reasons: dict[SliceKey, list[ChangeReason]] = defaultdict(list)
        for mismatch in report.mismatches:
            where = slice_of(catalog, mismatch.key)
            if where is not None:
                reasons[where].append(ChangeReason.RECONCILE_FIX)
        for copy in later:
            reasons[store.ledger.slice_of(copy)].append(ChangeReason.DUPLICATE_KEY)
        report.fixed = store.correct_windows(reasons).changes
    return report


def mismatch_counts(report: ReconcileReport) -> Counter[str]:
    """How many mismatches of each kind."""
    return Counter(m.kind for m in report.mismatches)
