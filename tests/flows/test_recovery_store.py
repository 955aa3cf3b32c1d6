"""The recovery store: identity checks, and no snapshot of an unfinished epoch survives a resume."""

from __future__ import annotations

import shutil
import signal
import sqlite3

from click.testing import CliRunner

from meterwax.cli.main import main
from meterwax.flows.recovery import discard_unfinished_epochs, resume_epoch, source_positions
from meterwax.sinks.lake import Lake
from meterwax.synthetic.generator import Workload, generate
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
