"""``meterwax usage``: window totals from the lake, or rolled up by calendar period."""

from __future__ import annotations

from typing import Any

import click

from meterwax.cli import config
from meterwax.cli.arguments import parse_as_of, parse_bound, time_range
from meterwax.cli.options import CONTEXT, format_option, lake_option
from meterwax.cli.render import csv_text, text_table, to_json
from meterwax.reports.periods import Granularity, zone
from meterwax.reports.rollups import Rollup, report_columns, rollup
from meterwax.reports.usage import UsageFilter, window_columns, window_rows

_USAGE_EXAMPLES = """
\b
Examples:
  meterwax usage --lake ./lake
  meterwax usage --lake ./lake --tenant acme --from 2026-01-01 --to 2026-02-01
  meterwax usage --lake ./lake --tenant acme --format json
  meterwax usage --lake ./lake --granularity day --tz Europe/Berlin --from 2026-03-01
  meterwax usage --lake ./lake --granularity month --meter api_calls --format csv
  meterwax usage --lake ./lake --granularity hour --group-by region --format json
  meterwax usage --lake ./lake --tenant acme --as-of 2026-02-01T00:00:00Z
"""


@click.command(epilog=_USAGE_EXAMPLES, context_settings=CONTEXT)
@lake_option
@click.option("--tenant", help="Only this tenant.")
@click.option("--meter", help="Only this meter.")
@click.option(
    "--from", "start", help="Windows starting at or after this time (a date: its start in --tz)."
)
@click.option("--to", "end", help="Windows starting before this time (a date: its start in --tz).")
@click.option(
    "--granularity",
    type=click.Choice([g.value for g in Granularity]),
    help="Roll windows up into calendar periods of --tz.  [default: one row per window]",
)
@click.option(
    "--tz",
    help="IANA time zone of periods, dates and printed times.  [env METERWAX_TZ; default UTC]",
)
@click.option(
    "--group-by",
    "group_by",
    metavar="DIMENSION",
    help="Total by this group column of catalog meters (no catalog: this event dimension, "
    "from the events ledger).",
)
@click.option(
    "--as-of",
    help="What the tables said at a Delta version (a number) or a time (RFC 3339): "
    "e.g. when an invoice was cut.",
)
@format_option("json", "csv")
def usage(
    lake: str | None,
    storage_options: dict[str, str] | None,
    tenant: str | None,
    meter: str | None,
    start: str | None,
    end: str | None,
    granularity: str | None,
    tz: str | None,
    group_by: str | None,
    as_of: str | None,
    output_format: str,
) -> None:
    """Print usage; quantities are exact decimals, never floats.

    Without --granularity or --group-by: one row per usage_windows row. With --granularity,
    windows are combined per calendar minute, hour, day or month in --tz (DST-aware: a
    Europe/Berlin day has 23, 24 or 25 hours), each meter by its aggregation (sums and counts
    add, min and max of the windows, latest by event time and id, unique counts over the
    whole period); a window is never split, so windows that cross a period boundary in that
    zone are refused. Catalog meters with groups have a column per group; --group-by keeps
    one of them. In a lake without a catalog, --group-by totals by an event dimension from
    the events ledger; late events count there once the correction flow has run.
    """
    settings = config.load(config.UsageSettings, lake=lake, tz=tz, storage_options=storage_options)
    tzinfo = zone(settings.tz)
    lower, upper = time_range(
        parse_bound(start, option="--from", tz=tzinfo) if start else None,
        parse_bound(end, option="--to", tz=tzinfo) if end else None,
        options=("--from", "--to"),
    )
    the_lake = settings.open_lake()
    if granularity is None and group_by is None:
        version = parse_as_of(as_of) if as_of else None
        rows = window_rows(the_lake, UsageFilter(tenant, meter, lower, upper, as_of=version))
        for row in rows:
            row["window_start"] = row["window_start"].astimezone(tzinfo)
            row["window_end"] = row["window_end"].astimezone(tzinfo)
        _print(rows, window_columns(rows), output_format, "windows")
        return
    query = Rollup(
        tz=tzinfo,
        granularity=Granularity(granularity) if granularity else None,
        tenant=tenant,
        meter=meter,
        start=lower,
        end=upper,
        group_by=group_by,
        as_of=parse_as_of(as_of) if as_of else None,
    )
    rows = rollup(the_lake, query)
    _print(rows, report_columns(query, rows), output_format, "periods")


def _print(rows: list[dict[str, Any]], columns: list[str], output_format: str, noun: str) -> None:
    if output_format == "json":
        click.echo(to_json(rows))
    elif output_format == "csv":
        click.echo(csv_text(columns, [[row.get(c) for c in columns] for row in rows]))
    else:
        shown = [c for c in columns if c != "window_end"]
        headers = ["events" if c == "event_count" else c for c in shown]
        click.echo(text_table(headers, [[row.get(c) for c in shown] for row in rows]))
        click.echo(f"{len(rows):,} {noun}")
