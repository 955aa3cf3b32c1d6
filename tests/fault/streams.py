"""The stream the fault tests kill flows under: a workload with every kind of trouble, written
to Kafka slowly enough that the flows are killed while it is still being written."""

from __future__ import annotations

import threading
import time

from meterwax.kafka.producer import Record, RecordWriter
from meterwax.synthetic.generator import Workload


def fault_workload(seed: int, *, events: int, lateness_s: int) -> Workload:
    """Duplicates, late and invalid events, retries up to 2 s apart, 40 events/s of event time."""
    return Workload(
        events=events,
        tenants=25,
        seed=seed,
        duplicates=0.03,
        late=0.02,
        invalid=0.003,
        max_retry_delay=2_000,
        events_per_second=40,
        jitter_s=1,
        allowed_lateness_s=lateness_s,
    )


class SlowProducer(threading.Thread):
    """Writes the stream in small chunks, so it is still writing while the flow is killed."""

    def __init__(self, cluster, topic: str, messages, seconds: float) -> None:
        super().__init__(daemon=True)
        self._writer = RecordWriter(cluster, topic)
        self._messages = messages
        self._pause = seconds / max(1, len(messages) // 200)
        self.undelivered = 0

    def run(self) -> None:
        for start in range(0, len(self._messages), 200):
            chunk = self._messages[start : start + 200]
            report = self._writer.write_all(Record(m.key, m.payload) for m in chunk)
            self.undelivered += report.undelivered
            time.sleep(self._pause)
