"""Run statistics shared by the flows' sinks and the command line.

Sinks record what they *committed* (so a summary never counts a write that failed); the command
line prints the totals at the end of a run. Bytewax workers are threads of one process, so a
lock is enough; each process of a multi-process run reports its own share.
"""

from __future__ import annotations

import threading
from collections import Counter


class RunStats:
    """Thread-safe counters and per-partition gauges of one run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: Counter[str] = Counter()
        self.watermarks_us: dict[str, int] = {}
        self.dedupe_keys: dict[str, int] = {}
        self.dedupe_bytes: dict[str, int] = {}
        self.commits = 0
        self.commit_retries = 0
        self.commit_seconds = 0.0

    def add(self, counters: Counter[str]) -> None:
        """Add committed counts."""
        with self._lock:
            self.counters.update(counters)

    def set_watermark(self, partition: str, watermark_us: int | None) -> None:
        """Record a partition's watermark after a commit."""
        if watermark_us is None:
            return
        with self._lock:
            self.watermarks_us[partition] = watermark_us

    def set_dedupe(self, partition: str, keys: int, nbytes: int) -> None:
        """Record the size of a partition's dedupe index."""
        with self._lock:
            self.dedupe_keys[partition] = keys
            self.dedupe_bytes[partition] = nbytes

    def add_commits(self, commits: int, retries: int, seconds: float) -> None:
        """Record Delta commit work."""
        with self._lock:
            self.commits += commits
            self.commit_retries += retries
            self.commit_seconds += seconds

    def snapshot(self) -> Counter[str]:
        """A copy of the counters."""
        with self._lock:
            return Counter(self.counters)
