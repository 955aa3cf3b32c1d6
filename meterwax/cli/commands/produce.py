"""``meterwax produce``: the demo's synthetic workload into a Kafka topic (or a JSONL file)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from meterwax.cli import config
from meterwax.cli.arguments import parse_instant
from meterwax.cli.options import CONTEXT, kafka_options
from meterwax.cli.progress import Progress
from meterwax.cli.stopping import stop_on_signals
from meterwax.errors import ConfigError
from meterwax.kafka.producer import DeliveryReport, Record, RecordWriter
from meterwax.synthetic.generator import (
    Generated,
    Workload,
    describe_intents,
    generate,
    write_jsonl,
)

_PRODUCE_EXAMPLES = """
\b
Examples:
  meterwax produce --brokers localhost:9092 --topic usage-events --events 100000
  meterwax produce --brokers localhost:9092 --events 1000000 --tenants 1000 --seed 1
  meterwax produce --brokers localhost:9092 --events 600000 --rate 1000 --start now
  meterwax produce --events 50000 --invalid 0.01 --output events.jsonl
"""


@click.command(epilog=_PRODUCE_EXAMPLES, context_settings=CONTEXT)
@kafka_options
@click.option("--events", type=int, help="Messages to produce, duplicates included.  [10000]")
@click.option("--rate", type=float, help="At most this many messages per second.  [unlimited]")
@click.option("--tenants", type=int, help="Distinct tenants (the message keys).  [20]")
@click.option("--duplicates", type=float, help="Share of retried duplicates.  [0.02]")
@click.option("--late", type=float, help="Share of late events.  [0.01]")
@click.option("--invalid", type=float, help="Share of invalid messages.  [0.001]")
@click.option("--seed", type=int, help="Generator seed; a seed and --start fix the stream.  [7]")
@click.option(
    "--start",
    help="Event time of the first message (RFC 3339, or 'now').  [with --rate: now; "
    "without: early enough that the last event time is now]",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the messages to this JSON Lines file instead of Kafka.",
)
@click.pass_context
def produce(
    ctx: click.Context,
    start: str | None,
    output: Path | None,
    **flags: Any,
) -> None:
    """Produce the demo's synthetic usage stream, keyed by tenant, to a Kafka topic.

    The stream has several tenants and meters, retried duplicates, late and invalid events
    (the shares are options), and is the same for the same --seed and --start. The producer
    is idempotent and waits for every in-sync replica; the command exits 1 if any message
    was not delivered. Event times advance with --rate (200 per second without it).
    """
    if output is not None:
        for name in ("brokers", "rate"):
            if flags[name] is not None:
                msg = f"--output writes a file instead of producing: drop --{name}"
                raise ConfigError(msg)
    settings = config.load(config.ProduceSettings, **flags)
    if settings.duplicates + settings.late + settings.invalid >= 1:
        msg = "--duplicates, --late and --invalid together must stay below 1"
        raise ConfigError(msg)
    workload = _workload(settings, start)
    if output is not None:
        intents = write_jsonl(output, workload)
        click.echo(f"wrote {settings.events:,} messages to {output}: {describe_intents(intents)}")
        return
    report, intents, seconds, stopped = _produce(settings, workload)
    delivered = f"{report.delivered:,} of {report.sent:,}"
    rate = report.delivered / seconds if seconds > 0 else 0.0
    click.echo(
        f"produced {delivered} messages to {settings.topic} in {seconds:.1f}s "
        f"({rate:,.0f}/s): {describe_intents(intents)}"
    )
    if report.undelivered:
        click.echo(
            f"error: {report.undelivered:,} of {report.sent:,} messages were not delivered"
            + (f": {report.describe_failures()}" if report.failed else ""),
            err=True,
        )
    if stopped is not None:
        ctx.exit(stopped)
    if report.undelivered:
        ctx.exit(1)


def _workload(settings: config.ProduceSettings, start: str | None) -> Workload:
    """The generator's workload; event times end now unless --start or --rate say otherwise."""
    per_second = settings.rate or Workload.events_per_second
    now = datetime.now(UTC)
    if start is None:
        first = now if settings.rate else now - timedelta(seconds=settings.events / per_second)
    elif start.strip().lower() == "now":
        first = now
    else:
        first = parse_instant(start, option="--start")
    return Workload(
        events=settings.events,
        tenants=settings.tenants,
        duplicates=settings.duplicates,
        late=settings.late,
        invalid=settings.invalid,
        seed=settings.seed,
        start=first,
        events_per_second=per_second,
    )


def _produce(
    settings: config.ProduceSettings, workload: Workload
) -> tuple[DeliveryReport, Counter[str], float, int | None]:
    """Produce the workload; returns the delivery report, intents sent, seconds, stop code."""
    cluster = settings.cluster()
    partitions = cluster.require_partitions(settings.topic)
    progress = Progress(settings.events, f"{settings.topic} ({len(partitions)} partitions)")
    intents: Counter[str] = Counter()

    def records(messages: Iterator[Generated]) -> Iterator[Record]:
        for message in messages:
            intents[message.intent] += 1
            yield Record(message.key, message.payload)

    def show(report: DeliveryReport) -> None:
        progress.update(
            report.sent,
            lambda: f"{report.delivered:,} delivered, {sum(report.failed.values()):,} failed",
        )

    started = time.monotonic()
    writer = RecordWriter(cluster, settings.topic, rate=settings.rate, on_progress=show)
    stopped: int | None = None
    with stop_on_signals() as stop:
        try:
            writer.write_all(records(generate(workload)))
        except KeyboardInterrupt:
            if not stop.requested:
                raise
            stopped = stop.exit_code
            writer.flush()  # what was handed over is still delivered and counted
    report = writer.report
    progress.finish(report.sent, f"{report.delivered:,} delivered")
    return report, intents, time.monotonic() - started, stopped
