"""The recovery store: identity checks, and no snapshot of an unfinished epoch survives a resume."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
from pathlib import Path

from click.testing import CliRunner

from meterwax.cli.main import main
from meterwax.flows.recovery import (
    IDENTITY_FILE,
    discard_unfinished_epochs,
    resume_epoch,
    source_positions,
)
from meterwax.sinks.lake import Lake
from meterwax.synthetic.generator import Workload, generate
from tests.guarantees import check_g1_ledger, check_g2_totals
from tests.helpers import comparable_tables, run_cli, write
from tests.processes import run_meterwax


def snapshot_epochs(part) -> list[int]:
    with sqlite3.connect(part) as db:
        return [epoch for (epoch,) in db.execute("SELECT snap_epoch FROM snaps")]


def test_snapshots_of_an_epoch_a_killed_run_did_not_finish_are_discarded(tmp_path):
    source = write(
        tmp_path / "events.jsonl", list(generate(Workload(events=20_000, tenants=4, seed=8)))
    )
    crashed, reference = Lake(tmp_path / "crashed"), Lake(tmp_path / "reference")
    store = tmp_path / "recovery"
    args = (
        *("run", "--input", str(source), "--lake", crashed.root, "--recovery-dir", str(store)),
        *("--batch-size", "100", "--snapshot-interval", "20ms"),
    )
    killed = run_meterwax(*args, env_extra={"METERWAX_CRASH_AT": "sink.snapshot:3"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    part = store / "part-0.sqlite3"
    unfinished = resume_epoch(part)
    # The dying epoch's sources and processors had already written their snapshots.
    assert any(epoch >= unfinished for epoch in snapshot_epochs(part))
    assert discard_unfinished_epochs(part) > 0
    assert snapshot_epochs(part)
    assert all(epoch < unfinished for epoch in snapshot_epochs(part))

    (position,) = source_positions(store).values()
    assert 0 < position.offset < 20_000  # it resumes from a line in the middle

    resumed = run_meterwax(*args)
    assert resumed.returncode == 0, resumed.stderr
    (position,) = source_positions(store).values()
    assert position.offset == 20_000  # and its last epoch snapshotted the end of the file
    run_cli("--input", str(source), "--lake", reference.root)
    assert comparable_tables(crashed) == comparable_tables(reference)


def test_a_store_made_for_another_input_is_refused(tmp_path):
    first = write(tmp_path / "a.jsonl", list(generate(Workload(events=300, tenants=2, seed=1))))
    second = write(tmp_path / "b.jsonl", list(generate(Workload(events=300, tenants=2, seed=2))))
    store = str(tmp_path / "recovery")
    run_cli("--input", str(first), "--lake", str(tmp_path / "lake"), "--recovery-dir", store)
    result = CliRunner().invoke(
        main,
        ["run", "--input", str(second), "--lake", str(tmp_path / "lake"), "--recovery-dir", store],
    )
    assert result.exit_code == 2
    assert "was made for another input" in result.output
    assert "source" in result.output


def test_a_store_is_never_resumed_into_a_recreated_lake(tmp_path):
    # The store would skip everything the deleted lake held: the new lake would lack it all.
    source = write(tmp_path / "a.jsonl", list(generate(Workload(events=300, tenants=2, seed=1))))
    lake, store = tmp_path / "lake", str(tmp_path / "recovery")
    first = run_cli("--input", str(source), "--lake", str(lake), "--recovery-dir", store)
    assert first["counted"] > 0
    shutil.rmtree(lake)
    result = CliRunner().invoke(
        main, ["run", "--input", str(source), "--lake", str(lake), "--recovery-dir", store]
    )
    assert result.exit_code == 2
    assert "was made for another input" in result.output
    assert "lake_id" in result.output


def test_a_store_that_cannot_be_created_is_one_clear_error(tmp_path):
    source = write(tmp_path / "a.jsonl", list(generate(Workload(events=10, tenants=1, seed=1))))
    store = tmp_path / "a.jsonl" / "recovery"  # under a file
    result = CliRunner().invoke(
        main,
        [
            "run",
            "--input",
            str(source),
            "--lake",
            str(tmp_path / "lake"),
            "--recovery-dir",
            str(store),
        ],
    )
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (
        f"error: cannot use the recovery store {store} (--recovery-dir): Not a directory; "
        "give a writable --recovery-dir or --state-dir"
    )


FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "store-0.1.0"
"""A lake and recovery store written by meterwax 0.1.0 at 981f113 (before the layout moved):
``meterwax run --input events.jsonl --lake lake --recovery-dir store`` over the first 300
messages of ``generate(Workload(events=400, tenants=5, seed=3))``; ``appended.jsonl`` holds
the other 100."""


def test_a_store_written_by_the_previous_layout_resumes(tmp_path):
    messages = list(generate(Workload(events=400, tenants=5, seed=3)))
    assert (FIXTURE / "events.jsonl").read_bytes() == b"".join(
        m.payload + b"\n" for m in messages[:300]
    ), "the generator changed: the fixture no longer matches the messages this test expects"
    work = tmp_path / "work"
    shutil.copytree(FIXTURE, work)
    lake = Lake(work / "lake")
    # The store names the lake by its absolute path; the copy moved it.
    identity_path = work / "store" / IDENTITY_FILE
    identity = json.loads(identity_path.read_text())
    identity["lake"] = lake.root
    identity_path.write_text(json.dumps(identity))
    events = work / "events.jsonl"
    events.write_bytes(events.read_bytes() + (work / "appended.jsonl").read_bytes())

    summary = run_cli(
        "--input", str(events), "--lake", lake.root, "--recovery-dir", str(work / "store")
    )
    # Only the appended lines were read: the old snapshots (the file position and the
    # partition processor's state) were loaded by the new code.
    assert summary["read"] == 100
    assert summary["already_committed"] == 0
    done = CliRunner().invoke(main, ["corrections", "--lake", lake.root, "--once"])
    assert done.exit_code == 0, done.output
    check_g1_ledger(lake, messages)
    check_g2_totals(lake, messages)
