"""``meterwax demo``: a synthetic stream through the real flow."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click

from meterwax.cli import config
from meterwax.cli.commands.run import print_summary
from meterwax.cli.options import CONTEXT, storage_option
from meterwax.cli.render import text_table
from meterwax.cli.summary import RunReport
from meterwax.flows.corrections import run_corrections
from meterwax.flows.file_source import FileSource
from meterwax.flows.metering import run_to_lake
from meterwax.meters.apply import apply_catalog, plan_catalog
from meterwax.metrics import RunStats
from meterwax.operators.catalog import Aggregation, MeterDefinition
from meterwax.repair.reconcile import reconcile
from meterwax.reports.periods import Granularity, zone
from meterwax.reports.rollups import Rollup, rollup
from meterwax.sinks.storage import is_object_store
from meterwax.synthetic.generator import METERS, Workload, describe_intents, write_jsonl

_DEMO_EXAMPLES = """
\b
Examples:
  meterwax demo
  meterwax demo --lake /tmp/demo-lake --events 200000 --tenants 50
"""


@click.command(epilog=_DEMO_EXAMPLES, context_settings=CONTEXT)
@click.option(
    "--lake",
    default="./demo-lake",
    show_default=True,
    help="Lake to fill: a directory or an object-store URI.",
)
@click.option("--events", type=int, default=50_000, show_default=True, help="Messages to generate.")
@click.option("--tenants", type=int, default=12, show_default=True, help="Distinct tenants.")
@click.option("--seed", type=int, default=7, show_default=True, help="Generator seed.")
@storage_option
def demo(
    lake: str, events: int, tenants: int, seed: int, storage_options: dict[str, str] | None
) -> None:
    """Generate a realistic stream, meter it into a local lake, print usage per tenant and day.

    The stream has several tenants, meters and users, 2% retried duplicates, 1% late events
    and 0.1% invalid messages. A small meter catalog adds requests (count), active users
    (unique count) and peak CPU (max) to the sums. It runs through exactly the flows `meterwax
    run` and `meterwax corrections --once` use, then checks the result with `meterwax
    reconcile`.
    """
    settings = config.load(config.RunSettings, lake=lake, storage_options=storage_options)
    lake_root = settings.open_lake(writes=True)
    inputs = (
        Path(tempfile.gettempdir(), "meterwax-demo")  # the generated stream stays local
        if is_object_store(lake_root.root)
        else Path(lake_root.root, "_input")
    )
    input_path = inputs / f"demo-{seed}-{events}.jsonl"
    workload = Workload(events=events, tenants=tenants, seed=seed, users=DEMO_USERS)
    intents = write_jsonl(input_path, workload)
    click.echo(f"generated {events:,} messages into {input_path}: {describe_intents(intents)}")
    rules = settings.rules(lake_root.recorded_rules())
    lake_root.ensure_tables(rules)
    plan = plan_catalog(lake_root, DEMO_METERS)
    if not plan.nothing_to_do:
        apply_catalog(lake_root, plan, source_format="meterwax", note="meterwax demo")
    click.echo(
        f"meter catalog version {plan.proposed.version}: "
        + ", ".join(f"{m.name} ({m.aggregation.value})" for m in DEMO_METERS)
    )
    source = FileSource(
        [input_path],
        batch_size=settings.batch_size,
        lake=lake_root,
        max_line_bytes=rules.max_event_bytes,
    )
    stats = RunStats()
    started = time.monotonic()
    run_to_lake(
        source,
        source.partitions,
        lake_root,
        rules,
        stats=stats,
        epoch_interval_us=settings.snapshot_interval,
    )
    report = RunReport(stats, time.monotonic() - started, source.partitions)
    print_summary(report, f"meterwax run: {input_path.name} → {lake_root.root}", "table")
    fixed = run_corrections(lake_root, once=True).stats.snapshot()
    click.echo(
        f"\nmeterwax corrections --once: {fixed['late_read']:,} late events read, "
        f"{fixed['late_counted']:,} counted into their windows, {fixed['late_duplicates']:,} "
        f"duplicates; {fixed['windows_changed']:,} windows changed, each with an audit row"
    )
    check = reconcile(lake_root)
    click.echo(
        f"meterwax reconcile: {check.windows_checked:,} windows equal their "
        f"{check.ledger_events:,} ledger events: {'✓' if check.ok else '✗ MISMATCH'}"
    )
    rows = rollup(lake_root, Rollup(tz=zone("UTC"), granularity=Granularity.DAY))
    click.echo("\nusage per tenant, meter and day (UTC; `meterwax usage --granularity day`):")
    click.echo(
        text_table(
            ["tenant_id", "meter", "day", "events", "value"],
            [
                [
                    r["tenant_id"],
                    r["meter"],
                    r["period_start"].date().isoformat(),
                    r["event_count"],
                    r["quantity"],
                ]
                for r in rows
            ],
        )
    )
    if rows:
        click.echo(
            "\nactive_users counts distinct user_id over the whole day (not the sum of its "
            "windows);\nrequests counts api_calls events; peak_cpu is the largest cpu_seconds "
            "event.\n"
            f"\nnext: meterwax usage --lake {lake_root.root} --tenant {rows[0]['tenant_id']}\n"
            f"      meterwax meters show --lake {lake_root.root}\n"
            f"      meterwax corrections --lake {lake_root.root} --show --tenant "
            f"{rows[0]['tenant_id']}"
        )


DEMO_USERS = 40
"""Users per tenant in the demo stream (what the active_users meter counts)."""
DEMO_METERS = [
    *(MeterDefinition(name, name, Aggregation.SUM) for name in METERS),
    MeterDefinition("requests", "api_calls", Aggregation.COUNT),
    MeterDefinition("active_users", "api_calls", Aggregation.UNIQUE_COUNT, "dimensions.user_id"),
    MeterDefinition("peak_cpu", "cpu_seconds", Aggregation.MAX),
]
"""The demo's catalog: each event meter's sum under its own name (what meterwax counts without
a catalog), and three meters that are not sums."""
