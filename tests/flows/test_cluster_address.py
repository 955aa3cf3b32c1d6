"""A cluster process whose own address is taken stops with one line that says so."""

from __future__ import annotations

import socket

from tests.helpers import event
from tests.processes import run_meterwax


def test_a_process_whose_address_is_in_use_is_refused_in_one_line(tmp_path):
    source = tmp_path / "events.jsonl"
    source.write_bytes(event("e1") + b"\n")
    with socket.socket() as taken, socket.socket() as free:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        free.bind(("127.0.0.1", 0))
        addresses = ";".join(f"127.0.0.1:{s.getsockname()[1]}" for s in (taken, free))
        free.close()  # the peer's port: nobody listens, nobody needs to
        done = run_meterwax(
            "run", "--input", str(source), "--lake", str(tmp_path / "lake"),
            "-i", "0", "-a", addresses, timeout=60,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"cannot listen on {addresses.split(';')[0]}" in done.stderr
    assert "same process id" in done.stderr
