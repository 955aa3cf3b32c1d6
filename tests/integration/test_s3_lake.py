"""The lake on an S3-compatible object store: every command against a real HTTP server.

The server (scripts/s3, over gofakes3) honours conditional writes as S3, MinIO and R2 do; a
second server that ignores them must be refused. Totals are checked against the generator's
intents, computed in plain Python, and no output ever shows the secret access key.
"""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal

import pytest
from click.testing import CliRunner

from meterwax.cli.main import main
from meterwax.sinks.schemas import EVENTS, LATE_EVENTS, USAGE_WINDOWS
from meterwax.synthetic.generator import Workload, generate
from tests.guarantees import check_g1_ledger, check_g3_audit
from tests.helpers import generated_windows, rows, run_cli, window_totals, write
from tests.s3_fixtures import S3Server

pytestmark = pytest.mark.s3


def _cli(*args: str) -> tuple[int, str]:
    """A meterwax command in process: exit code and everything it printed (stdout + stderr)."""
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output + (result.stderr or "")


def test_file_run_corrections_reconcile_usage_and_maintain_on_s3(
    tmp_path, s3_server: S3Server, monkeypatch
):
    monkeypatch.setenv("METERWAX_STORAGE_OPTIONS", json.dumps(s3_server.storage_options()))
    secret = s3_server.storage_options()["AWS_SECRET_ACCESS_KEY"]
    lake = s3_server.lake()
    messages = list(generate(Workload(events=3000, tenants=6, seed=23, late=0.04)))
    source = write(tmp_path / "events.jsonl", messages)
    outputs: list[str] = []

    summary = run_cli("--input", str(source), "--lake", lake.root)
    outputs.append(json.dumps(summary))
    intents = Counter(m.intent for m in messages)
    assert summary["counted"] == intents["valid"]
    assert summary["late"] == intents["late"]
    assert window_totals(lake) == generated_windows(messages)

    code, out = _cli("corrections", "--lake", lake.root, "--once", "--format", "json")
    outputs.append(out)
    assert code == 0, out
    assert window_totals(lake) == generated_windows(messages, late_too=True)
    check_g3_audit(lake)
    assert len(rows(lake, LATE_EVENTS)) == intents["late"]

    code, out = _cli("reconcile", "--lake", lake.root)
    outputs.append(out)
    assert code == 0, out

    code, out = _cli("usage", "--lake", lake.root, "--format", "json")
    outputs.append(out)
    assert code == 0, out
    reported: dict[tuple[str, str], Decimal] = {}
    for row in json.loads(out):
        key = (row["tenant_id"], row["meter"])
        reported[key] = reported.get(key, Decimal(0)) + Decimal(str(row["quantity"]))
    expected: dict[tuple[str, str], Decimal] = {}
    for (tenant, meter, _), (quantity, _) in generated_windows(messages, late_too=True).items():
        expected[(tenant, meter)] = expected.get((tenant, meter), Decimal(0)) + quantity
    assert reported == expected

    before = window_totals(lake)
    files_before = len(lake.table(EVENTS).file_uris())
    code, out = _cli("maintain", "--lake", lake.root, "--compact", "--checkpoint")
    outputs.append(out)
    assert code == 0, out
    assert len(lake.table(EVENTS).file_uris()) < files_before
    assert window_totals(lake) == before
    check_g1_ledger(lake, messages)

    assert all(secret not in text for text in outputs)


@pytest.mark.parametrize(
    "extra",
    [{}, {"aws_copy_if_not_exists": "multipart"}],  # delta-rs 1.6 still commits by conditional PUT
    ids=["plain", "copy-if-not-exists"],
)
def test_a_store_that_ignores_conditional_writes_is_refused_before_anything_is_written(
    tmp_path, s3_server_without_conditional_put: S3Server, extra
):
    server = s3_server_without_conditional_put
    options = {**server.storage_options(), **extra}
    lake = server.lake()
    source = write(tmp_path / "events.jsonl", generate(Workload(events=50, tenants=2, seed=1)))
    flags = [
        arg for key, value in options.items() for arg in ("--storage-option", f"{key}={value}")
    ]

    code, out = _cli("run", "--input", str(source), "--lake", lake.root, *flags)

    assert code == 2, out
    assert "does not honour conditional writes" in out
    assert "--storage-option AWS_ENDPOINT_URL=" in out
    assert options["AWS_SECRET_ACCESS_KEY"] not in out
    assert not lake.exists(EVENTS)
    assert not lake.exists(USAGE_WINDOWS)
