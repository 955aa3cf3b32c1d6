"""``meterwax usage``: window totals from the lake."""

from __future__ import annotations

import click

from meterwax.flows import config
from meterwax.flows.commands.options import CONTEXT, lake_option
from meterwax.flows.render import text_table, to_json
from meterwax.flows.usage import UsageFilter, window_rows
from meterwax.sinks.lake import Lake
from meterwax.sinks.queries import parse_as_of, parse_instant

_USAGE_EXAMPLES = """
\b
Examples:
  meterwax usage --lake ./lake
  meterwax usage --lake ./lake --tenant acme --from 2026-01-01 --to 2026-02-01
  meterwax usage --lake ./lake --tenant acme --format json
  meterwax usage --lake ./lake --tenant acme --as-of 2026-02-01T00:00:00Z
"""


@click.command(epilog=_USAGE_EXAMPLES, context_settings=CONTEXT)
@lake_option
@click.option("--tenant", help="Only this tenant.")
@click.option("--meter", help="Only this meter.")
@click.option("--from", "start", help="Windows starting at or after this time (or date).")
@click.option("--to", "end", help="Windows starting before this time (or date).")
@click.option(
    "--as-of",
    help="What the table said at a Delta version (a number) or a time (RFC 3339): "
    "e.g. when an invoice was cut.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
)
def usage(
    lake: str | None,
    tenant: str | None,
    meter: str | None,
    start: str | None,
    end: str | None,
    as_of: str | None,
    output_format: str,
) -> None:
    """Print window totals from usage_windows (quantities are exact decimals)."""
    settings = config.load(config.LakeSettings, lake=lake)
    usage_filter = UsageFilter(
        tenant=tenant,
        meter=meter,
        start=parse_instant(start, option="--from") if start else None,
        end=parse_instant(end, option="--to") if end else None,
        as_of=parse_as_of(as_of) if as_of else None,
    )
    rows = window_rows(Lake(settings.lake), usage_filter)
    if output_format == "json":
        click.echo(to_json(rows))
        return
    click.echo(
        text_table(
            ["tenant_id", "meter", "window_start", "quantity", "events", "revision"],
            [
                [
                    r["tenant_id"],
                    r["meter"],
                    r["window_start"],
                    r["quantity"],
                    r["event_count"],
                    r["revision"],
                ]
                for r in rows
            ],
        )
    )
    click.echo(f"{len(rows):,} windows")
