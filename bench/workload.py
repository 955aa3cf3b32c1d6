"""Workload B1 (docs/benchmarks.md), loaded once into a fresh topic that every contestant reads.

B1 is the generator's stream with 1,000 tenants (``meterwax bench --tenants`` sets another
count), 3 meters, 2% retried duplicates, 1% late and 0.1% invalid events, keyed by tenant.
Three choices make the engines' totals comparable:

- ``late_follows_valid``: a late event lands behind the latest valid event of its own
  (tenant, meter), so it is late for per-key clocks (naive, quix) as for meterwax's
  per-partition watermark;
- no CloudEvents envelopes: the naive and quix contestants parse with the contract model
  (``UsageEvent``) directly, which knows only the native shape;
- event times end at the moment of the load, so no event is ahead of its Kafka timestamp
  (meterwax quarantines events more than 5 minutes in the future).

1,000 events per second of event time: 1M events span about 17 minutes, about 17 events per
(tenant, meter, minute) window.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from meterwax.kafka.clients import Cluster
from meterwax.kafka.producer import Record, RecordWriter
from meterwax.kafka.topics import ensure_topic
from meterwax.synthetic.generator import Workload, generate

EVENTS_PER_SECOND = 1000.0
TENANTS = 1000
"""B1's tenants; ``meterwax bench --tenants`` and the sweep run it with other counts."""
TOPIC_RETENTION_US = 7 * 86_400_000_000


def b1(
    events: int, *, tenants: int = TENANTS, end: datetime | None = None, seed: int = 1
) -> Workload:
    """Workload B1 with ``events`` messages from ``tenants`` tenants whose event times end at
    ``end`` (default now)."""
    last = end or datetime.now(UTC)
    return Workload(
        events=events,
        tenants=tenants,
        duplicates=0.02,
        late=0.01,
        invalid=0.001,
        cloudevents=0.0,
        events_per_second=EVENTS_PER_SECOND,
        late_follows_valid=True,
        start=last - timedelta(seconds=events / EVENTS_PER_SECOND),
        seed=seed,
    )


@dataclass(frozen=True)
class LoadedTopic:
    """The topic the contestants read, and what went into it."""

    topic: str
    partitions: int
    events: int
    tenants: int
    intents: dict[str, int]
    seconds: float


def load_topic(
    cluster: Cluster, events: int, partitions: int, tenants: int = TENANTS
) -> LoadedTopic:
    """Create a fresh topic and produce B1 (with ``tenants`` tenants) into it (idempotent
    producer, keyed by tenant)."""
    topic = f"meterwax-bench-{uuid.uuid4().hex[:12]}"
    ensure_topic(
        cluster,
        topic,
        partitions=partitions,
        replication_factor=1,
        retention_us=TOPIC_RETENTION_US,
    )
    started = time.monotonic()
    intents: Counter[str] = Counter()

    def records() -> Iterator[Record]:
        for message in generate(b1(events, tenants=tenants)):
            intents[message.intent] += 1
            yield Record(message.key, message.payload)

    report = RecordWriter(cluster, topic).write_all(records())
    if report.undelivered:
        msg = f"loading {topic}: {report.undelivered:,} messages undelivered"
        raise RuntimeError(msg + (f" ({report.describe_failures()})" if report.failed else ""))
    seconds = time.monotonic() - started
    return LoadedTopic(topic, partitions, events, tenants, dict(intents), seconds)


def delete_topic(cluster: Cluster, topic: str) -> None:
    """Drop the benchmark's topic (the broker may be shared with other work)."""
    for future in cluster.admin.delete_topics([topic], operation_timeout=30).values():
        future.result()
