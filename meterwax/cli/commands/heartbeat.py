"""``meterwax heartbeat``: wall-clock heartbeats into every partition, so idle windows close."""

from __future__ import annotations

import logging
import time
from typing import Any

import click

from meterwax.cli import config
from meterwax.cli.options import CONTEXT, kafka_options
from meterwax.cli.stopping import stop_on_signals
from meterwax.durations import format_duration_us
from meterwax.errors import BrokerError
from meterwax.kafka.clients import Cluster
from meterwax.kafka.heartbeat import send_heartbeats
from meterwax.kafka.producer import RecordWriter

log = logging.getLogger(__name__)

_HEARTBEAT_EXAMPLES = """
\b
Examples:
  meterwax heartbeat --brokers localhost:9092 --topic usage-events
  meterwax heartbeat --brokers localhost:9092 --every 30s
  meterwax heartbeat --brokers localhost:9092 --once
"""


@click.command(epilog=_HEARTBEAT_EXAMPLES, context_settings=CONTEXT)
@kafka_options
@click.option("--every", help="Time between heartbeats.  [env METERWAX_EVERY; default 10s]")
@click.option("--once", is_flag=True, help="Write one heartbeat to every partition, then exit.")
@click.pass_context
def heartbeat(ctx: click.Context, once: bool, **flags: Any) -> None:
    """Write a heartbeat with the current UTC time to every partition of the topic.

    The main flow's clock is the event time in the log, so a partition without traffic never
    closes its last windows. A heartbeat advances its partition to wall-clock time: windows
    ending more than the allowed lateness before it close. Heartbeats are records in the log,
    so replays close the same windows. Run one heartbeat process per topic.

    Caveat: once heartbeats run, an event that reaches Kafka more than the allowed lateness
    after its event time is late (it goes to the correction flow). Raise --allowed-lateness
    of `meterwax run` above your producers' delay, or stop heartbeats during backfills.

    Exit status: with --once, 1 if a heartbeat was not delivered. Without it, failures are
    reported on stderr and the next round retries; Ctrl-C or SIGTERM stops it.
    """
    settings = config.load(config.HeartbeatSettings, **flags)
    cluster = settings.cluster()
    writer = RecordWriter(cluster, settings.topic)
    if once:
        if not _round(writer, cluster, announce=True):
            ctx.exit(1)
        return
    every_s = settings.every / 1_000_000
    click.echo(
        f"heartbeats every {format_duration_us(settings.every)} to every partition of "
        f"{settings.topic} on {cluster.brokers} (Ctrl-C to stop)",
        err=True,
    )
    rounds = 0
    with stop_on_signals() as stop:
        try:
            due = time.monotonic()
            while True:
                try:
                    _round(writer, cluster, announce=rounds == 0)
                except BrokerError as error:  # e.g. brokers unreachable: the next round retries
                    click.echo(f"error: {error}", err=True)
                rounds += 1
                due = max(due + every_s, time.monotonic())
                time.sleep(due - time.monotonic())
        except KeyboardInterrupt:
            if not stop.requested:
                raise
    click.echo(f"stopped by {stop.name} after {rounds:,} rounds of heartbeats", err=True)
    ctx.exit(stop.exit_code)


def _round(writer: RecordWriter, cluster: Cluster, *, announce: bool) -> bool:
    """One heartbeat to every partition; report problems on stderr. True if all delivered."""
    partitions, report = send_heartbeats(writer, cluster)
    if report.undelivered:
        click.echo(
            f"error: {report.undelivered} of {report.sent} heartbeats to {writer.topic} were not "
            f"delivered: {report.describe_failures() or 'no confirmation'}",
            err=True,
        )
        return False
    line = f"heartbeat written to partitions {_ranges(partitions)} of {writer.topic}"
    if announce:
        click.echo(line)
    else:
        log.info(line)
    return True


def _ranges(numbers: list[int]) -> str:
    """``[0, 1, 2, 5]`` → ``0-2, 5``."""
    spans: list[list[int]] = []
    for number in numbers:
        if spans and number == spans[-1][1] + 1:
            spans[-1][1] = number
        else:
            spans.append([number, number])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
