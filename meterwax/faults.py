"""Crash points for fault-injection tests: SIGKILL at a named point, off unless asked for.

The fault-injection suite kills workers at random moments from outside; to be sure that every
dangerous moment is hit too (right after one table committed and before the next, at the
start of an epoch snapshot), the code calls :func:`crash_point` there. Set

    METERWAX_CRASH_AT=sink.after_events          # die the first time this point is reached
    METERWAX_CRASH_AT=sink.after_windows:3       # die the third time

and the process kills itself with SIGKILL at that point: no cleanup, no flush, exactly like a
power cut. Unset (always, in production) a crash point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import sys

ENVIRONMENT = "METERWAX_CRASH_AT"

_target, _, _nth = os.environ.get(ENVIRONMENT, "").partition(":")
_remaining = int(_nth) if _nth else 1


def crash_point(name: str) -> None:
    """SIGKILL this process if ``name`` is the configured crash point (and its turn has come)."""
    global _remaining
    if not _target or name != _target:
        return
    _remaining -= 1
    if _remaining <= 0:
        sys.stderr.write(f"meterwax: crash point {name} reached, killing myself (SIGKILL)\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
