"""The lake's void rules (``void_rules``): recording them, undoing them, reading them back.

Rows are appended, never changed: ``action = void`` records a rule, ``action = undo`` takes
one back. A rule is active when it has a ``void`` row and no ``undo`` row. Both appends are
fenced (a ``txn`` every writer of the table shares, decided on the snapshot they commit
through), so two operators recording the same void at once record it once.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
from deltalake import CommitProperties, Transaction, write_deltalake

from meterwax.errors import LakeError
from meterwax.operators.voids import VoidRule
from meterwax.sinks.arrow_rows import timestamp_to_micros
from meterwax.sinks.delta_writes import CommitStats, retry_commit
from meterwax.sinks.lake import Lake
from meterwax.sinks.queries import plain_strings
from meterwax.sinks.schemas import TIMESTAMP, VOID_RULES

VOID_RULES_FENCE = "meterwax.voids.rules"
VOID, UNDO = "void", "undo"


@dataclass(frozen=True)
class RecordedVoid:
    """A rule as the lake holds it."""

    rule: VoidRule
    void_id: str
    reason: str
    requested_by: str | None
    requested_at: datetime
    undone: bool


class VoidStore:
    """Reads and appends of one lake's ``void_rules``."""

    def __init__(self, lake: Lake, stats: CommitStats | None = None) -> None:
        self.lake = lake
        self.stats = stats or CommitStats()

    def version(self) -> int:
        """The table's current version (-1 when it does not exist yet)."""
        if not self.lake.exists(VOID_RULES):
            return -1
        return self.lake.table(VOID_RULES).version()

    def all(self) -> dict[str, RecordedVoid]:
        """Every void ever recorded, by id (undone ones included, marked)."""
        return _recorded(self._rows())

    def active(self) -> list[RecordedVoid]:
        """The voids in force, in the order they were recorded."""
        voids = [v for v in self.all().values() if not v.undone]
        return sorted(voids, key=lambda v: (v.requested_at, v.void_id))

    def undone_ids(self, as_of: str | None = None) -> set[str]:
        """Ids of voids that were undone (by the time ``as_of``, RFC 3339, when given)."""
        return {void_id for void_id, v in _recorded(self._rows(as_of)).items() if v.undone}

    def record(self, rule: VoidRule, reason: str) -> tuple[RecordedVoid, bool]:
        """Record ``rule``; (the recorded void, True if it is new). Repeating it is a no-op.

        A rule that was undone and is voided again gets a new ``void`` row, and is in force.
        """

        def attempt() -> tuple[RecordedVoid, bool]:
            table = self.lake.table(VOID_RULES)
            table.update_incremental()
            known = _recorded(plain_strings(table.to_pyarrow_table()))
            existing = known.get(rule.void_id)
            if existing is not None and not existing.undone:
                return existing, False
            self._append(table, [_row(rule, VOID, reason, table.version() + 1)])
            return _recorded(plain_strings(self.lake.table(VOID_RULES).to_pyarrow_table()))[
                rule.void_id
            ], True

        return retry_commit(attempt, "record a void", self.stats)

    def undo(self, void_id: str, reason: str) -> RecordedVoid | None:
        """Undo a void in force; None if there is no such void in force."""

        def attempt() -> RecordedVoid | None:
            table = self.lake.table(VOID_RULES)
            table.update_incremental()
            known = _recorded(plain_strings(table.to_pyarrow_table())).get(void_id)
            if known is None or known.undone:
                return None
            self._append(table, [_row(known.rule, UNDO, reason, table.version() + 1)])
            return known

        return retry_commit(attempt, "undo a void", self.stats)

    def changed_between(self, after: int, through: int) -> list[tuple[str, str]]:
        """(void_id, action) of the rows appended in versions (after, through]."""
        if through <= after:
            return []
        table = self.lake.table(VOID_RULES)
        changes = plain_strings(
            pa.table(table.load_cdf(starting_version=after + 1, ending_version=through).read_all())
        )
        if changes.num_rows == 0:
            return []
        return [
            (void_id, action)
            for void_id, action, kind in zip(
                changes.column("void_id").to_pylist(),
                changes.column("action").to_pylist(),
                changes.column("_change_type").to_pylist(),
                strict=True,
            )
            if kind == "insert"
        ]

    def _rows(self, as_of: str | None = None) -> pa.Table:
        if not self.lake.exists(VOID_RULES):
            return VOID_RULES.schema.empty_table()
        try:
            table = self.lake.table(VOID_RULES, as_of)
        except LakeError:
            if as_of is None:
                raise
            return VOID_RULES.schema.empty_table()  # a time before the first void
        return plain_strings(table.to_pyarrow_table())

    def _append(self, table, rows: list[dict]) -> None:  # noqa: ANN001 - a DeltaTable
        write_deltalake(
            table,
            pa.Table.from_pylist(rows, schema=VOID_RULES.schema),
            mode="append",
            commit_properties=CommitProperties(app_transactions=[Transaction(VOID_RULES_FENCE, 0)]),
        )
        self.stats.commits += 1


def _row(rule: VoidRule, action: str, reason: str, sequence: int) -> dict:
    """A ``void_rules`` row; ``sequence`` is the table version it commits as.

    Every append is fenced (a concurrent one makes it retry, reading the table again), so
    the version read plus one is the version it lands in: the order of voids and undos is
    the commit order, whatever the writers' clocks say.
    """
    return {
        "void_id": rule.void_id,
        "action": action,
        "tenant_id": rule.tenant_id,
        "ids": list(rule.ids) if rule.ids else None,
        "meter": rule.meter,
        "source": rule.source,
        "time_from": _instant(rule.from_us),
        "time_to": _instant(rule.to_us),
        "reason": reason,
        "requested_by": _user(),
        "requested_at": datetime.now(UTC),
        "sequence": sequence,
    }


def _instant(micros: int | None) -> datetime | None:
    if micros is None:
        return None
    return pa.scalar(micros, pa.int64()).cast(TIMESTAMP).as_py()


def _recorded(rows: pa.Table) -> dict[str, RecordedVoid]:
    """Every void by id: its latest ``void`` row, undone if an ``undo`` row follows it.

    In commit order (``sequence``); rows of a lake written before it had one come first,
    by their clock.
    """
    sequences = (
        rows.column("sequence").to_pylist()
        if "sequence" in rows.column_names
        else [None] * rows.num_rows
    )
    froms = timestamp_to_micros(rows.column("time_from"))
    tos = timestamp_to_micros(rows.column("time_to"))
    entries = sorted(
        zip(
            rows.column("void_id").to_pylist(),
            rows.column("action").to_pylist(),
            rows.column("tenant_id").to_pylist(),
            rows.column("ids").to_pylist(),
            rows.column("meter").to_pylist(),
            rows.column("source").to_pylist(),
            froms,
            tos,
            rows.column("reason").to_pylist(),
            rows.column("requested_by").to_pylist(),
            rows.column("requested_at").to_pylist(),
            sequences,
            strict=True,
        ),
        key=lambda entry: (entry[11] is not None, entry[11] or 0, entry[10]),
    )
    found: dict[str, RecordedVoid] = {}
    for void_id, action, tenant, ids, meter, source, start, end, reason, by, at, _ in entries:
        if action == UNDO:
            if void_id in found:
                previous = found[void_id]
                found[void_id] = RecordedVoid(
                    previous.rule, void_id, previous.reason, previous.requested_by, at, True
                )
            continue
        rule = VoidRule(tenant, tuple(ids or ()), meter, source, start, end)
        found[void_id] = RecordedVoid(rule, void_id, reason, by, at, False)
    return found


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None
