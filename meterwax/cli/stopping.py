"""Stopping long-running commands on SIGTERM as on Ctrl-C, and knowing that it happened.

``docker stop`` and Kubernetes send SIGTERM, which by default kills Python without running
any cleanup; Ctrl-C raises KeyboardInterrupt. Inside :func:`stop_on_signals` both raise
KeyboardInterrupt and are recorded, so a command can tell a requested stop (print what was
committed, exit ``128 + signal``) from a failure. Bytewax turns the interrupt into its own
runtime error when it happens inside a dataflow, which is why the record matters.

Stopping is safe for the main flow: the sinks commit at every epoch, so a stop loses only
uncommitted work, which the next run reads and writes again (idempotently).

A Python handler runs only when the main thread comes back to the interpreter. While a
cluster process waits for its peers, Bytewax's networking start keeps the main thread in
Rust and never looks at signals, so a stop would wait forever. A watcher thread therefore
sees every signal as it arrives (the interpreter's wakeup file descriptor) and, if the
handler has not run within :data:`UNHANDLED_GRACE_S`, exits the process with
``128 + signal``: as safe as a kill, which the main flow is built to survive.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType


@dataclass
class StopRequest:
    """Which signal asked the command to stop (None: none did)."""

    signum: int | None = None

    @property
    def requested(self) -> bool:
        """True once a stop signal arrived."""
        return self.signum is not None

    @property
    def name(self) -> str:
        """``SIGTERM``, ``SIGINT``… (empty when no signal arrived)."""
        return signal.Signals(self.signum).name if self.signum is not None else ""

    @property
    def exit_code(self) -> int:
        """The conventional exit code of a process stopped by this signal."""
        return 128 + (self.signum or 0)


@contextmanager
def stop_on_signals(
    signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM),
) -> Iterator[StopRequest]:
    """Within the block, each of ``signals`` is recorded and raises KeyboardInterrupt.

    A second one exits the process at once with ``128 + signal``.
    """
    request = StopRequest()

    def handle(signum: int, _frame: FrameType | None) -> None:
        if request.signum is not None:
            # A second signal while stopping: the operator insists (a stop stuck on a slow
            # store, say). Leave at once; what was committed stays, the next run redoes the rest.
            os.write(2, f"meterwax: {signal.Signals(signum).name} again: exiting now\n".encode())
            os._exit(128 + signum)
        request.signum = signum
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handle) for sig in signals}
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    previous_fd = signal.set_wakeup_fd(write_end)
    watcher = threading.Thread(
        target=_exit_if_unhandled,
        args=(read_end, request, {int(sig) for sig in signals}),
        name="meterwax-signal-watch",
        daemon=True,
    )
    watcher.start()
    try:
        yield request
    finally:
        signal.set_wakeup_fd(previous_fd)
        os.close(write_end)  # the watcher reads end of file and returns
        for sig, handler in previous.items():
            signal.signal(sig, handler)


UNHANDLED_GRACE_S = 5.0
"""How long a stop signal may wait for its handler before the process exits anyway."""


def _exit_if_unhandled(read_end: int, request: StopRequest, wanted: set[int]) -> None:
    """Exit with ``128 + signal`` when a stop signal's handler does not run in time."""
    try:
        while data := os.read(read_end, 1):
            signum = data[0]
            if signum not in wanted:
                continue
            time.sleep(UNHANDLED_GRACE_S)
            if request.signum is None:
                name = signal.Signals(signum).name
                os.write(
                    2,
                    f"meterwax: {name} could not stop the flow in {UNHANDLED_GRACE_S:g} s "
                    "(waiting for the other processes of a cluster?): exiting now\n".encode(),
                )
                os._exit(128 + signum)
    finally:
        os.close(read_end)
