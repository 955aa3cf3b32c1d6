"""A cluster process that cannot start (its address taken, its peers absent) stops cleanly."""

from __future__ import annotations

import signal
import socket
import subprocess
import time

from deltalake import DeltaTable

from tests.helpers import event
from tests.processes import meterwax_command, run_meterwax


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
    assert f"cannot start its network on {addresses.split(';')[0]}" in done.stderr
    assert "same process id" in done.stderr


def _listening(port: int) -> bool:
    """True once some process listens on this loopback TCP port (Linux /proc)."""
    with open("/proc/net/tcp") as table:
        next(table)
        return any(
            int(line.split()[1].split(":")[1], 16) == port and line.split()[3] == "0A"
            for line in table
        )


def free_cluster_addresses(count: int) -> tuple[list[int], str]:
    """``count`` free loopback ports, and the ``--addresses`` value that names them."""
    ports = []
    for _ in range(count):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    return ports, ";".join(f"127.0.0.1:{port}" for port in ports)


def test_a_process_waiting_for_its_peers_stops_on_sigterm(tmp_path):
    source = tmp_path / "events.jsonl"
    source.write_bytes(event("e1") + b"\n")
    ports, addresses = free_cluster_addresses(2)
    alone = subprocess.Popen(
        meterwax_command(
            "run", "--input", str(source), "--lake", str(tmp_path / "lake"),
            "-i", "0", "-a", addresses,
        ),
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _listening(ports[0]):  # it is past start-up, waiting for process 1
            assert alone.poll() is None and time.monotonic() < deadline, alone.stderr
            time.sleep(0.1)
        alone.send_signal(signal.SIGTERM)
        _, stderr = alone.communicate(timeout=60)
    finally:
        alone.kill()
    assert alone.returncode == 128 + signal.SIGTERM, stderr
    assert "SIGTERM could not stop the flow" in stderr


def test_processes_of_one_cluster_pointed_at_two_lakes_are_both_refused(tmp_path):
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"".join(event(f"e{n}", at=float(n)) + b"\n" for n in range(20)))
    _, addresses = free_cluster_addresses(2)

    def start(process: int) -> subprocess.Popen[str]:
        lake = str(tmp_path / f"lake-{process}")
        command = ["run", "--input", str(source), "--lake", lake, "-i", str(process)]
        return subprocess.Popen(
            meterwax_command(*command, "-a", addresses), stderr=subprocess.PIPE, text=True
        )

    processes = [start(0), start(1)]
    try:
        errors = [p.communicate(timeout=120)[1] for p in processes]
    finally:
        for p in processes:
            p.kill()
    assert [p.returncode for p in processes] == [2, 2], errors
    assert all("the processes differ in lake" in e for e in errors), errors
    assert not any(
        (tmp_path / f"lake-{n}" / "events").exists() and _ledger(tmp_path, n) for n in (0, 1)
    )


def _ledger(tmp_path, process: int) -> int:

    return DeltaTable(str(tmp_path / f"lake-{process}" / "events")).to_pyarrow_table().num_rows
