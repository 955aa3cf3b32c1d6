"""The "quix" contestant: Quix Streams doing the same dedupe and tumbling sum.

Runs in its own virtual environment (``.venv-quix``, see :mod:`meterwax.bench.quixenv`):
Quix Streams 3.28 requires confluent-kafka < 2.13 and pydantic < 2.14, older than what
meterwax's dependencies resolve to.

A fresh consumer group reads the topic from the beginning. Each message is parsed with the
contract model (``UsageEvent.model_validate_json``; invalid ones dropped), deduplicated by
(tenant, id) in Quix state (state is scoped by the message key, the tenant, so one state key
per id), re-timestamped with its event time (``set_timestamp``, the payload's timestamp in
ms), then summed per tenant in a tumbling 1-minute window with 30 s grace (Quix closes a
key's windows by that key's largest timestamp) into ``{meter: (nanos, count)}``: exact
integers.

Quix emits a window's final value only when a later message of the same key closes it, so the
last windows of every tenant would never come out of a bounded run. The pipeline therefore
uses ``.current()`` (every update of a window) and keeps the latest value per window: after
the last message that is exactly each window's final total, open windows included, as
Bytewax emits at EOF and meterwax at the end of its input. Late messages (their window
already closed) are dropped by Quix and counted through ``on_late``.

Stopping: Quix has no "read to the end" mode (``app.run(timeout=…)`` waits for an idle
period, which would be timed too). The end offsets are read before the start, the first
step tracks each message's partition and offset, and ``app.stop()`` is called when every
partition's last message has been processed; Quix then commits its checkpoint and
``app.run()`` returns. The window rows are then appended to Delta, inside the timing.
Changelog topics are off: the other contestants keep no replicated state either.

    .venv-quix/bin/python -m meterwax.bench.quix --brokers localhost:9092 --topic T --lake DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from pydantic import ValidationError
from quixstreams import Application, State, message_context

from meterwax.bench.totals import write_windows
from meterwax.operators.contract import UsageEvent

WINDOW_MS = 60_000
GRACE_MS = 30_000

Aggregate = dict[str, tuple[int, int]]
"""meter → (nanos, count) of one tenant's window (lists after a trip through Quix state)."""


def end_offsets(brokers: str, topic: str) -> dict[int, int]:
    """Each non-empty partition's end offset (the offset after its last message)."""
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": "meterwax-bench-ends"})
    try:
        partitions = consumer.list_topics(topic, timeout=15).topics[topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
            for p in partitions
        }
    finally:
        consumer.close()
    return {p: high for p, (low, high) in ends.items() if high > low}


class Run:
    """One bounded run: the counters, the windows seen and the stop condition."""

    def __init__(self, app: Application, ends: dict[int, int]) -> None:
        self.app = app
        self.ends = ends
        self.finished: set[int] = set()
        self.counts: Counter[str] = Counter()
        self.windows: dict[tuple[bytes, int], Aggregate] = {}

    def track(self, _value: bytes) -> None:
        """Count the message; stop once every partition's last message has been seen."""
        self.counts["read"] += 1
        context = message_context()
        if context.offset + 1 >= self.ends[context.partition]:
            self.finished.add(context.partition)
            if len(self.finished) == len(self.ends):
                self.app.stop()  # the loop ends after this message has gone through

    def parse(self, value: bytes) -> UsageEvent | None:
        """The contract model, straight from the bytes; invalid messages are dropped."""
        try:
            return UsageEvent.model_validate_json(value)
        except ValidationError:
            self.counts["invalid"] += 1
            return None

    def first_time(self, event: UsageEvent, state: State) -> bool:
        """True the first time this tenant's id is seen (state is per tenant)."""
        if state.exists(event.id):
            self.counts["duplicates"] += 1
            return False
        state.set(event.id, 1)
        return True

    def late(self, *_args: Any) -> bool:
        """A message for a closed window: dropped by Quix; counted, not logged."""
        self.counts["late"] += 1
        return False

    def keep(self, window: dict[str, Any], key: bytes, _timestamp: int, _headers: Any) -> None:
        """The latest value of each window (its final total once the topic is consumed)."""
        self.windows[key, window["start"]] = window["value"]

    def rows(self) -> list[tuple[str, str, int, int, int]]:
        """Window rows: (tenant_id, meter, window_start_us, nanos, count)."""
        return [
            (tenant.decode(), meter, start_ms * 1000, nanos, count)
            for (tenant, start_ms), aggregate in self.windows.items()
            for meter, (nanos, count) in aggregate.items()
        ]


def start(event: UsageEvent) -> Aggregate:
    """A window's first event."""
    return {event.meter: (event.quantity, 1)}


def add(aggregate: Aggregate, event: UsageEvent) -> Aggregate:
    """Sum nano-units and count, integers only; a new dict (the old one may be state)."""
    nanos, count = aggregate.get(event.meter, (0, 0))
    return {**aggregate, event.meter: (nanos + event.quantity, count + 1)}


def build(brokers: str, topic: str, state_dir: Path, ends: dict[int, int]) -> Run:
    """The application and its pipeline."""
    app = Application(
        broker_address=brokers,
        consumer_group=f"meterwax-bench-quix-{uuid.uuid4().hex[:12]}",
        auto_offset_reset="earliest",
        state_dir=str(state_dir),
        use_changelog_topics=False,
        loglevel=logging.WARNING,
    )
    run = Run(app, ends)
    source = app.topic(topic, key_deserializer="bytes", value_deserializer="bytes")
    sdf = app.dataframe(source)
    sdf = sdf.update(run.track)
    sdf = sdf.apply(run.parse).filter(lambda event: event is not None)
    sdf = sdf.filter(run.first_time, stateful=True)
    sdf = sdf.set_timestamp(lambda event, _key, _ts, _headers: event.timestamp // 1000)
    sdf = (
        sdf.tumbling_window(WINDOW_MS, grace_ms=GRACE_MS, name="usage", on_late=run.late)
        .reduce(add, start)
        .current()
    )
    sdf.update(run.keep, metadata=True)
    return run


def main() -> None:
    """Run once and print what it did as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--lake", type=Path, required=True)
    args = parser.parse_args()
    started = time.monotonic()
    ends = end_offsets(args.brokers, args.topic)
    run = build(args.brokers, args.topic, args.lake / "quix-state", ends)
    if ends:
        run.app.run()
    windows = write_windows(args.lake, run.rows())
    result = {**run.counts, "windows": windows, "seconds": round(time.monotonic() - started, 3)}
    print(json.dumps(result), flush=True)
    sys.stderr.flush()
    os._exit(0)  # skip interpreter teardown of delta-rs thread pools (see flows/cli.py)


if __name__ == "__main__":
    main()
