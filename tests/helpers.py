"""Test helpers: building events and reading tables back as plain Python."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from meterwax.sinks.lake import Lake
from meterwax.sinks.schemas import TableSpec
from meterwax.synthetic.generator import Generated

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def iso(moment: datetime) -> str:
    """RFC 3339 with microseconds and Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event(
    event_id: str,
    *,
    tenant: str = "acme",
    meter: str = "api_calls",
    quantity: Any = 1,
    at: datetime | float = 0.0,
    **extra: Any,
) -> bytes:
    """A native event; ``at`` is a datetime or seconds after T0."""
    moment = at if isinstance(at, datetime) else T0 + timedelta(seconds=at)
    document = {
        "id": event_id,
        "tenant_id": tenant,
        "meter": meter,
        "quantity": quantity,
        "timestamp": iso(moment),
        **extra,
    }
    return orjson.dumps(document)


def rows(lake: Lake, spec: TableSpec) -> list[dict[str, Any]]:
    """All rows of a table, as dicts."""
    return lake.table(spec).to_pyarrow_table().to_pylist()


def window_totals(lake: Lake) -> dict[tuple[str, str, datetime], tuple[Decimal, int]]:
    """usage_windows as {(tenant, meter, window_start): (quantity, count)}."""
    from meterwax.sinks.schemas import USAGE_WINDOWS

    return {
        (r["tenant_id"], r["meter"], r["window_start"]): (r["quantity"], r["event_count"])
        for r in rows(lake, USAGE_WINDOWS)
    }


def ledger_totals(
    lake: Lake, window: timedelta
) -> dict[tuple[str, str, datetime], tuple[Decimal, int]]:
    """The ledger grouped into windows, computed in Python."""
    from meterwax.sinks.schemas import EVENTS

    sums: dict[tuple[str, str, datetime], Decimal] = {}
    counts: Counter[tuple[str, str, datetime]] = Counter()
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for r in rows(lake, EVENTS):
        start = epoch + ((r["event_time"] - epoch) // window) * window
        key = (r["tenant_id"], r["meter"], start)
        sums[key] = sums.get(key, Decimal(0)) + r["quantity"]
        counts[key] += 1
    return {key: (sums[key], counts[key]) for key in sums}


WALL_CLOCK_COLUMNS = ("updated_at", "corrected_at")
"""Columns that record when a row was written, which no two runs share."""


def comparable_tables(lake: Lake) -> dict[str, list[dict[str, Any]]]:
    """Every table's rows without the wall-clock columns, in a stable order (for G5)."""
    from meterwax.sinks.schemas import ALL_TABLES

    return {spec.name: without(rows(lake, spec), *WALL_CLOCK_COLUMNS) for spec in ALL_TABLES}


def without(rows_: list[dict[str, Any]], *columns: str) -> list[dict[str, Any]]:
    """Rows minus some columns (e.g. wall-clock ``updated_at``), sorted for comparison."""
    cleaned = [{k: v for k, v in r.items() if k not in columns} for r in rows_]
    return sorted(cleaned, key=lambda r: repr(sorted(r.items(), key=lambda kv: kv[0])))


def generated_windows(messages, *, late_too: bool = False) -> dict:
    """Window totals computed in plain Python from the generator's intents.

    Every unique event meant to be on time (``intent == "valid"``), and with ``late_too`` also
    the late ones (what the windows hold once the correction flow has run).
    """
    counted = {"valid", "late"} if late_too else {"valid"}
    window = timedelta(minutes=1)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    totals: dict = {}
    seen = set()
    for m in messages:
        if m.intent not in counted or (m.tenant_id, m.event_id) in seen:
            continue
        seen.add((m.tenant_id, m.event_id))
        moment = epoch + timedelta(microseconds=m.time_us)
        start = epoch + ((moment - epoch) // window) * window
        quantity, count = totals.get((m.tenant_id, m.meter, start), (Decimal(0), 0))
        totals[(m.tenant_id, m.meter, start)] = (quantity + m.quantity, count + 1)
    return totals


def write(path: Path, messages: Iterable[Generated]) -> Path:
    """A JSONL input file with one generated message per line."""
    path.write_bytes(b"".join(m.payload + b"\n" for m in messages))
    return path


def run_cli(*args: str) -> dict[str, Any]:
    """``meterwax run ARGS --format json`` in process; its summary (fails the test on exit ≠ 0)."""
    from click.testing import CliRunner

    from meterwax.cli.main import main

    result = CliRunner().invoke(main, ["run", *args, "--format", "json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)  # progress lines go to stderr
