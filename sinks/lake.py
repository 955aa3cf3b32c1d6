"""A meterwax lake: one root (a local directory or an object-store URI) holding its Delta tables.

The lake also remembers the counting rules it was created with (window length, allowed
lateness, horizons, maximum event size: table properties of ``usage_windows``) and refuses a
run with other ones. Windows of two lengths can never be reconciled against one ledger, and
replay and corrections must classify every message exactly as the main flow did, so they read
the rules from the lake rather than from their own flags.
"""

from __future__ import annotations

import json
import os
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable
from deltalake import Field as DeltaField
from deltalake.exceptions import DeltaError, TableNotFoundError

from meterwax.durations import format_duration_us
from meterwax.errors import LakeError, LakeRulesError, SourceChangedError
from meterwax.operators.partition import MeteringRules
from meterwax.sinks.commit_check import check_conditional_put
from meterwax.sinks.delta_writes import CommitStats, retry_commit
from meterwax.sinks.schemas import ALL_TABLES, EVENTS, USAGE_WINDOWS, TableSpec
from meterwax.sinks.storage import is_s3

WINDOW_PROPERTY = "meterwax.window_us"
RULES_PROPERTY = "meterwax.rules"
SOURCE_PROPERTY_PREFIX = "meterwax.source_id."
"""``events`` property per Kafka origin: the id of the topic the lake reads."""
"""The rules as JSON (every field of MeteringRules); lakes of meterwax 0.1 have the window only."""


_CHECKED: set[str] = set()
"""Lake roots whose store this process has found safe for concurrent commits."""


def _has_scheme(root: str) -> bool:
    return "://" in root


class Lake:
    """The tables under one lake root.

    :arg root: a directory (created if missing) or a URI such as ``s3://bucket/lake``.
    :arg storage_options: passed to delta-rs for object stores (credentials, endpoint…).
    """

    def __init__(
        self, root: str | os.PathLike[str], storage_options: dict[str, str] | None = None
    ) -> None:
        text = str(root)
        self.root = (
            text.rstrip("/") if _has_scheme(text) else str(Path(text).expanduser().resolve())
        )
        self.storage_options = storage_options or None

    def __repr__(self) -> str:
        return f"Lake({self.root!r})"  # never the storage options: they hold credentials

    def check_commits(self) -> None:
        """Refuse an object store on which two writers could commit the same table version.

        Every command that writes calls this first. S3 stores are probed once per process
        (:mod:`meterwax.sinks.commit_check`); local directories, GCS and Azure commit with
        put-if-absent natively. Raises UnsafeStoreError (a LakeError) naming the setting.
        """
        if not is_s3(self.root) or self.root in _CHECKED:
            return
        check_conditional_put(self.root, self.storage_options or {})
        _CHECKED.add(self.root)

    def uri(self, spec: TableSpec) -> str:
        """Where the table lives."""
        return (
            f"{self.root}/{spec.name}"
            if _has_scheme(self.root)
            else str(Path(self.root, spec.name))
        )

    def exists(self, spec: TableSpec) -> bool:
        """True if the table has been created."""
        return DeltaTable.is_deltatable(self.uri(spec), storage_options=self.storage_options)

    def table(self, spec: TableSpec, version: int | str | None = None) -> DeltaTable:
        """Open a table at its latest version (or at ``version``: a number or an RFC 3339 time).

        Raises LakeError, naming the table and the lake, when it does not exist.
        """
        try:
            table = DeltaTable(self.uri(spec), storage_options=self.storage_options)
        except TableNotFoundError:
            msg = (
                f"table {spec.name!r} not found in lake {self.root} "
                "(has `meterwax run` written to this lake yet?)"
            )
            raise LakeError(msg) from None
        except OSError as error:  # an object store that cannot be reached or read
            msg = f"cannot open table {spec.name!r} in lake {self.root}: {error}"
            raise LakeError(msg) from None
        if isinstance(version, int) and not 0 <= version <= table.version():
            msg = f"{spec.name} has versions 0 to {table.version()}; there is no version {version}"
            raise LakeError(msg)
        if version is not None:
            try:
                table.load_as_version(version)
            except (DeltaError, ValueError) as error:
                msg = f"{spec.name}: cannot load version {version!r}: {error}"
                raise LakeError(msg) from None
        return table

    def commit_time(self, spec: TableSpec, version: int) -> str:
        """When version ``version`` of a table was committed, as RFC 3339 (UTC, milliseconds).

        Read from the history of the table at its latest version: delta-rs numbers the history
        of a table loaded at an older version one off.
        """
        for entry in self.table(spec).history():
            if entry.get("version") == version:
                millis = int(entry["timestamp"])
                stamp = datetime.fromtimestamp(millis / 1000, UTC)
                return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        msg = f"{spec.name} has no version {version} in its history"
        raise LakeError(msg)

    def ledger_id(self) -> str:
        """The ``events`` table's Delta id: it changes when the lake is deleted and recreated.

        A recovery store remembers it, so that a store is never resumed into a new lake at the
        same path (the store would skip everything the old lake held, and the new one lacks).
        """
        return self.table(EVENTS).metadata().id

    def ensure_tables(self, rules: MeteringRules | None) -> None:
        """Create every missing table (and missing column); refuse a lake with other rules.

        A lake created by meterwax 0.1 remembers only its window length: its other rules are
        recorded now, from ``rules``. Without ``rules`` (a catalog applied before the first
        run), the tables are created and the first run records its rules.
        """
        if not _has_scheme(self.root):
            try:
                Path(self.root).mkdir(parents=True, exist_ok=True)
            except OSError as error:
                msg = f"cannot create the lake directory {self.root}: {error.strerror}"
                raise LakeError(msg) from None
        for spec in ALL_TABLES:
            properties = dict(spec.properties)
            if spec is USAGE_WINDOWS and rules is not None:
                properties.update(_rule_properties(rules))

            def create(spec: TableSpec = spec, properties: dict[str, str] = properties) -> None:
                DeltaTable.create(
                    self.uri(spec),
                    schema=spec.schema,
                    mode="ignore",
                    partition_by=list(spec.partition_by) or None,
                    configuration=properties,
                    storage_options=self.storage_options,
                    raise_if_key_not_exists=False,
                )

            # The processes of a multi-process run start together and all create the tables:
            # the loser of a race gets a commit conflict, and its retry finds the table there.
            retry_commit(create, f"create table {spec.name}", CommitStats())
            self._add_missing_columns(spec)
            self._allow_nulls(spec)
            self._add_missing_properties(spec)
        if rules is not None:
            self._check_rules(rules)

    def _add_missing_columns(self, spec: TableSpec) -> None:
        """Columns added to a table's schema since the lake was created (all nullable)."""

        def add() -> None:
            table = self.table(spec)
            present = {field.name for field in pa.schema(table.schema().to_arrow())}
            missing = [f for f in spec.schema if f.name not in present]
            if missing:
                table.alter.add_columns([DeltaField.from_arrow(f) for f in missing])

        retry_commit(add, f"add columns to {spec.name}", CommitStats())

    def _add_missing_properties(self, spec: TableSpec) -> None:
        """Table properties added to a table's spec since the lake was created.

        For example the ledger's change feed, which the correction flow reads for voids.
        """

        def add() -> None:
            table = self.table(spec)
            present = table.metadata().configuration
            missing = {k: v for k, v in spec.properties.items() if present.get(k) != v}
            if missing:
                table.alter.set_table_properties(missing, raise_if_not_exists=False)

        retry_commit(add, f"set properties of {spec.name}", CommitStats())

    def _allow_nulls(self, spec: TableSpec) -> None:
        """Drop NOT NULL from columns that may be null since the lake was created.

        Meter catalogs made some values optional: an event's quantity, a window's value (a
        ``max`` of events that carry none).
        """

        def relax() -> None:
            table = self.table(spec)
            present = {f.name: f for f in pa.schema(table.schema().to_arrow())}
            for wanted in spec.schema:
                found = present.get(wanted.name)
                if wanted.nullable and found is not None and not found.nullable:
                    table.alter.drop_column_not_null(wanted.name)
                    table.update_incremental()

        retry_commit(relax, f"allow nulls in {spec.name}", CommitStats())

    def _check_rules(self, rules: MeteringRules) -> None:
        recorded = self.recorded_rules()
        differences = {
            name: (value, getattr(rules, name))
            for name, value in recorded.items()
            if value != getattr(rules, name)
        }
        if differences:
            shown = [
                f"holds {_show(name, had)} windows; this run asks for {_show(name, asked)}"
                if name == "window_us"
                else f"counts with {_RULE_LABELS[name]} {_show(name, had)}; this run asks for "
                f"{_show(name, asked)}"
                for name, (had, asked) in differences.items()
            ]
            msg = (
                f"lake {self.root} {'. It '.join(shown)}. A lake keeps its rules for life, so "
                "that replays and corrections classify every message as the main flow did"
            )
            raise LakeRulesError(msg, differences)
        if set(recorded) != set(RULE_NAMES):

            def record() -> None:
                table = self.table(USAGE_WINDOWS)
                if RULES_PROPERTY not in table.metadata().configuration:
                    table.alter.set_table_properties(
                        _rule_properties(rules), raise_if_not_exists=False
                    )

            retry_commit(record, "record the lake's rules", CommitStats())

    def check_source_identity(self, origin: str, identity: str) -> None:
        """Record which incarnation of an input the lake reads, or refuse another one.

        A Kafka topic deleted and recreated under its name starts its offsets over: positions
        the lake recorded for the old topic would skip the new one's messages. Its id (Kafka
        gives every topic one) is recorded with the first run and checked by every later one.
        Raises SourceChangedError on a mismatch.
        """
        key = f"{SOURCE_PROPERTY_PREFIX}{origin}"

        def attempt() -> None:
            table = self.table(EVENTS)
            recorded = table.metadata().configuration.get(key)
            if recorded is None:
                table.alter.set_table_properties({key: identity}, raise_if_not_exists=False)
            elif recorded != identity:
                msg = (
                    f"{origin} was deleted and recreated since this lake read it (id {recorded}, "
                    f"now {identity}): its offsets started over, so the positions this lake "
                    "recorded would skip its messages. Meter the new topic into a new lake, or "
                    "under another topic name"
                )
                raise SourceChangedError(msg)

        retry_commit(attempt, f"record the identity of {origin}", CommitStats())

    def recorded_rules(self) -> dict[str, int | None]:
        """The rules the lake remembers, by MeteringRules field (empty for a new lake)."""
        if not self.exists(USAGE_WINDOWS):
            return {}
        configuration = self.table(USAGE_WINDOWS).metadata().configuration
        if RULES_PROPERTY in configuration:
            recorded = json.loads(configuration[RULES_PROPERTY])
            return {name: recorded[name] for name in RULE_NAMES if name in recorded}
        if WINDOW_PROPERTY in configuration:
            return {"window_us": int(configuration[WINDOW_PROPERTY])}
        return {}

    def rules(self) -> MeteringRules:
        """The rules the main flow counts with in this lake (for corrections and replay).

        A lake of meterwax 0.1 that no newer run has opened remembers only its window; its
        other rules are then taken to be the defaults. Raises LakeError for a lake the main
        flow never wrote.
        """
        recorded = self.recorded_rules()
        if "window_us" not in recorded:
            msg = f"lake {self.root} has no usage_windows table yet: run `meterwax run` first"
            raise LakeError(msg)
        return MeteringRules(**recorded)

    def window_us(self) -> int | None:
        """The window length the lake was created with (None if it has no windows table yet)."""
        return self.recorded_rules().get("window_us")


RULE_NAMES = tuple(field.name for field in fields(MeteringRules))
_RULE_LABELS = {
    "window_us": "windows of",
    "allowed_lateness_us": "allowed lateness",
    "dedupe_horizon_us": "dedupe horizon",
    "correction_horizon_us": "correction horizon",
    "max_future_us": "max future",
    "max_event_bytes": "max event size",
}


def _show(name: str, value: int | None) -> str:
    if value is None:
        return "off"
    return f"{value} bytes" if name == "max_event_bytes" else format_duration_us(value)


def _rule_properties(rules: MeteringRules) -> dict[str, str]:
    values = {name: getattr(rules, name) for name in RULE_NAMES}
    return {WINDOW_PROPERTY: str(rules.window_us), RULES_PROPERTY: json.dumps(values)}
