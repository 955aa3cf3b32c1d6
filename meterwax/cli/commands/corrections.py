"""``meterwax corrections``: run the correction flow, or show its audit trail."""

from __future__ import annotations

import sys
from typing import Any

import click
from bytewax.errors import BytewaxRuntimeError

from meterwax.cli import config
from meterwax.cli.options import CONTEXT, format_option, lake_option, metrics_option
from meterwax.cli.render import format_decimal, text_table, to_json
from meterwax.cli.stopping import stop_on_signals
from meterwax.durations import parse_duration_us
from meterwax.flows.corrections import run_corrections
from meterwax.metrics import RunStats, serve
from meterwax.sinks.lake import Lake
from meterwax.sinks.queries import literal, sql
from meterwax.sinks.schemas import USAGE_CORRECTIONS

_EXAMPLES = """
\b
Examples:
  meterwax corrections --lake ./lake --once
  meterwax corrections --lake ./lake                      # keep following new late events
  meterwax corrections --lake ./lake --show --tenant acme
"""


@click.command(epilog=_EXAMPLES, context_settings=CONTEXT)
@lake_option
@click.option("--once", is_flag=True, help="Apply everything pending now, then exit 0.")
@click.option(
    "--poll-interval",
    default="5s",
    show_default=True,
    help="How often to look for new late events when following.",
)
@metrics_option
@click.option("--show", is_flag=True, help="Print the audit trail (usage_corrections) instead.")
@click.option("--tenant", help="With --show: only this tenant.")
@format_option("json")
def corrections(
    lake: str | None,
    storage_options: dict[str, str] | None,
    once: bool,
    poll_interval: str,
    metrics_port: int | None,
    show: bool,
    tenant: str | None,
    output_format: str,
) -> None:
    """Fold late events into the windows they belong to, and record every change.

    Late events already in the ledger (a late retry of a counted event, however old) are
    duplicates and count nothing. Every changed window gets revision + 1 and one audit row in
    usage_corrections: previous and new totals, the delta, the late event ids, when and why.
    Rerunning, or crashing anywhere and rerunning, changes nothing more.
    """
    settings = config.load(config.LakeSettings, lake=lake, storage_options=storage_options)
    lake_root = settings.open_lake(writes=not show)
    if show:
        _show(lake_root, tenant, output_format)
        return
    stats = RunStats()
    if metrics_port is not None:
        serve(stats, metrics_port)
    with stop_on_signals() as stop:
        try:
            report = run_corrections(
                lake_root,
                once=once,
                poll_interval_s=parse_duration_us(poll_interval) / 1_000_000,
                stats=stats,
            )
        except (KeyboardInterrupt, BytewaxRuntimeError):
            if not stop.requested:
                raise
            # Every batch is applied whole or redone by the next run: nothing is half-done.
            click.echo(f"meterwax corrections: stopped by {stop.name}", err=True)
            sys.exit(stop.exit_code)
    counters = report.stats.snapshot()
    data = {
        "late_events_read": counters["late_read"],
        "counted": counters["late_counted"],
        "duplicates": counters["late_duplicates"],
        "quarantined": counters["late_quarantined"],
        "window_conflicts_read": counters["conflicts_read"],
        "voided": counters["voided"],
        "windows_changed": counters["windows_changed"],
        "audit_rows_written": counters["audit_rows"],
        "seconds": round(report.seconds, 3),
        "delta_commits": report.stats.commits,
    }
    if output_format == "json":
        click.echo(to_json(data))
        return
    click.echo(f"meterwax corrections: {lake_root.root}")
    for label, value in data.items():
        click.echo(f"  {label.replace('_', ' '):<24}{value:>12}")
    accounted = (
        data["counted"] + data["duplicates"] + data["quarantined"] == data["late_events_read"]
    )
    check = "✓" if accounted else "✗ MISMATCH"
    click.echo(f"  late events read = counted + duplicates + quarantined: {check}")


def _show(lake: Lake, tenant: str | None, output_format: str) -> None:
    where = f"WHERE tenant_id = {literal(tenant)}" if tenant else ""
    present = set(lake.table(USAGE_CORRECTIONS).schema().to_arrow().names)
    extra = [
        c
        for c in (
            "group_key",
            "aggregation",
            "catalog_version_before",
            "catalog_version_after",
            "void_id",
        )
        if c in present
    ]
    columns = ", ".join(
        [
            "tenant_id",
            "meter",
            "window_start",
            "revision",
            "previous_quantity",
            "new_quantity",
            "delta_quantity",
            "previous_event_count",
            "new_event_count",
            "late_event_ids",
            "reason",
            "corrected_at",
            *extra,
        ]
    )
    order = "tenant_id, meter, window_start" + (", group_key" if extra else "") + ", revision"
    rows = sql(
        lake,
        f"SELECT {columns} FROM usage_corrections {where} ORDER BY {order}",
        [USAGE_CORRECTIONS],
    ).to_pylist()
    if output_format == "json":
        click.echo(to_json(rows))
        return
    click.echo(
        text_table(
            [
                "tenant_id",
                "meter",
                "group",
                "window_start",
                "rev",
                "previous",
                "new",
                "delta",
                "events",
                "reason",
                "late event ids / void",
            ],
            [
                [
                    r["tenant_id"],
                    r["meter"],
                    r.get("group_key") or "",
                    r["window_start"],
                    r["revision"],
                    r["previous_quantity"],
                    r["new_quantity"],
                    _signed(r["delta_quantity"]),
                    f"{r['previous_event_count'] or 0}→{r['new_event_count']}",
                    r["reason"],
                    r.get("void_id") or _ids(r["late_event_ids"]),
                ]
                for r in rows
            ],
        )
    )
    click.echo(f"{len(rows):,} corrections")


def _signed(value: Any) -> str:
    if value is None:
        return ""
    text = format_decimal(value)
    return text if text.startswith("-") else "+" + text


def _ids(ids: list[str]) -> str:
    shown = ", ".join(ids[:3])
    return shown + (f" (+{len(ids) - 3} more)" if len(ids) > 3 else "")
