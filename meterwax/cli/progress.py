"""A progress line on stderr for long commands (``meterwax produce``, bounded ``meterwax run``).

On a terminal it is a bar redrawn in place a few times a second; anywhere else (CI logs,
``docker compose logs``) it prints a plain line every 10% instead of thousands of redraws.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TextIO, TypeVar

T = TypeVar("T")

_REDRAW_S = 0.2
_BAR_WIDTH = 30


class Progress:
    """Tracks ``done`` out of ``total`` and shows it on ``stream`` (stderr by default)."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None) -> None:
        self.total = total
        self._label = label
        self._stream = stream if stream is not None else sys.stderr
        self._interactive = self._stream.isatty()
        self._started = time.monotonic()
        self._last_draw = float("-inf")
        self._last_decile = 0

    def update(self, done: int, note: Callable[[], str] | None = None) -> None:
        """Show progress if it is time to; cheap enough to call for every item.

        ``note`` (extra text after the numbers) is called only when a line is drawn.
        """
        if self._interactive:
            now = time.monotonic()
            if now - self._last_draw >= _REDRAW_S:
                self._last_draw = now
                line = self._line(done, now, note() if note else "")
                self._stream.write("\r" + line + "\x1b[K")
                self._stream.flush()
            return
        decile = done * 10 // self.total if self.total else 10
        if decile > self._last_decile:
            self._last_decile = decile
            line = self._line(done, time.monotonic(), note() if note else "")
            self._stream.write(line + "\n")
            self._stream.flush()

    def finish(self, done: int, note: str = "") -> None:
        """Draw the final state and end the line."""
        line = self._line(done, time.monotonic(), note)
        self._stream.write(("\r" + line + "\x1b[K\n") if self._interactive else line + "\n")
        self._stream.flush()

    def _line(self, done: int, now: float, note: str) -> str:
        share = done / self.total if self.total else 1.0
        filled = min(int(share * _BAR_WIDTH), _BAR_WIDTH)  # a total can be an estimate
        elapsed = now - self._started
        rate = done / elapsed if elapsed > 0 else 0.0
        bar = "#" * filled + "." * (_BAR_WIDTH - filled)
        text = f"{self._label} [{bar}] {share:4.0%} {done:,}/{self.total:,} {rate:,.0f}/s"
        return f"{text} {note}" if note else text


@contextmanager
def watch_progress(
    count: Callable[[], int],
    total: int,
    label: str,
    *,
    stream: TextIO | None = None,
    every_s: float = 0.5,
) -> Iterator[None]:
    """Show ``count()`` out of ``total`` while the block runs, from a helper thread.

    For work that does not return to Python between steps (a Bytewax flow blocks the calling
    thread until it ends). ``count`` must be safe to call from another thread. The last
    line is drawn when the block ends normally, and not when it raises (the error is the news).
    """
    progress = Progress(total, label, stream)
    done = threading.Event()

    def draw() -> None:
        while not done.wait(every_s):
            progress.update(count())

    thread = threading.Thread(target=draw, name="meterwax-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
    progress.finish(count())


def counting(items: Iterable[T], progress: Progress) -> Iterator[T]:
    """Yield ``items``, showing how many have been taken; the last line once they run out."""
    done = 0
    for item in items:
        yield item
        done += 1
        progress.update(done)
    progress.finish(done)
