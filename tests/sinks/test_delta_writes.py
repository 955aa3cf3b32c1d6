"""The exactly-once write primitives, one by one, on real Delta tables.

``retry_commit`` (conflicts retried, other errors not), ``OffsetAppender`` (each position once,
even against a writer racing on a stale snapshot) and ``insert_first_totals`` (first totals
inserted once; replays skipped; windows another writer holds reported as conflicts).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError

from meterwax.errors import LakeError
from meterwax.operators.partition import MeteringRules
from meterwax.operators.records import WindowRow
from meterwax.sinks import delta_writes
from meterwax.sinks.delta_writes import CommitStats, OffsetAppender, retry_commit
from meterwax.sinks.lake import Lake
from meterwax.sinks.schemas import USAGE_WINDOWS
from meterwax.sinks.windows_table import insert_first_totals

MINUTE_US = 60_000_000
T0_US = 1_772_452_800_000_000  # 2026-03-02T12:00:00Z
SCHEMA = pa.schema([pa.field("position", pa.int64()), pa.field("value", pa.string())])


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch):
    monkeypatch.setattr(delta_writes.time, "sleep", lambda _seconds: None)


def rows_table(rows: list[tuple[int, str]]) -> pa.Table:
    return pa.table(
        {"position": [r[0] for r in rows], "value": [r[1] for r in rows]}, schema=SCHEMA
    )


@pytest.fixture
def table_uri(tmp_path):
    uri = str(tmp_path / "t")
    DeltaTable.create(uri, schema=SCHEMA)
    return uri


def table_rows(uri: str) -> list[tuple[int, str]]:
    data = DeltaTable(uri).to_pyarrow_table().sort_by("position")
    return list(zip(data["position"].to_pylist(), data["value"].to_pylist(), strict=True))


# --- retry_commit -----------------------------------------------------------------------


def test_a_commit_conflict_is_retried_until_the_attempt_commits():
    calls = []

    def attempt():
        calls.append(1)
        if len(calls) < 3:
            raise CommitFailedError("Failed to commit transaction: conflict")
        return "done"

    stats = CommitStats()
    assert retry_commit(attempt, "test write", stats) == "done"
    assert len(calls) == 3
    assert stats.retries == 2


def test_conflicts_beyond_the_limit_are_an_error_that_says_what_was_written():
    def attempt():
        raise CommitFailedError("Failed to commit transaction: 15")

    stats = CommitStats()
    with pytest.raises(LakeError, match="test write: gave up after 4 commit conflicts"):
        retry_commit(attempt, "test write", stats, max_attempts=4)
    assert stats.retries == 3


def test_other_errors_are_never_retried():
    calls = []

    def attempt():
        calls.append(1)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        retry_commit(attempt, "test write", CommitStats())
    assert len(calls) == 1


# --- OffsetAppender ------------------------------------------------------------------------


def appender(uri: str, app_id: str = "app.p0") -> OffsetAppender:
    return OffsetAppender(DeltaTable(uri), app_id)


def append(writer: OffsetAppender, rows: list[tuple[int, str]]) -> int:
    return writer.append(rows, lambda r: r[0], rows_table)


def test_each_position_is_written_once_across_calls_and_replays(table_uri):
    writer = appender(table_uri)
    assert append(writer, [(0, "a"), (1, "b"), (1, "b2")]) == 3
    # A replay regrouped differently: positions at or below the txn version are skipped.
    assert append(writer, [(1, "b"), (1, "b2"), (2, "c")]) == 1
    assert append(writer, [(0, "a"), (2, "c")]) == 0
    assert table_rows(table_uri) == [(0, "a"), (1, "b"), (1, "b2"), (2, "c")]
    assert writer.committed_offset() == 2


def test_a_writer_racing_between_its_check_and_its_commit_conflicts_and_then_skips(table_uri):
    winner, loser = appender(table_uri), appender(table_uri)
    built = []

    def build_after_the_winner_commits(rows):
        # Runs inside the loser's attempt, after it read the txn version and before it
        # commits through that snapshot: the worst moment for a racing writer to commit.
        built.append(len(rows))
        if len(built) == 1:
            assert append(winner, [(0, "a"), (1, "b")]) == 2
        return rows_table(rows)

    written = loser.append([(0, "a"), (1, "b")], lambda r: r[0], build_after_the_winner_commits)
    # The loser's commit carried the same app id as the winner's newer one: refused, retried
    # from a fresh snapshot, where both positions are already committed.
    assert written == 0
    assert built == [2]
    assert loser.stats.retries == 1
    assert table_rows(table_uri) == [(0, "a"), (1, "b")]


def append_arrow(writer: OffsetAppender, rows: list[tuple[int, str]]) -> int:
    return writer.append_table(rows_table(rows), "position")


def test_an_arrow_append_writes_each_position_once_like_a_row_append(tmp_path):
    # The same calls through both appends (the main flow's ledger goes through Arrow) leave
    # the same rows, return the same counts and record the same position.
    calls = [[(0, "a"), (1, "b"), (1, "b2")], [(1, "b"), (1, "b2"), (2, "c")], [], [(0, "a")]]
    results = {}
    for name, write in (("rows", append), ("arrow", append_arrow)):
        uri = str(tmp_path / name)
        DeltaTable.create(uri, schema=SCHEMA)
        writer = appender(uri)
        counts = [write(writer, rows) for rows in calls]
        results[name] = (counts, table_rows(uri), writer.committed_offset())
    assert results["arrow"] == results["rows"]
    assert results["arrow"] == ([3, 1, 0, 0], [(0, "a"), (1, "b"), (1, "b2"), (2, "c")], 2)


def test_an_arrow_append_racing_a_writer_conflicts_and_then_skips(table_uri):
    winner = appender(table_uri)
    raced = []

    def winner_commits_first(_table):
        # The guard runs after the loser read the committed position, before it commits.
        if not raced:
            raced.append(append(winner, [(0, "a"), (1, "b")]))

    loser = OffsetAppender(DeltaTable(table_uri), "app.p0", guard=winner_commits_first)
    assert append_arrow(loser, [(0, "a"), (1, "b"), (2, "c")]) == 1
    assert raced == [2]
    assert loser.stats.retries == 1
    assert table_rows(table_uri) == [(0, "a"), (1, "b"), (2, "c")]


def test_two_source_partitions_append_independently(table_uri):
    assert append(appender(table_uri, "app.p0"), [(5, "p0")]) == 1
    assert append(appender(table_uri, "app.p1"), [(5, "p1")]) == 1  # same position, other app
    assert sorted(v for _, v in table_rows(table_uri)) == ["p0", "p1"]


def test_a_progress_marker_rides_in_the_same_commit_and_is_kept_up_to_date(table_uri):
    from deltalake import Transaction

    writer = appender(table_uri)
    append_with_marker = writer.append(
        [(3, "x")], lambda r: r[0], rows_table, also=[Transaction("progress.p0", 7)]
    )
    assert append_with_marker == 1
    table = DeltaTable(table_uri)
    assert (table.transaction_version("app.p0"), table.transaction_version("progress.p0")) == (3, 7)
    version = table.version()
    writer.ensure_markers([Transaction("progress.p0", 7)], SCHEMA.empty_table())  # there: no commit
    assert DeltaTable(table_uri).version() == version
    writer.ensure_markers(
        [Transaction("progress.p0", 9), Transaction("digest.p0", 123)], SCHEMA.empty_table()
    )
    table = DeltaTable(table_uri)
    assert (table.transaction_version("progress.p0"), table.transaction_version("digest.p0")) == (
        9,
        123,
    )


# --- insert_first_totals ------------------------------------------------------------------


def window(tenant: str, minute: int, nanos: int, count: int, position: int) -> WindowRow:
    start = T0_US + minute * MINUTE_US
    return WindowRow(tenant, "api_calls", start, start + MINUTE_US, nanos, count, position)


@pytest.fixture
def lake(tmp_path) -> Lake:
    lake = Lake(tmp_path / "lake")
    lake.ensure_tables(MeteringRules())
    return lake


@pytest.fixture
def windows_table(lake) -> DeltaTable:
    return lake.table(USAGE_WINDOWS)


def stored(table: DeltaTable) -> dict:
    table.update_incremental()
    data = table.to_pyarrow_table().to_pylist()
    return {
        (r["tenant_id"], r["window_start"]): (r["quantity"], r["event_count"], r["revision"])
        for r in data
    }


def test_first_totals_are_inserted_once_and_a_replay_is_skipped(lake, windows_table):
    stats = CommitStats()
    rows = [window("acme", 0, 3_000_000_000, 3, 10), window("zeta", 0, 1_000_000_000, 1, 12)]
    result = insert_first_totals(lake, windows_table, rows, app_id="w.p0", stats=stats)
    assert (result.conflicts, result.already_written) == ([], 0)
    assert len(stored(windows_table)) == 2
    again = insert_first_totals(lake, windows_table, rows, app_id="w.p0", stats=stats)
    assert (again.conflicts, again.already_written) == ([], 2)
    assert stats.commits == 1  # the replay committed nothing


def test_a_window_another_partition_wrote_first_is_a_conflict_and_is_not_touched(
    lake, windows_table
):
    stats = CommitStats()
    insert_first_totals(
        lake, windows_table, [window("acme", 0, 3_000_000_000, 3, 10)], app_id="w.p0", stats=stats
    )
    theirs = window("acme", 0, 5_000_000_000, 5, 4)
    fresh = window("acme", 1, 2_000_000_000, 2, 6)
    result = insert_first_totals(lake, windows_table, [theirs, fresh], app_id="w.p1", stats=stats)
    assert result.conflicts == [theirs]
    start = datetime.fromtimestamp(T0_US / 1e6, UTC)
    assert stored(windows_table)[("acme", start)][1:] == (3, 0)  # the first total stays
    assert len(stored(windows_table)) == 2  # the other window was inserted


def test_equal_partial_totals_from_two_partitions_are_a_conflict_not_a_replay(lake, windows_table):
    # Two source partitions each saw half of a window's events, with the same totals: the
    # second insert finds a row with its own values, and must still record a conflict.
    stats = CommitStats()
    mine = window("acme", 0, 2_000_000_000, 2, 10)
    theirs = window("acme", 0, 2_000_000_000, 2, 8)
    assert (
        insert_first_totals(lake, windows_table, [mine], app_id="w.p0", stats=stats).conflicts == []
    )
    result = insert_first_totals(lake, windows_table, [theirs], app_id="w.p1", stats=stats)
    assert result.conflicts == [theirs]
    # ...and its own replay, by position, is not one again.
    again = insert_first_totals(lake, windows_table, [theirs], app_id="w.p1", stats=stats)
    assert (again.conflicts, again.already_written) == ([], 1)
