"""``meterwax topics``: create the events topic with settings fit for billing replays."""

from __future__ import annotations

from typing import Any

import click

from meterwax.cli import config
from meterwax.cli.options import CONTEXT, kafka_options
from meterwax.durations import format_duration_us
from meterwax.errors import ConfigError
from meterwax.kafka.topics import ensure_topic

_TOPICS_EXAMPLES = """
\b
Examples:
  meterwax topics create --brokers localhost:9092 --partitions 4
  meterwax topics create --brokers kafka:9092 --topic usage-events --partitions 12 \\
      --replication-factor 3
"""

_CREATE_EXAMPLES = """
\b
Examples:
  meterwax topics create --brokers localhost:9092 --partitions 4
  meterwax topics create --brokers kafka:9092 --topic usage-events --partitions 12 \\
      --replication-factor 3 --retention 60d
"""


@click.group(epilog=_TOPICS_EXAMPLES, context_settings=CONTEXT)
def topics() -> None:
    """Manage the Kafka topic of usage events."""


@topics.command(epilog=_CREATE_EXAMPLES, context_settings=CONTEXT)
@kafka_options
@click.option("--partitions", type=int, help="Partitions: the unit of parallelism.  [required]")
@click.option("--replication-factor", type=int, help="Copies of every partition.  [default 1]")
@click.option(
    "--retention",
    help="How long messages stay replayable; keep it above the correction horizon (35d).  "
    "[default 40d]",
)
def create(**flags: Any) -> None:
    """Create the topic, or check that it exists with the same partition count.

    Settings: retention --retention (40 days by default: longer than the 35-day correction
    horizon, so a replay finds every event it may need), no size-based retention,
    cleanup.policy=delete (never compact: the key is the tenant), CreateTime timestamps,
    min.insync.replicas=2 when there are at least two replicas, no unclean leader election.

    Idempotent: if the topic exists with the same partition count it says so (and warns
    about settings that differ); with another count it fails with exit status 2.
    """
    settings = config.load(config.TopicSettings, **flags)
    if settings.partitions is None:
        msg = "give --partitions N (or set METERWAX_PARTITIONS)"
        raise ConfigError(msg)
    outcome = ensure_topic(
        settings.cluster(),
        settings.topic,
        partitions=settings.partitions,
        replication_factor=settings.replication_factor,
        retention_us=settings.retention,
    )
    if outcome.created:
        click.echo(
            f"created topic {settings.topic}: {outcome.partitions} partitions, replication "
            f"factor {settings.replication_factor}, retention "
            f"{format_duration_us(settings.retention)}"
        )
        return
    click.echo(f"topic {settings.topic} already exists with {outcome.partitions} partitions: OK")
    for difference in outcome.differences:
        click.echo(f"warning: {settings.topic} has {difference}", err=True)
