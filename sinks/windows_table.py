"""Writes to ``usage_windows``: first totals from the main flow, revised totals from corrections.

A window's key is (tenant_id, meter, window_start, group_key); rows from before meter catalogs
have a null group key, which is the empty one (no group).

**First totals (main flow).** A window's first row is written once and never overwritten by
the main flow. Which rows a source partition already wrote is known from its writer's
position alone (the ``txn`` version of its app id, committed with the rows): rows at or below
it are a replay and skipped. Every other row is inserted by an insert-only MERGE; a key that
already had a row was written by someone else (another source partition of the same tenant,
e.g. after a Kafka partition count change, a correction, or this partition before a file
grew), whatever totals it holds, so it is a *window conflict*: the row is not touched, the
caller records the conflict and the correction flow recomputes the window from the ledger,
with an audit row. A contribution is never dropped and never silently merged, and two
partitions with equal partial totals are two contributions, not one and its replay.

**Revised totals (corrections).** MERGE on the window's key: an existing row is replaced only
by a higher revision, so a replay can never undo a newer correction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, QueryBuilder, Transaction, write_deltalake

from meterwax.operators.corrections import CurrentWindow, WindowKey
from meterwax.operators.records import WindowRow
from meterwax.sinks.arrow_rows import date_column, window_keys, window_values, windows_table
from meterwax.sinks.delta_writes import CommitStats, retry_commit
from meterwax.sinks.lake import Lake
from meterwax.sinks.queries import literal, plain_strings
from meterwax.sinks.schemas import USAGE_WINDOWS

WINDOW_KEY = (
    "t.tenant_id = s.tenant_id AND t.meter = s.meter AND t.window_start = s.window_start "
    "AND coalesce(t.group_key, '') = s.group_key"
)


def _date_predicate(dates: Sequence[str]) -> str:
    return f"window_date IN ({_sql_list(dates)})"


def window_dates(keys: Iterable[WindowKey]) -> list[str]:
    """The distinct ``window_date`` partition values (ISO dates) of these windows, sorted."""
    return _iso_dates(date_column([key[2] for key in keys]))


def _iso_dates(column: pa.Array | pa.ChunkedArray) -> list[str]:
    return sorted(day.isoformat() for day in pc.unique(column).to_pylist())


def rows_of_windows(
    table: DeltaTable,
    columns: Sequence[str],
    dates: Iterable[str],
    *,
    tenants: Iterable[str],
    refresh: bool = True,
) -> pa.Table:
    """``columns`` of the rows of ``table`` in these window dates and tenants.

    A superset of any set of windows with those dates and tenants, for the caller to filter:
    the date and tenant predicates prune partitions and files, which keeps the read tied to
    the windows at hand rather than to the whole table. Works for every table keyed by window
    (usage_windows, usage_corrections).
    """
    if refresh:
        table.update_incremental()
    present = set(table.schema().to_arrow().names)
    selected = ", ".join(c for c in columns if c in present)  # older lakes lack some
    statement = (
        f"SELECT {selected} FROM t WHERE window_date IN ({_sql_list(dates)}) "
        f"AND tenant_id IN ({_sql_list(tenants)})"
    )
    return plain_strings(
        pa.table(QueryBuilder().register("t", table).execute(statement).read_all())
    )


def _sql_list(values: Iterable[str]) -> str:
    return ", ".join(literal(value) for value in sorted(set(values)))


WINDOW_COLUMNS = (
    "tenant_id",
    "meter",
    "window_start",
    "group_key",
    "quantity",
    "event_count",
    "revision",
    "unvalued_count",
    "distinct_values",
    "latest_time",
    "latest_id",
    "catalog_version",
    "aggregation",
)


def existing_windows(
    table: DeltaTable, dates: Sequence[str], *, tenants: set[str], refresh: bool = True
) -> dict[WindowKey, CurrentWindow]:
    """Rows of these tenants and window dates in ``table`` (a superset for the caller to trim).

    ``refresh=False`` reads the table at the version it was opened at.
    """
    if not dates or not tenants:
        return {}
    result = rows_of_windows(table, WINDOW_COLUMNS, dates, tenants=tenants, refresh=refresh)
    missing = [None] * result.num_rows
    names = result.column_names
    versions = (
        result.column("catalog_version").to_pylist() if "catalog_version" in names else missing
    )
    labels = result.column("aggregation").to_pylist() if "aggregation" in names else missing
    return {
        key: CurrentWindow(value, revision, version or 0, label or "sum")
        for key, value, revision, version, label in zip(
            window_keys(result),
            window_values(result),
            result.column("revision").to_pylist(),
            versions,
            labels,
            strict=True,
        )
    }


@dataclass(frozen=True)
class FirstTotals:
    """What :func:`insert_first_totals` did with a batch of closed windows."""

    conflicts: list[WindowRow]
    """Windows that exist with other totals (for the correction flow to recompute)."""
    already_written: int
    """Windows an earlier run had handled (a rerun or a resume): skipped."""


def insert_first_totals(
    lake: Lake,
    table: DeltaTable,
    rows: Sequence[WindowRow],
    *,
    app_id: str,
    stats: CommitStats,
    catalog_version: int = 0,
    guard: Callable[[DeltaTable], None] | None = None,
) -> FirstTotals:
    """Insert windows that have no row yet; report the ones another writer had written.

    Rows at or below the position this source partition has already committed (the ``txn``
    version of ``app_id``) were handled by an earlier run, conflicts included: a replay skips
    them. The insert-only MERGE reports how many of the others it inserted; only when that
    falls short are the keys read back, as they were in the snapshot the MERGE committed
    against (``lake`` opens that version): each key that existed there is a conflict.
    ``guard`` checks the table before each attempt (the catalog fence, ``catalog_table``).
    """
    table.update_incremental()
    committed = table.transaction_version(app_id)
    given = len(rows)
    if committed is not None:
        rows = [r for r in rows if r.position > committed]
    if not rows:
        return FirstTotals([], given)
    source = windows_table(
        rows, revision=0, updated_at=datetime.now(UTC), catalog_version=catalog_version
    )
    dates = _iso_dates(source.column("window_date"))

    position = CommitProperties(
        app_transactions=[Transaction(app_id, max(r.position for r in rows))]
    )

    def attempt() -> tuple[int, int]:
        table.update_incremental()
        if guard is not None:
            guard(table)
        read_version = table.version()
        metrics = (
            table.merge(
                source,
                f"{WINDOW_KEY} AND t.{_date_predicate(dates)}",
                source_alias="s",
                target_alias="t",
                streamed_exec=False,
                commit_properties=position,
            )
            .when_not_matched_insert_all()
            .execute()
        )
        if table.version() == read_version:
            # A MERGE that inserts nothing commits nothing: record the position anyway, so a
            # replay of these rows is known by position and skipped.
            write_deltalake(
                table, USAGE_WINDOWS.schema.empty_table(), mode="append", commit_properties=position
            )
        stats.commits += 1
        return int(metrics["num_target_rows_inserted"]), read_version

    inserted, read_version = retry_commit(attempt, f"insert windows ({app_id})", stats)
    skipped = given - len(rows)
    if inserted == len(rows):
        return FirstTotals([], skipped)
    # Commits between the MERGE's snapshot and its own did not conflict with it, so they
    # added no row in these date partitions: the keys present then are the ones it skipped.
    before = lake.table(USAGE_WINDOWS, read_version)
    existing = existing_windows(before, dates, tenants={r.tenant_id for r in rows}, refresh=False)
    conflicts = [
        r for r in rows if (r.tenant_id, r.meter, r.window_start_us, r.group_key) in existing
    ]
    return FirstTotals(conflicts, skipped)


def merge_revised_totals(
    table: DeltaTable,
    rows: pa.Table,
    *,
    transaction: Transaction | None,
    stats: CommitStats,
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
