"""The main metering flow: source partitions → partition processors → the lake.

::

    read (one batch per source read) ─► key by source partition ─► meter_<window>
        (decode, dedupe, watermark, windows; ColumnarPartitionMeter) ─► write (MeteringSink)

The flow is a factory so the command line passes a file or Kafka source and the lake sink,
and tests pass ``bytewax.testing`` sources and sinks.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from meterwax.durations import format_duration_us
from meterwax.flows.execution import execute
from meterwax.flows.steps import meter_partitions
from meterwax.metrics import RunStats
from meterwax.operators.catalog import LEGACY, Catalog, CatalogSchedule
from meterwax.operators.partition import MeteringRules
from meterwax.operators.records import PartitionOutput, SourceBatch, SourcePartition
from meterwax.sinks.catalog_table import CatalogChangedError, CatalogStore
from meterwax.sinks.lake import Lake
from meterwax.sinks.metering_sink import MeteringSink, recorded_progress

DEFAULT_EPOCH_US = 5_000_000
"""Bytewax epoch of the main flow: how often state is snapshotted and Delta commits happen."""
FLOW_ID = "meterwax_metering"
"""The main flow's Bytewax id. With the step ids below it names the recovery state: renaming
any of them makes a resume silently start empty, so they never change."""
READ_STEP = "read"
"""The source step; its snapshots are the source positions (see ``recovery``)."""


def meter_step_id(rules: MeteringRules) -> str:
    """The processor's step id; it names its recovery state, so it encodes the window length."""
    return f"meter_{format_duration_us(rules.window_us)}"


def build_flow(
    source: Source[SourceBatch],
    sink: Sink[tuple[str, PartitionOutput]],
    rules: MeteringRules,
    catalog: Catalog = LEGACY,
    schedules: Mapping[str, CatalogSchedule] | None = None,
) -> Dataflow:
    """Wire a source of :class:`SourceBatch` to a sink of keyed :class:`PartitionOutput`."""
    flow = Dataflow(FLOW_ID)
    batches = op.input(READ_STEP, flow, source)
    keyed = op.key_on("by_partition", batches, lambda batch: batch.where.key)
    outputs = meter_partitions(meter_step_id(rules), keyed, rules, catalog, schedules)
    op.output("write", outputs, sink)
    return flow


def run_to_lake(
    source: Source[SourceBatch],
    partitions: list[SourcePartition],
    lake: Lake,
    rules: MeteringRules,
    *,
    stats: RunStats,
    workers: int = 1,
    epoch_interval_us: int = DEFAULT_EPOCH_US,
    recovery_dir: Path | None = None,
    process_id: int | None = None,
    addresses: list[str] | None = None,
) -> None:
    """Create the lake's tables if needed, run the main flow to the end of its input.

    ``stats`` receives what was committed, also when the run is stopped early (a signal
    arrives as KeyboardInterrupt, or as Bytewax's runtime error wrapping it), so the caller
    can report it. The meter catalog is the lake's newest version, read once at the start
    (every process of a run reads the same); if a newer one is applied while the flow runs,
    its next commit stops it with :class:`CatalogChangedError` (see ``catalog_table``).
    With ``addresses``, this process is number ``process_id`` of a
    multi-process run. A deliberate meterwax error raised inside the dataflow (a Kafka or
    lake failure) is raised as itself, not wrapped in Bytewax's.
    """
    lake.ensure_tables(rules)
    catalogs = CatalogStore(lake)
    catalog = catalogs.current()
    stats.catalog_version = catalog.version
    # Where each partition starts counting with this version (its offsets before were
    # decided under an older one, and are decided so again when read again).
    firsts = {}
    for partition in partitions:
        finished = recorded_progress(lake, partition)
        firsts[partition.key] = 0 if finished is None else finished + 1
    catalogs.record_switches(firsts, catalog.version)
    schedules = {p.key: catalogs.schedule(p.key, catalog) for p in partitions}
    sink = MeteringSink(
        lake,
        partitions,
        stats=stats,
        catalog_version=catalog.version,
        on_catalog_change=stop_for_new_catalog,
    )
    flow = build_flow(source, sink, rules, catalog, schedules)
    with fewer_gc_passes():
        execute(
            flow,
            workers=workers,
            epoch_interval_us=epoch_interval_us,
            recovery_dir=recovery_dir,
            process_id=process_id,
            addresses=addresses,
        )


EXIT_CATALOG_CHANGED = 2
"""The exit code of a main flow stopped by a newer meter catalog (a deliberate error's)."""


def stop_for_new_catalog(error: CatalogChangedError) -> None:
    """Stop this process now: a newer meter catalog was applied while it ran.

    The error comes up inside a sink's epoch snapshot, where Bytewax cannot unwind an
    exception cleanly (with several partitions it aborts the process with a Rust panic). An
    immediate exit is as safe as the SIGKILL the fault tests use (nothing of the unfinished
    epoch was committed under the old catalog, and a restart redoes it under the new one),
    and it says what happened and what to do.
    """
    sys.stderr.write(f"error: {error}\n")
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(EXIT_CATALOG_CHANGED)


@contextmanager
def fewer_gc_passes() -> Iterator[None]:
    """Run the cyclic garbage collector ~70× less often while a flow runs.

    The flow allocates millions of small tuples (events, rows), none of them in reference
    cycles, so reference counting frees them all; but every 700 allocations CPython's cyclic
    collector also walks the young objects, which cost about a quarter of the partition
    processor's time on the 1M-event benchmark (10.7 → 8.1 µs an event). Cycles, if any,
    are still collected, just in larger sweeps.
    """
    previous = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*previous)
