"""Idempotent appends and commit-conflict retries, the base of every meterwax write.

**Append once per position** (ledger, late events, quarantine, window conflicts). Each source
partition writing a table has a Delta ``txn`` app id; its version is the highest source
position committed. Before a write the table is refreshed, the version read, rows at or below
it dropped, and the rest appended with the new version *in the same commit, through the same
table object* (checking on one snapshot and writing on another would let a racing duplicate
through). A replay after a crash therefore writes only what is missing. This needs each
table's rows of one source partition to arrive in position order, which the flow guarantees.

Window totals have writes of their own, in ``windows_table``.

**Conflicts.** delta-rs fails a commit that races a conflicting one (a MERGE against an append,
two MERGEs on one partition…). Every meterwax write is safe to redo from scratch, so a
conflict is retried with jittered exponential backoff; after ``max_attempts`` the error is
raised, never swallowed.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError

from meterwax.errors import LakeError

log = logging.getLogger(__name__)

Row = TypeVar("Row")
Result = TypeVar("Result")

MAX_ATTEMPTS = 30
_FIRST_BACKOFF_S = 0.02
_MAX_BACKOFF_S = 2.0


@dataclass
class CommitStats:
    """What a write cost: commits made, conflicts retried, seconds spent."""

    commits: int = 0
    retries: int = 0
    seconds: float = 0.0


def retry_commit(
    attempt: Callable[[], Result], what: str, stats: CommitStats, max_attempts: int = MAX_ATTEMPTS
) -> Result:
    """Run ``attempt`` until it commits; retry only commit conflicts, with jittered backoff."""
    started = time.monotonic()
    backoff = _FIRST_BACKOFF_S
    try:
        for number in range(1, max_attempts + 1):
            try:
                return attempt()
            except CommitFailedError as error:
                if number == max_attempts:
                    msg = f"{what}: gave up after {max_attempts} commit conflicts: {error}"
                    raise LakeError(msg) from error
                stats.retries += 1
                log.info("commit conflict on %s (attempt %d): %s", what, number, error)
                time.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
        raise AssertionError("unreachable")  # pragma: no cover
    finally:
        stats.seconds += time.monotonic() - started


class OffsetAppender:
    """Appends one source partition's rows to one table, each source position at most once.

    A position is a source offset, or anything that orders rows the same way (see
    :class:`~meterwax.operators.records.WindowRow`); several rows may share one.
    """

    def __init__(
        self,
        table: DeltaTable,
        app_id: str,
        stats: CommitStats | None = None,
        *,
        guard: Callable[[DeltaTable], None] | None = None,
    ) -> None:
        self._table = table
        self.app_id = app_id
        self.stats = stats or CommitStats()
        self._guard = guard
        """Checks the refreshed table before each attempt commits (may raise to stop it)."""

    def committed_offset(self) -> int | None:
        """The highest offset already in the table for this app id (None: nothing yet)."""
        self._table.update_incremental()
        return self._table.transaction_version(self.app_id)

    def append(
        self,
        rows: Sequence[Row],
        offset_of: Callable[[Row], int],
        to_arrow: Callable[[list[Row]], pa.Table],
        *,
        also: Sequence[Transaction] = (),
    ) -> int:
        """Append the rows not yet committed; return how many were written.

        ``also`` are other ``txn`` actions to record in the same commit (progress markers).
        """
        if not rows:
            return 0

        def attempt() -> int:
            committed = self._committed_and_guarded()
            fresh = [r for r in rows if committed is None or offset_of(r) > committed]
            if not fresh:
                return 0
            self._commit(to_arrow(fresh), max(offset_of(r) for r in fresh), also)
            return len(fresh)

        return retry_commit(attempt, f"append to {self.app_id}", self.stats)

    def append_table(
        self, table: pa.Table, offset_column: str, *, also: Sequence[Transaction] = ()
    ) -> int:
        """:meth:`append` for rows already in Arrow: the position is ``offset_column``.

        The main flow's sink buffers the ledger this way: an Arrow row of an event takes a
        fraction of the memory of its Python objects.
        """
        if table.num_rows == 0:
            return 0

        def attempt() -> int:
            committed = self._committed_and_guarded()
            fresh = (
                table
                if committed is None
                else table.filter(pc.greater(table[offset_column], committed))
            )
            if fresh.num_rows == 0:
                return 0
            self._commit(fresh, pc.max(fresh[offset_column]).as_py(), also)
            return fresh.num_rows

        return retry_commit(attempt, f"append to {self.app_id}", self.stats)

    def _committed_and_guarded(self) -> int | None:
        """The committed position, after the guard approved the refreshed table."""
        committed = self.committed_offset()
        if self._guard is not None:
            self._guard(self._table)
        return committed

    def _commit(self, fresh: pa.Table, version: int, also: Sequence[Transaction]) -> None:
        """Append ``fresh`` and record ``version`` (and ``also``) in the same commit."""
        transactions = [Transaction(self.app_id, version), *also]
        write_deltalake(
            self._table,
            fresh,
            mode="append",
            commit_properties=CommitProperties(app_transactions=transactions),
        )
        self.stats.commits += 1

    def ensure_markers(self, markers: Sequence[Transaction], empty: pa.Table) -> None:
        """Make sure the table records ``markers``, in one commit with no rows if it does not.

        The first marker is the one that only grows (a position): when the table's version of
        it is at least the wanted one, every marker is taken to be there (markers are always
        written together). Costs a commit only when it lags, e.g. after a stretch of input
        that wrote nothing to this table.
        """
        if not markers:
            return

        def attempt() -> None:
            self._table.update_incremental()
            recorded = self._table.transaction_version(markers[0].app_id)
            if recorded is not None and recorded >= markers[0].version:
                return
            if self._guard is not None:
                self._guard(self._table)
            write_deltalake(
                self._table,
                empty,
                mode="append",
                commit_properties=CommitProperties(app_transactions=list(markers)),
            )
            self.stats.commits += 1

        retry_commit(attempt, f"record {markers[0].app_id}", self.stats)
