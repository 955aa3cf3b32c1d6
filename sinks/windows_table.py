"""Writes to ``usage_windows``: first totals from the main flow, revised totals from corrections.

**First totals (main flow).** A window's first row is written once and never overwritten by
the main flow. Before inserting, the writer reads the rows that already exist for the same
keys (in the same date partitions, through the same table snapshot it then merges into):

- no row: insert it (an insert-only MERGE; two writers inserting the same key conflict in
  delta-rs and the loser retries, re-reading first);
- a row with the same totals at revision 0: a replay, nothing to do;
- a row with other totals: the window also received events from another source partition
  (a tenant whose events are not all in one partition, e.g. after a Kafka partition count
  change), or it was already corrected. The row is not touched; the caller records a
  *window conflict* and the correction flow recomputes the window from the ledger, with an
  audit row. A contribution is therefore never dropped and never silently merged.

**Revised totals (corrections).** MERGE on (tenant_id, meter, window_start): an existing row is
replaced only by a higher revision, so a replay can never undo a newer correction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, QueryBuilder, Transaction

from meterwax.operators.corrections import WindowKey
from meterwax.operators.records import WindowRow
from meterwax.sinks.arrow_rows import date_column, decimal_to_nanos, window_keys, windows_table
from meterwax.sinks.delta_writes import CommitStats, retry_commit
from meterwax.sinks.queries import literal, plain_strings

WINDOW_KEY = "t.tenant_id = s.tenant_id AND t.meter = s.meter AND t.window_start = s.window_start"


def _date_predicate(dates: Sequence[str]) -> str:
    return f"window_date IN ({_sql_list(dates)})"


def window_dates(keys: Iterable[WindowKey]) -> list[str]:
    """The distinct ``window_date`` partition values (ISO dates) of these windows, sorted."""
    return _iso_dates(date_column([key[2] for key in keys]))


def _iso_dates(column: pa.Array | pa.ChunkedArray) -> list[str]:
    return sorted({day.isoformat() for day in column.to_pylist()})


def rows_of_windows(
    table: DeltaTable, columns: str, dates: Iterable[str], *, tenants: Iterable[str]
) -> pa.Table:
    """``columns`` of the rows of ``table`` in these window dates and tenants.

    A superset of any set of windows with those dates and tenants, for the caller to filter:
    the date and tenant predicates prune partitions and files, which keeps the read tied to
    the windows at hand rather than to the whole table. Works for every table keyed by window
    (usage_windows, usage_corrections).
    """
    table.update_incremental()
    statement = (
        f"SELECT {columns} FROM t WHERE window_date IN ({_sql_list(dates)}) "
        f"AND tenant_id IN ({_sql_list(tenants)})"
    )
    return plain_strings(
        pa.table(QueryBuilder().register("t", table).execute(statement).read_all())
    )


def _sql_list(values: Iterable[str]) -> str:
    return ", ".join(literal(value) for value in sorted(set(values)))


def existing_totals(
    table: DeltaTable, dates: Sequence[str], *, tenants: set[str]
) -> dict[WindowKey, tuple[int, int, int]]:
    """Rows of these tenants and window dates in ``table``: key → (nanos, count, revision)."""
    if not dates or not tenants:
        return {}
    result = rows_of_windows(
        table,
        "tenant_id, meter, window_start, quantity, event_count, revision",
        dates,
        tenants=tenants,
    )
    values = zip(
        decimal_to_nanos(result.column("quantity")),
        result.column("event_count").to_pylist(),
        result.column("revision").to_pylist(),
        strict=True,
    )
    return dict(zip(window_keys(result), values, strict=True))


@dataclass(frozen=True)
class FirstTotals:
    """What :func:`insert_first_totals` did with a batch of closed windows."""

    conflicts: list[WindowRow]
    """Windows that exist with other totals (for the correction flow to recompute)."""
    already_written: int
    """Windows an earlier run had handled (a rerun or a resume): skipped."""


def insert_first_totals(
    table: DeltaTable,
    rows: Sequence[WindowRow],
    *,
    app_id: str,
    stats: CommitStats,
) -> FirstTotals:
    """Insert windows that have no row yet; report the ones that exist with other totals.

    Rows at or below the position this source partition has already committed (the ``txn``
    version of ``app_id``) were handled by an earlier run, conflicts included: a replay skips
    them. The insert-only MERGE reports how many of the others it inserted; only when that
    falls short (a window another partition wrote first, or one already corrected) are this
    batch's tenants read back, to tell an identical row from a conflict.
    """
    table.update_incremental()
    committed = table.transaction_version(app_id)
    given = len(rows)
    if committed is not None:
        rows = [r for r in rows if r.position > committed]
    if not rows:
        return FirstTotals([], given)
    source = windows_table(rows, revision=0, updated_at=datetime.now(UTC))
    dates = _iso_dates(source.column("window_date"))

    def attempt() -> int:
        table.update_incremental()
        metrics = (
            table.merge(
                source,
                f"{WINDOW_KEY} AND t.{_date_predicate(dates)}",
                source_alias="s",
                target_alias="t",
                streamed_exec=False,
                commit_properties=CommitProperties(
                    app_transactions=[Transaction(app_id, max(r.position for r in rows))]
                ),
            )
            .when_not_matched_insert_all()
            .execute()
        )
        stats.commits += 1
        return int(metrics["num_target_rows_inserted"])

    inserted = retry_commit(attempt, f"insert windows ({app_id})", stats)
    skipped = given - len(rows)
    if inserted == len(rows):
        return FirstTotals([], skipped)
    existing = existing_totals(table, dates, tenants={r.tenant_id for r in rows})
    conflicts = [
        row
        for row in rows
        if existing.get((row.tenant_id, row.meter, row.window_start_us))
        != (row.quantity_nanos, row.event_count, 0)
    ]
    return FirstTotals(conflicts, skipped)


def merge_revised_totals(
    table: DeltaTable, rows: pa.Table, *, transaction: Transaction | None, stats: CommitStats
) -> None:
    """MERGE revised window rows; an existing row is replaced only by a higher revision."""
    if rows.num_rows == 0:
        return
    dates = _iso_dates(rows.column("window_date"))
    properties = CommitProperties(app_transactions=[transaction]) if transaction else None

    def attempt() -> None:
        table.update_incremental()
        (
            table.merge(
                rows,
                f"{WINDOW_KEY} AND t.{_date_predicate(dates)}",
                source_alias="s",
                target_alias="t",
                streamed_exec=False,
                commit_properties=properties,
            )
            .when_matched_update_all(predicate="s.revision > t.revision")
            .when_not_matched_insert_all()
            .execute()
        )
        stats.commits += 1

    retry_commit(attempt, "merge revised windows", stats)
