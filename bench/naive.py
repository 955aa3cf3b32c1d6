"""The "naive" contestant: the per-item Bytewax pipeline one would write first.

Bytewax's own Kafka source (``tail=False``: it ends at the end of every partition) → parse
each message with the contract model (``UsageEvent.model_validate_json``; invalid messages
are dropped) → key by ``tenant:meter`` → ``stateful_map`` dedupe holding a set of ids per
key → ``fold_window``: tumbling 1-minute windows aligned to the epoch, summing exact integer
nano-units and counts → window rows appended to one Delta table.

The clock is pure event time (notes on Bytewax 0.21, windowing pitfalls 1 and 2): the
watermark is the key's largest event time minus 30 s, ``now_getter`` is a constant and
``to_system_utc`` returns None, so neither the wall clock nor downtime decides anything and
the operator never busy-waits. Windows still open at the end of the topic are emitted at EOF.

Rows are appended by a single writer, buffered and committed every few seconds (about one
Bytewax epoch) and at EOF. The read batch is meterwax's default (10,000), so the difference
with meterwax is the per-item processing, not the size of Kafka reads.

    python -m meterwax.bench.naive --brokers localhost:9092 --topic T --lake DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bytewax.operators as op
import bytewax.operators.windowing as win
from bytewax.connectors.kafka import KafkaSource, KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.operators.windowing import EventClock, TumblingWindower
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main
from pydantic import ValidationError

from meterwax.bench.totals import write_windows
from meterwax.operators.contract import UsageEvent

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WINDOW = timedelta(minutes=1)
WAIT = timedelta(seconds=30)
BATCH_SIZE = 10_000
FLUSH_EVERY_S = 5.0

Row = tuple[str, str, int, int, int]
"""(tenant_id, meter, window_start_us, quantity_nanos, count)"""

COUNTS: Counter[str] = Counter()
"""What the flow saw (one worker, so a plain Counter is enough)."""


def parse(message: KafkaSourceMessage[bytes, bytes]) -> UsageEvent | None:
    """The contract model, straight from the bytes; invalid messages are dropped."""
    COUNTS["read"] += 1
    try:
        return UsageEvent.model_validate_json(message.value or b"")
    except ValidationError:
        COUNTS["invalid"] += 1
        return None


def dedupe(seen: set[str] | None, event: UsageEvent) -> tuple[set[str], UsageEvent | None]:
    """Drop an id this key has seen before (a set per key: simple, and it only grows)."""
    if seen is None:
        seen = set()
    if event.id in seen:
        COUNTS["duplicates"] += 1
        return seen, None
    seen.add(event.id)
    return seen, event


def _is_event(event: UsageEvent | None) -> bool:
    return event is not None


def event_time(event: UsageEvent) -> datetime:
    """The event's time as an aware datetime, exact to the microsecond."""
    return EPOCH + timedelta(microseconds=event.timestamp)


def add(total: tuple[int, int], event: UsageEvent) -> tuple[int, int]:
    """Sum nano-units and count: integers, never floats."""
    return total[0] + event.quantity, total[1] + 1


def merge(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    """Tumbling windows never merge, but fold_window asks for a merger."""
    return a[0] + b[0], a[1] + b[1]


def to_row(item: tuple[str, tuple[int, tuple[int, int]]]) -> Row:
    """(``tenant:meter``, (window id, (nanos, count))) → a window row."""
    key, (window_id, (nanos, count)) = item
    tenant, meter = key.rsplit(":", 1)
    start_us = window_id * (WINDOW // timedelta(microseconds=1))
    return tenant, meter, start_us, nanos, count


def count_late(_item: object) -> None:
    """Late events (their key's clock passed their window): dropped, counted."""
    COUNTS["late"] += 1


class _DeltaPartition(StatelessSinkPartition[Row]):
    def __init__(self, lake: Path) -> None:
        self._lake = lake
        self._rows: list[Row] = []
        self._flushed = time.monotonic()

    def write_batch(self, items: list[Row]) -> None:
        self._rows.extend(items)
        if time.monotonic() - self._flushed >= FLUSH_EVERY_S:
            self._flush()

    def close(self) -> None:
        self._flush()

    def _flush(self) -> None:
        COUNTS["windows"] += write_windows(self._lake, self._rows)
        COUNTS["delta_commits"] += bool(self._rows)
        self._rows = []
        self._flushed = time.monotonic()


class DeltaWindowSink(DynamicSink[Row]):
    """Append window rows to ``<lake>/windows`` (one worker, so one writer)."""

    def __init__(self, lake: Path) -> None:
        self._lake = lake

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _DeltaPartition:
        """One buffer per worker."""
        return _DeltaPartition(self._lake)


def build_flow(brokers: str, topic: str, lake: Path) -> Dataflow:
    """The naive pipeline from the Kafka topic to the Delta table."""
    flow = Dataflow("naive_metering")
    messages = op.input(
        "kafka", flow, KafkaSource([brokers], [topic], tail=False, batch_size=BATCH_SIZE)
    )
    events = op.filter_map("parse", messages, parse)
    keyed = op.key_on("tenant_meter", events, lambda e: f"{e.tenant_id}:{e.meter}")
    unique = op.filter_value("unique", op.stateful_map("dedupe", keyed, dedupe), _is_event)
    clock = EventClock(
        event_time,
        wait_for_system_duration=WAIT,
        now_getter=lambda: EPOCH,
        to_system_utc=lambda _t: None,
    )
    windows = win.fold_window(
        "sum", unique, clock, TumblingWindower(WINDOW, EPOCH), lambda: (0, 0), add, merge
    )
    op.inspect("late", windows.late, lambda _step, item: count_late(item))
    op.output("delta", op.map("row", windows.down, to_row), DeltaWindowSink(lake))
    return flow


def main() -> None:
    """Run the pipeline once and print what it did as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--lake", type=Path, required=True)
    args = parser.parse_args()
    started = time.monotonic()
    run_main(build_flow(args.brokers, args.topic, args.lake))
    result = {**COUNTS, "seconds": round(time.monotonic() - started, 3)}
    print(json.dumps(result), flush=True)
    sys.stderr.flush()
    os._exit(0)  # skip interpreter teardown of delta-rs thread pools (see flows/cli.py)


if __name__ == "__main__":
    main()
