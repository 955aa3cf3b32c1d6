"""``meterwax run``: the main flow over input files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from meterwax.flows import config
from meterwax.flows.commands.options import CONTEXT, lake_option, rules_options
from meterwax.flows.file_source import FileSource
from meterwax.flows.metering import RunReport, run_to_lake
from meterwax.flows.render import to_json
from meterwax.flows.summary import render_summary, summary_data
from meterwax.sinks.lake import Lake

_RUN_EXAMPLES = """
\b
Examples:
  meterwax run --input events.jsonl --lake ./lake
  meterwax run --input a.jsonl --input b.jsonl --lake ./lake --workers 2
  METERWAX_WINDOW=5m meterwax run --input events.jsonl --lake ./lake --format json
"""


@click.command(epilog=_RUN_EXAMPLES, context_settings=CONTEXT)
@click.option(
    "--input",
    "inputs",
    multiple=True,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON Lines file of events (repeat for several; each file is one partition).",
)
@lake_option
@rules_options
@click.option("--workers", type=int, help="Worker threads in this process.  [default 1]")
@click.option("--batch-size", type=int, help="Messages read per batch.  [default 10000]")
@click.option(
    "--commit-interval", help="How often Delta commits happen (Bytewax epoch).  [default 5s]"
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Summary format.",
)
def run(inputs: tuple[Path, ...], output_format: str, **flags: Any) -> None:
    """Run the main flow over input files to their end, then print a summary.

    Validates every event, drops duplicates, counts on-time events into the ledger and into
    tumbling windows, sends late events to late_events and rejected input to quarantine.
    Re-running the same input changes nothing.
    """
    settings = config.load(config.RunSettings, **flags)
    source = FileSource(list(inputs), batch_size=settings.batch_size)
    report = run_to_lake(
        source,
        source.partitions,
        Lake(settings.lake),
        settings.rules(),
        workers=settings.workers,
        epoch_interval_us=settings.commit_interval,
    )
    names = ", ".join(p.name for p in inputs)
    print_summary(
        report, f"meterwax run: {names} → {settings.lake} ({settings.describe()})", output_format
    )


def print_summary(report: RunReport, title: str, output_format: str) -> None:
    """Print a run's summary as a table or JSON."""
    data = summary_data(report, title=title)
    click.echo(to_json(data) if output_format == "json" else render_summary(data))
