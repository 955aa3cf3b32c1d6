"""``meterwax reconcile``: recompute windows from the ledger and compare (exit 1 on mismatch)."""

from __future__ import annotations

import sys
from decimal import Decimal

import click

from meterwax.cli import config
from meterwax.cli.arguments import parse_instant, time_range
from meterwax.cli.options import CONTEXT, format_option, lake_option
from meterwax.cli.render import format_decimal, text_table, to_json
from meterwax.operators.aggregates import WindowValue
from meterwax.operators.timeline import from_micros
from meterwax.repair.reconcile import ReconcileReport, mismatch_counts, reconcile

_EXAMPLES = """
\b
Examples:
  meterwax reconcile --lake ./lake
  meterwax reconcile --lake ./lake --from 2026-01-01 --to 2026-02-01 --format json
  meterwax reconcile --lake ./lake --fix          # repair through audited corrections
"""


@click.command(epilog=_EXAMPLES, context_settings=CONTEXT)
@lake_option
@click.option("--from", "start", help="Windows starting at or after this time (or date).")
@click.option("--to", "end", help="Windows starting before this time (or date).")
@click.option("--fix", is_flag=True, help="Repair mismatches, with one audit row per change.")
@format_option("json")
def reconcile_command(
    lake: str | None,
    storage_options: dict[str, str] | None,
    start: str | None,
    end: str | None,
    fix: bool,
    output_format: str,
) -> None:
    """Check that every window equals its events in the ledger, and that no event is twice.

    Prints missing windows (ledger events without a row), extra windows (a row without
    events), wrong totals and duplicate ledger keys. Exits 1 if there is any, 0 if none.
    With --fix, repairs the windows through the same audited path as corrections and exits 0
    when the lake is consistent afterwards.
    """
    settings = config.load(config.LakeSettings, lake=lake, storage_options=storage_options)
    lake_root = settings.open_lake(writes=fix)
    since, until = time_range(
        parse_instant(start, option="--from") if start else None,
        parse_instant(end, option="--to") if end else None,
        options=("--from", "--to"),
    )
    report = reconcile(lake_root, since, until, fix=fix)
    if fix and (report.fixed or report.voided):
        after = reconcile(lake_root, since, until)
        _print(report, output_format, fixed=True)
        click.echo(
            f"after --fix: {len(after.mismatches)} mismatches, {len(after.duplicate_keys)} "
            "duplicate ledger keys",
            err=True,
        )
        sys.exit(0 if after.ok else 1)
    _print(report, output_format, fixed=False)
    sys.exit(0 if report.ok else 1)


reconcile_command.name = "reconcile"


def _quantity(value: WindowValue | None) -> str:
    if value is None:
        return "—"
    shown = (
        "no value"
        if value.quantity_nanos is None
        else format_decimal(Decimal(value.quantity_nanos).scaleb(-9))
    )
    return f"{shown} ({value.event_count})"


def _value_json(value: WindowValue) -> dict[str, object]:
    return {
        "quantity_nanos": value.quantity_nanos,
        "event_count": value.event_count,
        "unvalued_count": value.unvalued_count,
    }


def _print(report: ReconcileReport, output_format: str, *, fixed: bool) -> None:
    rows = [
        {
            "kind": m.kind,
            "tenant_id": m.key[0],
            "meter": m.key[1],
            "window_start_us": m.key[2],
            "group_key": m.key[3],
            "table": None
            if m.window is None
            else {**_value_json(m.window.value), "revision": m.window.revision},
            "ledger": None if m.ledger is None else _value_json(m.ledger),
        }
        for m in report.mismatches
    ]
    if output_format == "json":
        click.echo(
            to_json(
                {
                    "ok": report.ok,
                    "windows_checked": report.windows_checked,
                    "ledger_events": report.ledger_events,
                    "mismatches": rows,
                    "duplicate_keys": [
                        {"tenant_id": t, "id": i, "count": c} for t, i, c in report.duplicate_keys
                    ],
                    "misfiled_events": report.misfiled_events,
                    "pending_late_events": report.pending_late_events,
                    "pending_conflicts": report.pending_conflicts,
                    "pending_voids": report.pending_voids,
                    "fixed": len(report.fixed),
                    "voided": report.voided,
                }
            )
        )
        return
    counts = mismatch_counts(report)
    click.echo(
        f"checked {report.windows_checked:,} windows against {report.ledger_events:,} ledger "
        f"events: {counts['missing']} missing, {counts['extra']} extra, {counts['wrong']} wrong, "
        f"{len(report.duplicate_keys)} duplicate ledger keys"
    )
    if report.mismatches:
        click.echo(
            text_table(
                ["kind", "tenant_id", "meter", "window_start", "table (events)", "ledger (events)"],
                [
                    [
                        m.kind,
                        m.key[0],
                        m.key[1],
                        from_micros(m.key[2]),
                        _quantity(None if m.window is None else m.window.value),
                        _quantity(m.ledger),
                    ]
                    for m in report.mismatches[:200]
                ],
            )
        )
        if len(report.mismatches) > 200:
            click.echo(f"… and {len(report.mismatches) - 200} more (use --format json)")
    for tenant, event_id, count in report.duplicate_keys[:20]:
        click.echo(f"duplicate ledger key: tenant {tenant!r} id {event_id!r} × {count}")
    if report.misfiled_events:
        click.echo(
            f"{report.misfiled_events:,} ledger rows are not in the date partition of their "
            "event time (a table written by something else than meterwax?)"
        )
    if report.pending_voids:
        click.echo(
            f"{report.pending_voids:,} ledger rows are selected by a void in force and still "
            "count; run `meterwax corrections --once` to take them back"
        )
    if report.pending_late_events or report.pending_conflicts:
        click.echo(
            f"note: corrections are pending ({report.pending_late_events:,} late events, "
            f"{report.pending_conflicts:,} window conflicts not yet applied); run `meterwax "
            "corrections --once` first"
        )
    if fixed:
        voided = (
            f", voided {report.voided:,} later copies of duplicate keys" if report.voided else ""
        )
        click.echo(f"fixed {len(report.fixed)} windows with audit rows{voided}")
