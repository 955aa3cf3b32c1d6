"""A meterwax lake: one root (a local directory or an object-store URI) holding its Delta tables.

The lake also remembers the window length it was built with (a table property of
``usage_windows``), because windows of two lengths can never be reconciled against one ledger.
"""

from __future__ import annotations

import os
from pathlib import Path

from deltalake import DeltaTable
from deltalake.exceptions import DeltaError, TableNotFoundError

from meterwax.durations import format_duration_us
from meterwax.errors import LakeError, WindowLengthError
from meterwax.sinks.delta_writes import CommitStats, retry_commit
from meterwax.sinks.schemas import ALL_TABLES, EVENTS, USAGE_WINDOWS, TableSpec

WINDOW_PROPERTY = "meterwax.window_us"


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
        return f"Lake({self.root!r})"

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

    def ledger_id(self) -> str:
        """The ``events`` table's Delta id: it changes when the lake is deleted and recreated.

        A recovery store remembers it, so that a store is never resumed into a new lake at the
        same path (the store would skip everything the old lake held, and the new one lacks).
        """
        return self.table(EVENTS).metadata().id

    def ensure_tables(self, window_us: int) -> None:
        """Create every missing table; refuse a lake built with another window length."""
        if not _has_scheme(self.root):
            try:
                Path(self.root).mkdir(parents=True, exist_ok=True)
            except OSError as error:
                msg = f"cannot create the lake directory {self.root}: {error.strerror}"
                raise LakeError(msg) from None
        for spec in ALL_TABLES:
            properties = dict(spec.properties)
            if spec is USAGE_WINDOWS:
                properties[WINDOW_PROPERTY] = str(window_us)

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
        existing = self.window_us()
        if existing is not None and existing != window_us:
            msg = (
                f"lake {self.root} holds {format_duration_us(existing)} windows; this run asks "
                f"for {format_duration_us(window_us)} (a lake keeps one window length for life)"
            )
            raise WindowLengthError(msg, existing_us=existing, requested_us=window_us)

    def window_us(self) -> int | None:
        """The window length the lake was created with (None if it has no windows table yet)."""
        if not self.exists(USAGE_WINDOWS):
            return None
        value = self.table(USAGE_WINDOWS).metadata().configuration.get(WINDOW_PROPERTY)
        return int(value) if value is not None else None
