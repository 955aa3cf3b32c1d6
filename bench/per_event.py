"""What one event costs, step by step: the measurement behind "how fast can a Python process go".

The main flow's throughput is bounded by the Python work it does per event, on the one core
that holds the interpreter lock. This times each step a counted event cannot skip, on B1's
own messages, in the flow's settings (the cyclic garbage collector as rarely as the flow runs
it, batches as large as a partition's default read), and compares their sum with the
time per event a given throughput allows:

- ``decode``: bytes → a validated event (msgspec's decode in C, then the exact quantity and
  the instant, which are Python), the fast path every valid message takes;
- ``dedupe key`` and ``content fingerprint``: the idempotency key's 12-byte digest and the
  32 bits that tell a retry from a conflicting duplicate;
- ``window update``: adding the quantity to its open window;
- ``ledger columns``: the event's Arrow columns for the ``events`` table;
- ``whole processor``: the processor over the same batches (all of the above plus
  classification, counters, window closing and the dedupe index's upkeep), both the per-event
  reference (``PartitionMeter``) and the columnar one the flow runs
  (``ColumnarPartitionMeter``).

    python -m meterwax.bench.per_event --events 200000 --floor 386250

``--floor`` is the floor's events per second from a ``meterwax bench`` run on the same
machine: the report then says how many microseconds per event half of it leaves, and how many
the unavoidable steps alone take. Timings are the best of ``--repeat`` passes.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from meterwax.bench.workload import b1
from meterwax.operators import fast_validate
from meterwax.operators.columnar import ColumnarPartitionMeter
from meterwax.operators.dedupe import content_fingerprint, dedupe_key
from meterwax.operators.event import Event
from meterwax.operators.fast_validate import fast_event
from meterwax.operators.partition import MeteringRules, PartitionMeter
from meterwax.operators.records import DEFAULT_BATCH_SIZE, SourceBatch, SourcePartition
from meterwax.operators.timeline import MINUTE_US
from meterwax.operators.windows import OpenWindows
from meterwax.sinks.arrow_rows import event_columns
from meterwax.synthetic.generator import generate

BATCH = DEFAULT_BATCH_SIZE
"""Messages per batch: a partition's read, as ``meterwax run`` makes it by default."""


def _best_us_per_event(step: Callable[[], object], events: int, repeat: int) -> float:
    """The fastest of ``repeat`` passes of ``step``, in microseconds per event."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - started)
    return round(best / events * 1e6, 3)


def _batches(items: Sequence[Any]) -> list[Sequence[Any]]:
    return [items[i : i + BATCH] for i in range(0, len(items), BATCH)]


def measure(events: int, repeat: int) -> dict[str, float]:
    """Microseconds per event of each step, over ``events`` B1 messages."""
    payloads = [m.payload for m in itertools.islice(generate(b1(events)), events)]
    decoded = [fast_event(p) for p in payloads if p]
    valid: list[Event] = [e for e in decoded if e is not None]
    plain = [p for p, e in zip((p for p in payloads if p), decoded, strict=True) if e is not None]
    count = len(valid)

    def msgspec_only() -> object:
        decoder = fast_validate._NATIVE  # the fast path's own decoder, constraints and all
        return [decoder.decode(p) for p in plain]

    def window_updates() -> object:
        windows = OpenWindows(MINUTE_US)
        return [
            windows.add(e.tenant_id, e.meter, e.time_us - e.time_us % MINUTE_US, e.quantity_nanos)
            for e in valid
        ]

    def processor(kind: type[PartitionMeter]) -> Callable[[], object]:
        def run() -> object:
            where = SourcePartition("file:per-event", 0)
            meter = kind(where, MeteringRules(max_future_us=None))
            offsets = range(len(payloads))
            return [
                meter.process(
                    SourceBatch(where, list(offsets[i : i + BATCH]), payloads[i : i + BATCH])
                )
                for i in range(0, len(payloads), BATCH)
            ]

        return run

    steps: dict[str, Callable[[], object]] = {
        "decode": lambda: [fast_event(p) for p in plain],
        "  of which msgspec (C)": msgspec_only,
        "dedupe key": lambda: [dedupe_key(e.tenant_id, e.id) for e in valid],
        "content fingerprint": lambda: [
            content_fingerprint(e.meter, e.quantity_nanos, e.time_us) for e in valid
        ],
        "window update": window_updates,
        "ledger columns": lambda: [event_columns(chunk) for chunk in _batches(valid)],
        "whole processor, per event": processor(PartitionMeter),
        "whole processor, columnar": processor(ColumnarPartitionMeter),
    }
    previous = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)  # as the flow runs (flows.metering.fewer_gc_passes)
    try:
        return {name: _best_us_per_event(step, count, repeat) for name, step in steps.items()}
    finally:
        gc.set_threshold(*previous)


UNAVOIDABLE = ("decode", "dedupe key", "content fingerprint", "window update", "ledger columns")
"""The steps every counted event needs, whatever the shape of the processor around them."""


def report(costs: dict[str, float], floor: float | None) -> dict[str, Any]:
    """The costs, their unavoidable sum, and the budget per event half the floor leaves."""
    result: dict[str, Any] = {"us_per_event": costs}
    result["unavoidable_us_per_event"] = round(sum(costs[name] for name in UNAVOIDABLE), 3)
    if floor:
        result["floor_events_per_s"] = floor
        result["budget_at_half_floor_us"] = round(1e6 / (floor / 2), 3)
    return result


def render(result: dict[str, Any]) -> str:
    lines = [f"{'step':<26}{'µs/event':>10}"]
    lines += [f"{name:<26}{cost:>10.3f}" for name, cost in result["us_per_event"].items()]
    lines.append(f"{'unavoidable steps, summed':<26}{result['unavoidable_us_per_event']:>10.3f}")
    if "budget_at_half_floor_us" in result:
        lines.append(
            f"{'budget at 0.5× floor':<26}{result['budget_at_half_floor_us']:>10.3f}"
            f"  (floor {result['floor_events_per_s']:,.0f} events/s, one core)"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--floor", type=float, help="the floor's events/s on this machine")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    result = report(measure(args.events, args.repeat), args.floor)
    print(render(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
