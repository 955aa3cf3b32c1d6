"""The lake's meter catalog: its versions, and the fence that keeps every writer on the newest.

**Versions.** Each ``meters apply`` appends one row: the next version number and the catalog
as canonical JSON. The current catalog is the row with the highest version (none: version 0,
no catalog). Every process of a run reads it from the lake, so processes cannot disagree.

**The fence.** A version is published by setting the table property
``meterwax.catalog_version`` on every table the flows write, in the order the main flow writes
them (``events``, ``usage_windows``, ``window_conflicts``, ``late_events``, ``quarantine``),
then ``usage_corrections``. Every write of the main flow, and the corrections' audit rows,
checks, in the same attempt that commits, that the property is not newer than the version it
computed with. A property change is a metadata
change, which delta-rs refuses to let any concurrent commit pass: so once a table's property
names version N, no write made under an older version lands in it. The main flow then stops
and says so (a restart picks up version N); the correction flow reloads the catalog and
recomputes. ``meters apply`` recomputes windows only after the whole fence is up, so every
window written under the old version before it is recomputed too.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from datetime import UTC, datetime

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from meterwax.errors import LakeError
from meterwax.operators.catalog import LEGACY, LEGACY_VERSION, Catalog, CatalogSchedule
from meterwax.sinks.delta_writes import CommitStats, retry_commit
from meterwax.sinks.lake import Lake
from meterwax.sinks.schemas import (
    EVENTS,
    LATE_EVENTS,
    METER_CATALOG,
    QUARANTINE,
    USAGE_CORRECTIONS,
    USAGE_WINDOWS,
    WINDOW_CONFLICTS,
    TableSpec,
)

CATALOG_PROPERTY = "meterwax.catalog_version"
FENCED_TABLES = (
    EVENTS,
    USAGE_WINDOWS,
    WINDOW_CONFLICTS,
    LATE_EVENTS,
    QUARANTINE,
    USAGE_CORRECTIONS,
)
"""In the order the property is set: a writer of a later table has been fenced off the
earlier ones already."""


APPLY_FENCE = "meterwax.meters_apply"
"""The ``txn`` app id of every catalog append: two applies at once cannot both take a version."""


class CatalogChangedError(LakeError):
    """A newer catalog version was published while a writer computed with an older one."""

    def __init__(self, table: str, running: int, published: int) -> None:
        super().__init__(
            f"meter catalog version {published} was applied to this lake while this process "
            f"counts with version {running} ({table}); restart it to count with version "
            f"{published} (nothing is lost: the unfinished work is redone under it)"
        )
        self.running = running
        self.published = published


def published_version(table: DeltaTable) -> int:
    """The catalog version a fenced table's property names (0: none published)."""
    value = table.metadata().configuration.get(CATALOG_PROPERTY)
    return int(value) if value is not None else LEGACY_VERSION


def fence(version: int) -> Callable[[DeltaTable], None]:
    """A guard that raises :class:`CatalogChangedError` if a table publishes a newer version."""

    def guard(table: DeltaTable) -> None:
        published = published_version(table)
        if published > version:
            raise CatalogChangedError(_table_name(table), version, published)

    return guard


def switch_app_id(where_key: str, version: int) -> str:
    """The ``txn`` (on ``events``) with the first offset of a partition ``version`` decides."""
    return f"meterwax.metering.catalog_from.{version}.{where_key}"


def _table_name(table: DeltaTable) -> str:
    return table.table_uri.rstrip("/").rsplit("/", 1)[-1]


class CatalogStore:
    """Reads and publishes versions of one lake's meter catalog."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake

    def current(self) -> Catalog:
        """The newest version (:data:`LEGACY` when none was ever applied)."""
        versions = self._rows()
        if versions.num_rows == 0:
            return LEGACY
        latest = max(versions.column("version").to_pylist())
        return self.version(latest, rows=versions)

    def as_of(self, moment: str | None) -> Catalog:
        """The version in force at ``moment`` (RFC 3339; None: now).

        Read from ``meter_catalog`` as it was then (Delta time travel), so a report as of an
        invoice's date uses the definitions of that date.
        """
        if moment is None:
            return self.current()
        if not self.lake.exists(METER_CATALOG):
            return LEGACY
        try:
            rows = self.lake.table(METER_CATALOG, moment).to_pyarrow_table()
        except LakeError:  # the table did not exist yet at that moment
            return LEGACY
        if rows.num_rows == 0:
            return LEGACY
        return self.version(max(rows.column("version").to_pylist()), rows=rows)

    def version(self, number: int, *, rows: pa.Table | None = None) -> Catalog:
        """Version ``number`` (0: no catalog); LakeError if there is no such version."""
        if number == LEGACY_VERSION:
            return LEGACY
        rows = rows if rows is not None else self._rows()
        for version, definition in zip(
            rows.column("version").to_pylist(),
            rows.column("definition").to_pylist(),
            strict=True,
        ):
            if version == number:
                return Catalog.from_json(version, definition)
        known = sorted(rows.column("version").to_pylist())
        shown = ", ".join(map(str, known)) if known else "none yet"
        msg = f"lake {self.lake.root} has no meter catalog version {number} (versions: {shown})"
        raise LakeError(msg)

    def history(self) -> pa.Table:
        """Every version: version, format, applied_at, applied_by, note (oldest first)."""
        rows = self._rows()
        return rows.select(["version", "format", "applied_at", "applied_by", "note"]).sort_by(
            "version"
        )

    def _rows(self) -> pa.Table:
        if not self.lake.exists(METER_CATALOG):
            return METER_CATALOG.schema.empty_table()
        return self.lake.table(METER_CATALOG).to_pyarrow_table()

    def append(self, catalog: Catalog, *, source_format: str, note: str | None = None) -> Catalog:
        """Store ``catalog`` as the next version and return it (with its version number).

        If the newest version already has exactly these meters (an apply that was interrupted
        after storing it), that version is returned and nothing is written.
        """
        stats = CommitStats()

        def attempt() -> Catalog:
            table = self.lake.table(METER_CATALOG)
            table.update_incremental()
            rows = table.to_pyarrow_table()
            versions = rows.column("version").to_pylist()
            latest = max(versions, default=LEGACY_VERSION)
            if latest != LEGACY_VERSION:
                newest = self.version(latest, rows=rows)
                if newest.to_json() == catalog.to_json():
                    return newest
            stored = Catalog(latest + 1, catalog.meters)
            write_deltalake(
                table,
                pa.Table.from_pydict(
                    {
                        "version": [stored.version],
                        "definition": [stored.to_json()],
                        "format": [source_format],
                        "applied_at": [datetime.now(UTC)],
                        "applied_by": [_user()],
                        "note": [note],
                    },
                    schema=METER_CATALOG.schema,
                ),
                mode="append",
                commit_properties=CommitProperties(
                    app_transactions=[Transaction(APPLY_FENCE, stored.version)]
                ),
            )
            return stored

        return retry_commit(attempt, "store the meter catalog", stats)

    def publish(self, version: int) -> None:
        """Raise the fence to ``version`` on every fenced table (in order; never lowers it)."""
        for spec in FENCED_TABLES:

            def attempt(spec: TableSpec = spec) -> None:
                table = self.lake.table(spec)
                if published_version(table) < version:
                    table.alter.set_table_properties(
                        {CATALOG_PROPERTY: str(version)}, raise_if_not_exists=False
                    )

            retry_commit(
                attempt, f"publish catalog version {version} on {spec.name}", CommitStats()
            )

    def schedule(self, where_key: str, catalog: Catalog) -> CatalogSchedule:
        """The versions that decide ``where_key``'s offsets, up to ``catalog`` (the newest)."""
        events = self.lake.table(EVENTS)
        switches: list[tuple[int, Catalog]] = [(0, LEGACY)]
        for number in range(1, catalog.version + 1):
            start = events.transaction_version(switch_app_id(where_key, number))
            if start is None:
                continue
            version = catalog if number == catalog.version else self.version(number)
            # A later version switching at the same offset replaces the earlier one.
            switches = [s for s in switches if s[0] < start] + [(start, version)]
        return CatalogSchedule(tuple(switches))

    def record_switches(self, where_keys: dict[str, int], version: int) -> None:
        """Record that ``version`` decides these partitions from these offsets on.

        Only where no switch to it is recorded yet (a restart keeps the first one).
        """
        if version == LEGACY_VERSION or not where_keys:
            return

        def attempt() -> None:
            events = self.lake.table(EVENTS)
            events.update_incremental()
            missing = [
                Transaction(switch_app_id(key, version), start)
                for key, start in sorted(where_keys.items())
                if events.transaction_version(switch_app_id(key, version)) is None
            ]
            if missing:
                write_deltalake(
                    events,
                    EVENTS.schema.empty_table(),
                    mode="append",
                    commit_properties=CommitProperties(app_transactions=missing),
                )

        retry_commit(attempt, f"record where catalog version {version} starts", CommitStats())

    def published(self) -> int:
        """The version the last fenced table names: fully published up to it."""
        return min(published_version(self.lake.table(spec)) for spec in FENCED_TABLES)


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None
