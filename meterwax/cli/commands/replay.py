"""``meterwax replay``: re-read a range of a topic and repair the lake without double counting."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import click
from confluent_kafka import Consumer

from meterwax.cli import config
from meterwax.cli.arguments import parse_instant, parse_offsets, time_range
from meterwax.cli.options import CONTEXT, format_option, kafka_options, lake_option
from meterwax.cli.progress import Progress, counting
from meterwax.cli.render import text_table, to_json
from meterwax.errors import ConfigError
from meterwax.kafka.clients import read_watermarks
from meterwax.kafka.ranges import read_range, resolve_ranges
from meterwax.operators.timeline import from_micros
from meterwax.repair.replay import replay, summary

_EXAMPLES = """
\b
Examples:
  meterwax replay --brokers localhost:9092 --topic usage-events --lake ./lake \\
      --from-offsets 0:1200,1:950 --dry-run
  meterwax replay --brokers localhost:9092 --lake ./lake --from-time 2026-01-05T00:00:00Z \\
      --to-time 2026-01-06T00:00:00Z
"""


@click.command(epilog=_EXAMPLES, context_settings=CONTEXT)
@kafka_options
@lake_option
@click.option("--from-offsets", help="Start per partition, PARTITION:OFFSET[,…] (inclusive).")
@click.option("--from-time", help="Start at the first record at or after this time.")
@click.option("--to-offsets", help="End per partition, PARTITION:OFFSET[,…] (exclusive).")
@click.option("--to-time", help="End before the first record at or after this time.")
@click.option("--dry-run", is_flag=True, help="Print the window changes; write nothing.")
@format_option("json")
def replay_command(
    from_offsets: str | None,
    from_time: str | None,
    to_offsets: str | None,
    to_time: str | None,
    dry_run: bool,
    output_format: str,
    **flags: Any,
) -> None:
    """Re-read a range of the topic and count what the lake is missing, exactly once.

    Every message is classified as the main flow classified it: by the main flow's own
    processor and the rules the lake remembers, run from the start of the partition's log
    (so duplicates, late, too-late and future events are decided alike). Then an event already
    in the ledger counts nothing and a rejected message already in quarantine is left alone;
    missing events go into the ledger and every affected window is recomputed from the
    ledger, with an audit row (reason replay). Replaying a range that is already fully
    counted changes nothing. Only offsets the main flow has already passed can be replayed.
    """
    if (from_offsets is None) == (from_time is None):
        raise ConfigError("give exactly one of --from-offsets and --from-time")
    if to_offsets is not None and to_time is not None:
        raise ConfigError("give at most one of --to-offsets and --to-time")
    since, until = time_range(
        parse_instant(from_time, option="--from-time") if from_time else None,
        parse_instant(to_time, option="--to-time") if to_time else None,
        options=("--from-time", "--to-time"),
    )
    settings = config.load(config.ReplaySettings, **flags)
    cluster = settings.cluster()
    partitions = cluster.partitions(settings.topic)
    if partitions is None:
        raise ConfigError(f"topic {settings.topic!r} does not exist on {settings.brokers}")
    # Opened for writing first: a store that could lose a commit is refused before the
    # topic's identity is recorded in the lake.
    lake = settings.open_lake(writes=True)
    topic_id = cluster.topic_id(settings.topic)
    if topic_id is not None:  # a recreated topic's offsets are not the ones the lake read
        lake.check_source_identity(f"kafka:{settings.topic}", topic_id)
    consumer = cluster.client(
        Consumer,
        **{
            "group.id": "meterwax-replay",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "auto.offset.reset": "error",
        },
    )
    try:
        ranges = resolve_ranges(
            consumer,
            settings.topic,
            partitions,
            from_offsets=parse_offsets(from_offsets, option="--from-offsets")
            if from_offsets
            else None,
            from_time=since,
            to_offsets=parse_offsets(to_offsets, option="--to-offsets") if to_offsets else None,
            to_time=until,
        )
        # The main flow's decisions depend on everything before the range: each partition is
        # read from the start of its log, through the same processor, with the lake's rules.
        logs = {
            p: (read_watermarks(consumer, settings.topic, p)[0], stop)
            for p, (_, stop) in ranges.items()
        }
        progress = Progress(
            sum(stop - start for start, stop in logs.values()), f"replaying {settings.topic}"
        )
        report = replay(
            lake,
            settings.topic,
            ranges,
            counting(read_range(consumer, settings.topic, logs), progress),
            dry_run=dry_run,
        )
    finally:
        consumer.close()
    counts = summary(report)
    changes = [
        {
            "tenant_id": c.key[0],
            "meter": c.key[1],
            "window_start": from_micros(c.key[2]),
            "previous_quantity": None if c.previous is None else _quantity(c.previous[0]),
            "new_quantity": _quantity(c.new[0]),
            "previous_event_count": None if c.previous is None else c.previous[1],
            "new_event_count": c.new[1],
        }
        for c in report.changes
    ]
    if output_format == "json":
        click.echo(
            to_json(
                {
                    "dry_run": dry_run,
                    "ranges": {str(p): list(r) for p, r in ranges.items()},
                    **counts,
                    "changes": changes,
                }
            )
        )
        return
    verb = "would change" if dry_run else "changed"
    click.echo(
        f"meterwax replay {settings.topic} "
        + ", ".join(f"[{p}] {a}..{b - 1}" for p, (a, b) in ranges.items())
        + f": {counts['read']:,} read, {counts['already_counted']:,} already counted, "
        f"{counts['duplicates']:,} duplicates, {counts['inserted']:,} missing events counted, "
        f"{counts['quarantined']:,} missing rejects quarantined; {verb} "
        f"{counts['windows_changed']:,} windows"
    )
    if changes:
        click.echo(
            text_table(
                ["tenant_id", "meter", "window_start", "previous", "new", "events"],
                [
                    [
                        c["tenant_id"],
                        c["meter"],
                        c["window_start"],
                        c["previous_quantity"],
                        c["new_quantity"],
                        f"{c['previous_event_count'] or 0}→{c['new_event_count']}",
                    ]
                    for c in changes
                ],
            )
        )


replay_command.name = "replay"


def _quantity(nanos: int) -> Decimal:
    return Decimal(nanos).scaleb(-9)
