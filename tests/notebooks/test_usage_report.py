"""notebooks/usage_report.ipynb runs top to bottom (nbclient) on a lake made here.

The lake spans Europe/Berlin's autumn DST change (the notebook cross-checks its polars rollups
against ``meterwax usage`` in that zone), has window conflicts (two files with the same
tenants) and one correction, applied the way the correction flow does: the window recomputed
from the ledger, MERGEd at revision 1, with an audit row.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import nbformat
import pyarrow as pa
import pytest
import yaml
from click.testing import CliRunner
from deltalake import write_deltalake
from nbclient import NotebookClient

from meterwax.cli.main import main
from meterwax.sinks.delta_writes import CommitStats
from meterwax.sinks.lake import Lake
from meterwax.sinks.schemas import EVENTS, USAGE_CORRECTIONS, USAGE_WINDOWS, WINDOW_CONFLICTS
from meterwax.sinks.windows_table import merge_revised_totals
from meterwax.synthetic.generator import Workload, generate
from tests.helpers import rows, run_cli, write

SUMS = ("api_calls", "cpu_seconds", "storage_gb_hours")
CATALOG = {
    "meters": [
        *({"name": m, "event_meter": m, "aggregation": "sum"} for m in SUMS),
        {"name": "requests", "event_meter": "api_calls", "aggregation": "count"},
        {
            "name": "active_users",
            "event_meter": "api_calls",
            "aggregation": "unique_count",
            "value": "dimensions.user_id",
        },
        {"name": "peak_cpu", "event_meter": "cpu_seconds", "aggregation": "max"},
    ]
}
NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "usage_report.ipynb"
START = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


def correct_one_conflict(lake: Lake) -> tuple[str, str, datetime]:
    """Recompute one conflicting window from the ledger, as the correction flow would."""
    conflict = next(r for r in rows(lake, WINDOW_CONFLICTS) if r["meter"] in SUMS)
    key = (conflict["tenant_id"], conflict["meter"], conflict["window_start"])
    window = next(
        r
        for r in rows(lake, USAGE_WINDOWS)
        if (r["tenant_id"], r["meter"], r["window_start"]) == key
    )
    events = [
        r
        for r in rows(lake, EVENTS)
        if (r["tenant_id"], r["meter"]) == key[:2]
        and window["window_start"] <= r["event_time"] < window["window_end"]
    ]
    quantity = sum((r["quantity"] for r in events), Decimal(0))
    now = datetime.now(UTC)
    revised = {
        **window,
        "quantity": quantity,
        "event_count": len(events),
        "revision": 1,
        "updated_at": now,
    }
    merge_revised_totals(
        lake.table(USAGE_WINDOWS),
        pa.Table.from_pylist([revised], schema=USAGE_WINDOWS.schema),
        transaction=None,
        stats=CommitStats(),
    )
    audit = {
        **{
            k: window[k]
            for k in ("tenant_id", "meter", "window_start", "window_end", "window_date")
        },
        "revision": 1,
        "previous_quantity": window["quantity"],
        "previous_event_count": window["event_count"],
        "new_quantity": quantity,
        "new_event_count": len(events),
        "delta_quantity": quantity - window["quantity"],
        "delta_event_count": len(events) - window["event_count"],
        "late_event_ids": [],
        "reason": "window_conflict",
        "corrected_at": now,
    }
    write_deltalake(
        lake.table(USAGE_CORRECTIONS),
        pa.Table.from_pylist([audit], schema=USAGE_CORRECTIONS.schema),
        mode="append",
    )
    return key


def outputs(notebook: nbformat.NotebookNode) -> str:
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", "") or output.get("data", {}).get("text/plain", ""))
    return "\n".join(texts)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_the_usage_report_runs_top_to_bottom(tmp_path, monkeypatch, request, where):
    shape = {"events": 4000, "tenants": 3, "start": START, "events_per_second": 0.5, "users": 8}
    first = write(tmp_path / "a.jsonl", list(generate(Workload(seed=1, **shape))))
    second = write(tmp_path / "b.jsonl", list(generate(Workload(seed=2, **shape))))
    if where == "s3":  # the lake on the S3 server; the notebook reads METERWAX_STORAGE_OPTIONS
        server = request.getfixturevalue("s3_server")
        # As an operator may write it: a JSON boolean, which meterwax takes as "true".
        options = {**server.storage_options(), "AWS_ALLOW_HTTP": True}
        monkeypatch.setenv("METERWAX_STORAGE_OPTIONS", json.dumps(options))
        lake = server.lake()
    else:
        lake = Lake(tmp_path / "lake")
    catalog = tmp_path / "meters.yaml"
    catalog.write_text(yaml.safe_dump(CATALOG))
    applied = CliRunner().invoke(main, ["meters", "apply", str(catalog), "--lake", lake.root])
    assert applied.exit_code == 0, applied.output
    run_cli("--input", str(first), "--input", str(second), "--lake", lake.root)
    corrected = correct_one_conflict(lake)
    some_event = rows(lake, EVENTS)[0]
    voided = CliRunner().invoke(
        main,
        [
            *("void", "--lake", lake.root, "--tenant", some_event["tenant_id"]),
            *("--id", some_event["id"], "--reason", "a test void"),
        ],
    )
    assert voided.exit_code == 0, voided.output
    conflicts = len(rows(lake, WINDOW_CONFLICTS))
    report_dir = tmp_path / "report"
    monkeypatch.setenv("METERWAX_LAKE", lake.root)
    monkeypatch.setenv("METERWAX_TZ", "Europe/Berlin")
    monkeypatch.setenv("METERWAX_REPORT_DIR", str(report_dir))

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=180,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails

    chart = report_dir / "usage_chart.png"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert chart.stat().st_size > 10_000
    text = outputs(notebook)
    assert f"lake: {lake.root}   rollup zone: Europe/Berlin" in text
    assert "identical to `meterwax usage --granularity hour --tz Europe/Berlin`" in text
    assert "identical to `meterwax usage --granularity day --tz Europe/Berlin`" in text
    assert "void-" in text  # the void's id, next to the late-event corrections
    assert corrected[0] in text
    assert f"{conflicts} conflicts" in text and conflicts > 0
    assert "window_conflict" in text
    version = lake.table(USAGE_WINDOWS).version()
    assert f"usage_windows version {version - 1} (then) vs {version} (now)" in text
    assert "on 0 of them" not in text and "tenant-days; on " in text  # distinct < sum somewhere
    assert "2026-10-25 02:00:00 CET" in text or "2026-10-25 02:00:00 CEST" in text
    if lake.storage_options:
        assert lake.storage_options["AWS_SECRET_ACCESS_KEY"] not in text
