"""Run statistics shared by the flows' sinks, the command line, and the Prometheus endpoint.

Sinks record what they *committed* (so neither the summary nor a scrape ever counts a write
that failed); the command line prints the totals at the end of a run; ``serve`` exposes the
same numbers on ``/metrics`` while a flow runs. Bytewax workers are threads of one process, so
a lock is enough; each process of a multi-process run serves and reports its own share.

Metric names (all prefixed ``meterwax_``):

==================================  =========  ==================================================
name                                type       what
==================================  =========  ==================================================
events_read_total                   counter    messages read (events, rejects, heartbeats)
events_counted_total                counter    events counted by the main flow
events_already_committed_total      counter    of those, already in the ledger (rerun, resume)
events_duplicate_total              counter    events dropped as duplicates by the main flow
events_late_total                   counter    events sent to late_events
events_unmetered_total              counter    counted events no catalog meter takes
meter_unvalued_total                counter    events a catalog meter took without a value
catalog_version                     gauge      the meter catalog version this process counts
                                               with (0: no catalog)
events_quarantined_total{reason}    counter    messages quarantined, by reason (too_late incl.)
heartbeats_total                    counter    heartbeat records
windows_written_total               counter    first window totals written
windows_already_written_total       counter    of those, written by an earlier run (skipped)
window_conflicts_total              counter    windows flagged for recomputation
corrections_late_counted_total      counter    late events the correction flow counted
corrections_late_duplicate_total    counter    late events it found already in the ledger
corrections_windows_changed_total   counter    windows it changed (one audit row each)
corrections_voided_total            counter    ledger rows it voided (void rules, late copies incl.)
watermark_lag_seconds{partition}    gauge      wall clock − partition watermark (observability
                                               only: nothing is decided by the wall clock)
dedupe_keys{partition}              gauge      keys held by a partition's dedupe index
delta_commits_total                 counter    Delta commits
delta_commit_retries_total          counter    commit conflicts retried
delta_commit_seconds                histogram  time per flush (all its commits, retries incl.)
batch_messages                      histogram  messages per source batch
==================================  =========  ==================================================
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

_COUNTERS = {
    "read": ("events_read", "Messages read (events, rejected messages and heartbeats)."),
    "counted": ("events_counted", "Events counted by the main flow."),
    "already_committed": (
        "events_already_committed",
        "Counted events an earlier run had written to the ledger (skipped, not written twice).",
    ),
    "duplicates": ("events_duplicate", "Events dropped as duplicates by the main flow."),
    "late": ("events_late", "Events sent to late_events for the correction flow."),
    "heartbeats": ("heartbeats", "Heartbeat records read."),
    "unmetered": ("events_unmetered", "Counted events that no meter of the catalog takes."),
    "unvalued": ("meter_unvalued", "Events a catalog meter took but could not value."),
    "windows_closed": ("windows_written", "First window totals written by the main flow."),
    "windows_already_written": (
        "windows_already_written",
        "Closed windows an earlier run had written (skipped, not written twice).",
    ),
    "window_conflicts": ("window_conflicts", "Windows flagged for recomputation."),
    "late_counted": ("corrections_late_counted", "Late events the correction flow counted."),
    "late_duplicates": ("corrections_late_duplicate", "Late events already in the ledger."),
    "windows_changed": ("corrections_windows_changed", "Windows changed by corrections."),
    "voided": ("corrections_voided", "Ledger rows the correction flow voided (void rules)."),
}
_COMMIT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 10, 100, 1_000, 5_000, 10_000, 20_000, 50_000, 100_000)


class _Histogram:
    """Cumulative bucket counts and a sum, enough for a Prometheus histogram."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += value

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        cumulative, running = [], 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts, strict=True):
            running += count
            cumulative.append(("+Inf" if bound == float("inf") else str(bound), running))
        return HistogramMetricFamily(name, documentation, buckets=cumulative, sum_value=self.total)


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
        self.catalog_version = 0
        """The meter catalog version the flow counts with (0: no catalog)."""
        self._commit_latency = _Histogram(_COMMIT_BUCKETS)
        self._batch_sizes = _Histogram(_BATCH_BUCKETS)

    def add(self, counters: Counter[str]) -> None:
        """Add committed counts."""
        with self._lock:
            self.counters.update(counters)

    def observe_batch(self, messages: int) -> None:
        """Record the size of one source batch."""
        with self._lock:
            self._batch_sizes.observe(messages)

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
        """Record Delta commit work of one flush."""
        with self._lock:
            self.commits += commits
            self.commit_retries += retries
            self.commit_seconds += seconds
            if commits:
                self._commit_latency.observe(seconds)

    def count(self, name: str) -> int:
        """One counter's committed value (from any thread)."""
        with self._lock:
            return self.counters[name]

    def snapshot(self) -> Counter[str]:
        """A copy of the counters."""
        with self._lock:
            return Counter(self.counters)

    def collect(self) -> Iterator[Metric]:
        """Prometheus metric families for the current values (a registry collector)."""
        with self._lock:
            counters = Counter(self.counters)
            watermarks = dict(self.watermarks_us)
            dedupe = dict(self.dedupe_keys)
            commits, retries = self.commits, self.commit_retries
            latency = self._commit_latency.family(
                "meterwax_delta_commit_seconds", "Seconds per flush of Delta commits."
            )
            batches = self._batch_sizes.family(
                "meterwax_batch_messages", "Messages per source batch."
            )
        for key, (name, documentation) in _COUNTERS.items():
            yield CounterMetricFamily(f"meterwax_{name}", documentation, value=counters[key])
        quarantined = CounterMetricFamily(
            "meterwax_events_quarantined", "Messages quarantined, by reason.", labels=["reason"]
        )
        for key, value in sorted(counters.items()):
            if key.startswith("quarantined."):
                quarantined.add_metric([key.split(".", 1)[1]], value)
        yield quarantined
        now_us = time.time_ns() // 1000
        lag = GaugeMetricFamily(
            "meterwax_watermark_lag_seconds",
            "Wall clock minus the partition watermark (observability only).",
            labels=["partition"],
        )
        for partition, watermark in sorted(watermarks.items()):
            lag.add_metric([partition], (now_us - watermark) / 1_000_000)
        yield lag
        keys = GaugeMetricFamily(
            "meterwax_dedupe_keys", "Keys in a partition's dedupe index.", labels=["partition"]
        )
        for partition, count in sorted(dedupe.items()):
            keys.add_metric([partition], count)
        yield keys
        yield GaugeMetricFamily(
            "meterwax_catalog_version",
            "The meter catalog version this process counts with (0: no catalog).",
            value=self.catalog_version,
        )
        yield CounterMetricFamily("meterwax_delta_commits", "Delta commits.", value=commits)
        yield CounterMetricFamily(
            "meterwax_delta_commit_retries", "Delta commit conflicts retried.", value=retries
        )
        yield latency
        yield batches


def serve(stats: RunStats, port: int) -> None:
    """Serve ``stats`` on ``http://0.0.0.0:port/metrics`` from a daemon thread."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(stats)
    start_http_server(port, registry=registry)
