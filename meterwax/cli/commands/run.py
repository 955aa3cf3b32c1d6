"""``meterwax run``: the main flow over input files or a Kafka topic."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import click
from bytewax.errors import BytewaxRuntimeError

from meterwax.cli import config, secrets
from meterwax.cli.options import (
    CONTEXT,
    format_option,
    kafka_options,
    lake_option,
    metrics_option,
    rules_options,
)
from meterwax.cli.progress import watch_progress
from meterwax.cli.render import to_json
from meterwax.cli.stopping import stop_on_signals
from meterwax.cli.summary import RunReport, render_summary, summary_data
from meterwax.errors import ConfigError
from meterwax.flows.file_source import FileSource
from meterwax.flows.kafka_source import KafkaSource
from meterwax.flows.metering import run_to_lake
from meterwax.flows.recovery import (
    SINGLE,
    Member,
    default_directory,
    hold_store,
    prepare_store,
    source_positions,
    store_identity,
)
from meterwax.flows.store_agreement import agree_on_stores
from meterwax.metrics import RunStats, serve
from meterwax.operators.partition import MeteringRules
from meterwax.operators.records import SourcePartition
from meterwax.sinks.lake import Lake

_RUN_EXAMPLES = """
\b
Examples:
  meterwax run --input events.jsonl --lake ./lake
  meterwax run --input a.jsonl --input b.jsonl --lake ./lake --workers 2
  METERWAX_WINDOW=5m meterwax run --input events.jsonl --lake ./lake --format json
  meterwax run --brokers localhost:9092 --topic usage-events --lake ./lake
  meterwax run --brokers localhost:9092 --lake ./lake --recovery-dir /var/lib/meterwax/rec
  meterwax run --brokers localhost:9092 --lake ./lake --stop-at-end --workers 2
  meterwax run --brokers kafka:9092 --lake s3://bucket/lake -i 0 -a "w0:2101;w1:2101"
"""

_KAFKA_ONLY = ("topic", "stop_at_end", "kafka_config", "recovery")


@click.command(epilog=_RUN_EXAMPLES, context_settings=CONTEXT)
@click.option(
    "--input",
    "inputs",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON Lines file of events (repeat for several; each file is one partition).",
)
@kafka_options
@click.option(
    "--stop-at-end",
    is_flag=True,
    default=None,
    help="Kafka: stop at the end the topic had when the run started (default: tail forever).",
)
@lake_option
@rules_options
@click.option(
    "--workers", type=int, help="Worker threads in this process (per process).  [default 1]"
)
@click.option("--batch-size", type=int, help="Messages read per batch.  [default 2500]")
@click.option(
    "--snapshot-interval",
    "--commit-interval",
    "snapshot_interval",
    help="Bytewax epoch: how often state is snapshotted and Delta commits happen.  [default 5s]",
)
@click.option(
    "--recovery-dir",
    help="Bytewax recovery store: created when missing, resumed when present. "
    "[Kafka default: <state dir>/recovery/<lake+topic hash>; files: none]",
)
@click.option(
    "--state-dir",
    help="Where default recovery stores live.  [env METERWAX_STATE_DIR; default ./.meterwax]",
)
@click.option(
    "--no-recovery",
    "recovery",
    flag_value=False,
    default=None,
    help="Kafka input: do not keep a recovery store (every start re-reads the topic).",
)
@metrics_option
@click.option(
    "-i", "--process-id", type=int, help="Multi-process: this process's index in --addresses."
)
@click.option(
    "-a",
    "--addresses",
    help="Multi-process: every process's HOST:PORT, ';'-separated, the same for all.",
)
@format_option("json", help_text="Summary format.")
@click.pass_context
def run(
    ctx: click.Context,
    inputs: tuple[Path, ...],
    output_format: str,
    **flags: Any,
) -> None:
    """Run the main flow over input files to their end, or over a Kafka topic.

    Validates every event, drops duplicates, counts on-time events into the ledger and into
    tumbling windows, sends late events to late_events and rejected input to quarantine.
    Re-running the same input changes nothing.

    Kafka input (--brokers) reads every partition of the topic and tails it until stopped
    (Ctrl-C or SIGTERM: what was committed stays committed), or with --stop-at-end up to the
    end the topic had when the run started. It keeps a Bytewax recovery store (snapshots every
    --snapshot-interval) and resumes from it after a stop or a crash; the lake's Delta
    transaction log makes whatever is replayed count exactly once. Several processes share
    the partitions with -i/-a (start one `meterwax run` per address).
    """
    if inputs:
        if flags["brokers"] is not None:
            msg = "--input and --brokers are mutually exclusive: read files or a topic, not both"
            raise ConfigError(msg)
        for name in _KAFKA_ONLY:
            if flags[name] is not None:
                flag = "--" + name.replace("_", "-")
                msg = f"{flag} is for Kafka input (--brokers), not for --input files"
                raise ConfigError(msg)
    settings = config.load(config.RunSettings, **flags)
    if not inputs and settings.brokers is None:
        msg = "nothing to read: give --input FILE or --brokers HOST:PORT (or set METERWAX_BROKERS)"
        raise ConfigError(msg)
    addresses = settings.cluster_addresses()
    lake = settings.open_lake(writes=True)
    rules = settings.rules(lake.recorded_rules())
    lake.ensure_tables(rules)  # before the recovery store, which records the lake id
    source: FileSource | KafkaSource
    if inputs:
        source = FileSource(
            list(inputs),
            batch_size=settings.batch_size,
            lake=lake,
            max_line_bytes=rules.max_event_bytes,
        )
        label = what = ", ".join(p.name for p in inputs)
    else:
        source = KafkaSource(
            settings.cluster(),
            settings.topic,
            batch_size=settings.batch_size,
            stop_at_end=settings.stop_at_end,
        )
        label = f"kafka:{settings.topic}"
        topic_id = settings.cluster().topic_id(settings.topic)
        if topic_id is not None:
            lake.check_source_identity(label, topic_id)
        what = f"{label} ({len(source.partitions)} partitions)"
    if addresses is not None:
        what += f", process {settings.process_id} of {len(addresses)}"
    member = SINGLE if addresses is None else Member(settings.process_id, len(addresses))
    recovery_dir = _recovery_store(
        ctx, settings, lake, source.partitions, rules, member, kafka=not inputs
    )
    if recovery_dir is not None:
        what += f", recovery {recovery_dir}"
    stats = RunStats()
    if settings.metrics_port is not None:
        serve(stats, settings.metrics_port)
    title = f"meterwax run: {what} → {settings.lake} ({config.describe_rules(rules)})"
    tailing = not inputs and not settings.stop_at_end
    progress = (
        _progress(source, recovery_dir, stats, f"reading {label}")
        if not tailing and addresses is None  # bounded work in one process: show how far
        else nullcontext()
    )
    with stop_on_signals() as stop, progress:
        if tailing:
            # A service's first log line: what it reads and writes, and how to stop it.
            click.echo(f"{title}: tailing (Ctrl-C or SIGTERM stops it)", err=True)
        started = time.monotonic()
        try:
            if member.processes > 1:
                # Every process's store must be the one it ran with, all resume at one epoch,
                # and all run with the same lake, input and settings: the processes compare
                # their stores and setups before the flow starts.
                setup = (
                    ("lake", f"id {lake.ledger_id()}"),
                    ("input", label),
                    ("input partitions", str(len(source.partitions))),
                    ("rules", config.describe_rules(rules)),
                    ("--workers", str(settings.workers)),
                    ("--addresses", ";".join(addresses or [])),
                    ("recovery", "a store" if recovery_dir is not None else "--no-recovery"),
                )
                agree_on_stores(recovery_dir, member, addresses or [], setup=setup)
            run_to_lake(
                source,
                source.partitions,
                lake,
                rules,
                stats=stats,
                workers=settings.workers,
                epoch_interval_us=settings.snapshot_interval,
                recovery_dir=recovery_dir,
                process_id=settings.process_id,
                addresses=addresses,
            )
        except (KeyboardInterrupt, BytewaxRuntimeError):
            if not stop.requested:
                raise
        report = RunReport(
            stats,
            time.monotonic() - started,
            source.partitions,
            settings.workers,
            stop.name or None,
        )
    print_summary(report, title, output_format)
    if report.stopped_by:
        ctx.exit(stop.exit_code)


def _recovery_store(
    ctx: click.Context,
    settings: config.RunSettings,
    lake: Lake,
    partitions: list[SourcePartition],
    rules: MeteringRules,
    member: Member,
    *,
    kafka: bool,
) -> Path | None:
    """The prepared recovery store of this run, held until the command ends, or None.

    Kafka input keeps one by default, under ``--state-dir``; file input only with
    ``--recovery-dir`` (a rerun of a file reads it again and the lake skips what it holds).
    Each process of a cluster keeps its own.
    """
    if settings.recovery_dir is None and not (kafka and settings.recovery):
        return None
    identity = store_identity(lake, partitions, rules.window_us)
    if settings.recovery_dir is not None:
        directory, flag = Path(settings.recovery_dir), "--recovery-dir"
    else:
        directory = default_directory(Path(settings.state_dir), identity, member)
        flag = "--state-dir"
    try:
        ctx.with_resource(hold_store(directory))
        prepare_store(directory, identity, member=member)
    except OSError as error:
        msg = (
            f"cannot use the recovery store {directory} ({flag}): {error.strerror}; "
            "give a writable --recovery-dir or --state-dir"
        )
        raise ConfigError(msg) from None
    return directory


def _progress(
    source: FileSource | KafkaSource, recovery_dir: Path | None, stats: RunStats, label: str
) -> AbstractContextManager[None]:
    """Progress of a bounded run: committed reads out of what is left from where it resumes."""
    positions = source_positions(recovery_dir) if recovery_dir is not None else {}
    return watch_progress(lambda: stats.count("read"), source.backlog(positions), label)


def print_summary(report: RunReport, title: str, output_format: str) -> None:
    """Print a run's summary as a table or JSON."""
    data = summary_data(report, title=title)
    if report.stopped_by:
        data["stopped_by"] = report.stopped_by
    if output_format == "json":
        click.echo(secrets.redact(to_json(data)))
        return
    click.echo(secrets.redact(render_summary(data)))
    if report.stopped_by:
        click.echo(
            f"  stopped by {report.stopped_by}: the numbers above are what was committed; "
            "a rerun skips what was committed and does the rest"
        )
