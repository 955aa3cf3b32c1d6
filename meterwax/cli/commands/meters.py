"""``meterwax meters``: the lake's meter catalog (apply a version, show one, list them)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import click

from meterwax.cli import config
from meterwax.cli.options import CONTEXT, format_option, lake_option
from meterwax.cli.progress import Progress
from meterwax.cli.render import format_decimal, text_table, to_json
from meterwax.errors import ConfigError
from meterwax.meters.apply import ApplyReport, applied_version, apply_catalog, plan_catalog
from meterwax.meters.documents import catalog_yaml, read_catalog_file
from meterwax.operators.aggregates import WindowValue
from meterwax.operators.catalog import CatalogError
from meterwax.operators.timeline import from_micros
from meterwax.sinks.catalog_table import CatalogStore

_EXAMPLES = """
\b
Examples:
  meterwax meters apply meters.yaml --lake ./lake --dry-run   # what would change, per window
  meterwax meters apply meters.yaml --lake ./lake
  meterwax meters apply openmeter.yaml --lake ./lake          # OpenMeter's meter definitions
  meterwax meters show --lake ./lake                          # the current version, as YAML
  meterwax meters show --lake ./lake --version 1
  meterwax meters history --lake ./lake
"""


@click.group(epilog=_EXAMPLES, context_settings=CONTEXT)
def meters() -> None:
    """The meter catalog: what is billed from the events, versioned in the lake.

    Meters count, sum, min, max, take the latest value or count unique values, with filters
    and groups, and are recomputed from the ledger when they change. Without a catalog every
    event meter is a sum of its quantity under its own name.
    """


@meters.command("apply", epilog=_EXAMPLES, context_settings=CONTEXT)
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@lake_option
@click.option("--dry-run", is_flag=True, help="Print what would change; write nothing.")
@click.option(
    "--retire",
    multiple=True,
    metavar="METER",
    help="Accept that this version drops METER: its windows stay as history (repeatable).",
)
@click.option("--note", help="A note stored with the version (why it changed).")
@format_option("json")
def apply_command(
    file: Path,
    lake: str | None,
    storage_options: dict[str, str] | None,
    dry_run: bool,
    retire: tuple[str, ...],
    note: str | None,
    output_format: str,
) -> None:
    """Store FILE as the lake's next meter catalog version and recompute what it changes.

    FILE is validated first (every problem names the meter and the key). Every window of
    every new or changed meter is recomputed from the ledger, with one audit row per changed
    window (reason meter_change, catalog versions before and after).

    FILE is YAML in meterwax's form (name, event_meter, aggregation, value, filter, group_by,
    unit) or OpenMeter's (slug, eventType, aggregation, valueProperty, groupBy). Running
    flows pick the new version up at their next commit: the main flow stops and says so
    (restart it), the correction flow follows. Repeating an apply is a no-op; an interrupted
    one is finished by running it again.
    """
    settings = config.load(config.LakeSettings, lake=lake, storage_options=storage_options)
    the_lake = settings.open_lake(writes=True)
    try:
        definitions, source_format = read_catalog_file(file)
    except CatalogError as error:
        raise ConfigError("invalid meter catalog:\n  " + "\n  ".join(error.problems)) from None
    if not dry_run:
        the_lake.ensure_tables(None)  # a catalog may come before the first run
    plan = plan_catalog(the_lake, definitions, retire=retire)
    if plan.nothing_to_do:
        click.echo(
            f"meter catalog version {plan.proposed.version} of {the_lake.root} already is "
            f"{file}: nothing to do"
        )
        return
    progress = Progress(0, "recomputing windows")

    def step(done: int, total: int) -> None:
        progress.total = total
        progress.update(done)

    report = apply_catalog(
        the_lake, plan, source_format=source_format, note=note, dry_run=dry_run, progress=step
    )
    _print_report(report, dry_run=dry_run, output_format=output_format)


def _print_report(report: ApplyReport, *, dry_run: bool, output_format: str) -> None:
    plan = report.plan
    if output_format == "json":
        click.echo(
            to_json(
                {
                    "dry_run": dry_run,
                    "version_before": plan.previous.version,
                    "version_after": plan.proposed.version,
                    "new": plan.new,
                    "changed": plan.changed,
                    "unchanged": plan.unchanged,
                    "retired": plan.retired,
                    "windows": [
                        {
                            "tenant_id": c.key[0],
                            "meter": c.key[1],
                            "window_start_us": c.key[2],
                            "group_key": c.key[3],
                            "revision": c.revision,
                            "previous": _value_json(c.previous),
                            "new": _value_json(c.new),
                        }
                        for c in report.changes
                    ],
                    "audit_rows_written": report.audited,
                }
            )
        )
        return
    verb = "would apply" if dry_run else "applied"
    resumed = " (finishing an interrupted apply)" if plan.resuming else ""
    click.echo(
        f"{verb} meter catalog version {plan.proposed.version} (was {plan.previous.version})"
        f"{resumed}"
    )
    for label, names in (
        ("new", plan.new),
        ("changed", plan.changed),
        ("unchanged", plan.unchanged),
        ("retired", plan.retired),
    ):
        if names:
            click.echo(f"  {label:<10} {', '.join(names)}")
    per_meter = report.per_meter()
    for name in sorted(per_meter):
        counts = per_meter[name]
        click.echo(
            f"  {name}: {counts['new']:,} windows new, {counts['changed']:,} changed, "
            f"{counts['emptied']:,} emptied"
        )
    if report.changes:
        click.echo(
            text_table(
                ["tenant_id", "meter", "group", "window_start", "old", "new"],
                [
                    [
                        c.key[0],
                        c.key[1],
                        c.key[3],
                        from_micros(c.key[2]),
                        _shown(c.previous),
                        _shown(c.new),
                    ]
                    for c in report.changes[:50]
                ],
            )
        )
        if len(report.changes) > 50:
            click.echo(f"… and {len(report.changes) - 50:,} more (use --format json)")
    if dry_run:
        click.echo("dry run: nothing written")
    else:
        click.echo(f"{report.audited:,} audit rows written (reason meter_change)")


def _shown(value: WindowValue | None) -> str:
    if value is None:
        return "—"
    if value.quantity_nanos is None:
        return f"no value ({value.event_count} events)"
    number = format_decimal(Decimal(value.quantity_nanos).scaleb(-9))
    return f"{number} ({value.event_count} events)"


def _value_json(value: WindowValue | None) -> dict[str, object] | None:
    if value is None:
        return None
    return {
        "quantity_nanos": value.quantity_nanos,
        "event_count": value.event_count,
        "unvalued_count": value.unvalued_count,
    }


@meters.command("show", epilog=_EXAMPLES, context_settings=CONTEXT)
@lake_option
@click.option("--version", "number", type=int, help="This version.  [default: the current one]")
@format_option("json")
def show_command(
    lake: str | None,
    storage_options: dict[str, str] | None,
    number: int | None,
    output_format: str,
) -> None:
    """Print a version of the lake's meter catalog (as YAML, the form `apply` takes)."""
    settings = config.load(config.LakeSettings, lake=lake, storage_options=storage_options)
    store = CatalogStore(settings.open_lake())
    catalog = store.current() if number is None else store.version(number)
    if output_format == "json":
        click.echo(
            to_json({"version": catalog.version, "meters": [m.as_dict() for m in catalog.meters]})
        )
        return
    if catalog.is_legacy:
        click.echo("# version 0: no catalog (every event meter is a sum of its quantity)")
        return
    click.echo(f"# meter catalog version {catalog.version}")
    click.echo(catalog_yaml(list(catalog.meters)), nl=False)


@meters.command("history", epilog=_EXAMPLES, context_settings=CONTEXT)
@lake_option
@format_option("json")
def history_command(
    lake: str | None, storage_options: dict[str, str] | None, output_format: str
) -> None:
    """List every version of the lake's meter catalog: when, by whom, why."""
    settings = config.load(config.LakeSettings, lake=lake, storage_options=storage_options)
    the_lake = settings.open_lake()
    rows = CatalogStore(the_lake).history().to_pylist()
    applied = applied_version(the_lake)
    for row in rows:
        row["recomputed"] = row["version"] <= applied
    if output_format == "json":
        click.echo(to_json(rows))
        return
    columns = ["version", "format", "applied_at", "applied_by", "recomputed", "note"]
    click.echo(text_table(columns, [[r[c] for c in columns] for r in rows]))
    click.echo(f"{len(rows):,} versions")
