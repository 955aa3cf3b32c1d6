"""``meterwax void``: take counted events back, with an audit trail, without touching the ledger."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import click
import pyarrow.compute as pc

from meterwax.cli import config
from meterwax.cli.arguments import parse_bound
from meterwax.cli.options import CONTEXT, format_option, lake_option
from meterwax.cli.render import format_decimal, text_table, to_json
from meterwax.durations import parse_duration_us
from meterwax.errors import ConfigError
from meterwax.faults import crash_point
from meterwax.operators.aggregates import WindowValue
from meterwax.operators.corrections import describe_windows
from meterwax.operators.timeline import format_micros, from_micros, to_micros
from meterwax.operators.voids import DEFAULT_MAX_RANGE_US, VoidRule, VoidRuleError, check_rule
from meterwax.reports.periods import zone
from meterwax.sinks.corrections_store import CorrectionStore, VoidOutcome
from meterwax.sinks.lake import Lake
from meterwax.sinks.schemas import EVENTS
from meterwax.sinks.voids_table import RecordedVoid

_EXAMPLES = """
\b
Examples:
  # a deployment bug sent every event twice, under new ids: void the copies
  meterwax void --lake ./lake --tenant acme --id e-9a1 --id e-9a2 --reason "INC-42" --dry-run
  meterwax void --lake ./lake --tenant acme --id e-9a1 --id e-9a2 --reason "INC-42"
  # test traffic sent to production with a real tenant id
  meterwax void --lake ./lake --tenant acme --source load-test --from 2026-03-02T10:00:00Z \\
      --to 2026-03-02T11:00:00Z --reason "load test against prod"
  meterwax void --lake ./lake --list
  meterwax void --lake ./lake --undo void-3f2a9c0e1b7d4a65 --reason "voided the wrong hour"
"""


@click.command(epilog=_EXAMPLES, context_settings=CONTEXT)
@lake_option
@click.option("--tenant", help="The tenant whose events are voided.")
@click.option("--id", "ids", multiple=True, metavar="ID", help="An event id to void (repeatable).")
@click.option("--meter", help="With a range: only events of this meter.")
@click.option("--source", help="With a range: only events with this source.")
@click.option(
    "--from",
    "start",
    help="With --to: void event times in [from, to) (RFC 3339, or a date: its start in --tz).",
)
@click.option("--to", "end", help="End of the range (exclusive).")
@click.option(
    "--tz",
    help="IANA time zone of dates given to --from/--to, as in `usage`.  "
    "[env METERWAX_TZ; default UTC]",
)
@click.option("--reason", help="Why (kept with the void, shown in every audit row's void).")
@click.option("--dry-run", is_flag=True, help="Print the events and windows it would change.")
@click.option(
    "--max-range",
    default="31d",
    show_default=True,
    help="The widest range voided without --force.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Void a range wider than --max-range, or a tenant with no events yet.",
)
@click.option("--undo", "undo_id", metavar="VOID_ID", help="Undo a void: its events count again.")
@click.option("--list", "list_voids", is_flag=True, help="List the lake's voids.")
@format_option("json")
def void(
    lake: str | None,
    storage_options: dict[str, str] | None,
    tenant: str | None,
    ids: tuple[str, ...],
    meter: str | None,
    source: str | None,
    start: str | None,
    end: str | None,
    tz: str | None,
    reason: str | None,
    dry_run: bool,
    max_range: str,
    force: bool,
    undo_id: str | None,
    list_voids: bool,
    output_format: str,
) -> None:
    """Void counted events: they stop counting in every window, now and if they come again.

    A void is a durable rule kept in the lake (void_rules) with who, when and why: by ids,
    or by a time range of one tenant (optionally one meter, one source). The events it
    selects stay in the ledger and are listed in voided_events; every window they were in is
    recomputed, for every meter of the catalog, with one usage_corrections row each (reason
    void, the void's id). Events it selects that arrive later (late, replayed, sent again)
    are voided by the correction flow. Repeating a void changes nothing. To amend an event,
    void it and send the corrected event with a new id.
    """
    settings = config.load(config.UsageSettings, lake=lake, tz=tz, storage_options=storage_options)
    the_lake = settings.open_lake(writes=True)
    store = CorrectionStore(the_lake)
    if list_voids:
        _list(store, output_format)
        return
    if undo_id is not None:
        _undo(store, undo_id, reason, dry_run=dry_run, output_format=output_format)
        return
    rule = _rule(tenant, ids, meter, source, start, end, zone(settings.tz))
    try:
        check_rule(
            rule,
            reason or "",
            max_range_us=parse_duration_us(max_range) if max_range else DEFAULT_MAX_RANGE_US,
            force=force,
        )
    except VoidRuleError as error:
        raise ConfigError(f"--{error.setting.replace('_', '-')}: {error.problem}") from None
    _refuse_catalog_meter(store, rule.meter)
    if not force and not _has_events(the_lake, rule.tenant_id):
        msg = (
            f"--tenant {rule.tenant_id!r}: the ledger has no events of this tenant (a typo?); "
            "--force records the void anyway, for events still to come"
        )
        raise ConfigError(msg)
    assert reason is not None  # checked above
    if dry_run:
        recorded = RecordedVoid(rule, rule.void_id, reason, None, from_micros(0), False)
        existing = store.voids.all().get(rule.void_id)
        outcome = store.apply_void(recorded, dry_run=True)
        _report(rule, existing, outcome, reason, dry_run=True, output_format=output_format)
        return
    recorded, new = store.voids.record(rule, reason)
    crash_point("void.after_rule")
    outcome = store.apply_void(recorded)
    _report(
        rule, None if new else recorded, outcome, reason, dry_run=False, output_format=output_format
    )


def _rule(
    tenant: str | None,
    ids: tuple[str, ...],
    meter: str | None,
    source: str | None,
    start: str | None,
    end: str | None,
    tz: ZoneInfo,
) -> VoidRule:
    if not tenant:
        raise ConfigError("--tenant: required (voids are per tenant)")
    if (start is None) != (end is None):
        raise ConfigError("--from and --to: give both (the range is [from, to))")
    if ids and start is not None:
        raise ConfigError("--id and --from/--to: a void is by ids or by a range, not both")
    if not ids and start is None:
        raise ConfigError("nothing to void: give --id ID (repeatable) or --from and --to")
    return VoidRule(
        tenant,
        ids,
        meter,
        source,
        to_micros(parse_bound(start, option="--from", tz=tz)) if start else None,
        to_micros(parse_bound(end, option="--to", tz=tz)) if end else None,
    )


def _has_events(lake: Lake, tenant: str) -> bool:
    if not lake.exists(EVENTS):
        return False
    found = (
        lake.table(EVENTS)
        .to_pyarrow_dataset()
        .to_table(columns=["tenant_id"], filter=pc.field("tenant_id") == tenant)
    )
    return found.num_rows > 0


def _report(
    rule: VoidRule,
    existing: RecordedVoid | None,
    outcome: VoidOutcome,
    reason: str,
    *,
    dry_run: bool,
    output_format: str,
) -> None:
    changes = outcome.correction.changes
    missing = sorted(set(rule.ids) - {c.event.id for c in outcome.matched})
    if output_format == "json":
        click.echo(
            to_json(
                {
                    "void_id": rule.void_id,
                    "dry_run": dry_run,
                    "already_recorded": existing is not None,
                    "selects": rule.describe(),
                    "reason": reason,
                    "matched": len(outcome.matched),
                    "voided": len(outcome.voided),
                    "ids_not_in_ledger": missing,
                    "events": [_event_json(c.event) for c in outcome.voided],
                    "windows": [
                        {
                            "tenant_id": c.key[0],
                            "meter": c.key[1],
                            "window_start": format_micros(c.key[2]),
                            "group_key": c.key[3],
                            "revision": c.revision,
                            "previous": _value(c.previous),
                            "new": _value(c.new),
                        }
                        for c in changes
                    ],
                    "audit_rows_written": len(outcome.correction.audited),
                }
            )
        )
        return
    verb = "would void" if dry_run else "voided"
    click.echo(f"{rule.void_id}: {rule.describe()}")
    if existing is not None:
        click.echo(f"  already recorded ({existing.reason!r}): nothing new to record")
    already = len(outcome.matched) - len(outcome.voided)
    click.echo(
        f"  {verb} {len(outcome.voided):,} events"
        + (f" ({already:,} more it selects were voided already)" if already else "")
    )
    if rule.ids:
        click.echo(
            f"  {len(rule.ids) - len(missing):,} of {len(rule.ids):,} ids are in the ledger"
            + (
                f"; not (yet) there: {', '.join(missing[:10])}"
                + (" …" if len(missing) > 10 else "")
                + " (voided if they arrive)"
                if missing
                else ""
            )
        )
    if outcome.voided:
        click.echo(
            text_table(
                ["id", "meter", "event_time", "quantity"],
                [
                    [
                        c.event.id,
                        c.event.meter,
                        from_micros(c.event.time_us),
                        _quantity(c.event.quantity_nanos),
                    ]
                    for c in outcome.voided[:20]
                ],
            )
        )
        if len(outcome.voided) > 20:
            click.echo(f"  … and {len(outcome.voided) - 20:,} more (use --format json)")
    if changes:
        click.echo(
            text_table(
                ["meter", "group", "window_start", "old", "new"],
                [
                    [c.key[1], c.key[3], from_micros(c.key[2]), _shown(c.previous), _shown(c.new)]
                    for c in changes[:50]
                ],
            )
        )
    click.echo(
        f"  {len(changes):,} windows "
        + (
            "would change: nothing written (dry run)"
            if dry_run
            else f"changed, "
            f"{len(outcome.correction.audited):,} audit rows (reason void, {rule.void_id})"
        )
    )


def _undo(
    store: CorrectionStore, void_id: str, reason: str | None, *, dry_run: bool, output_format: str
) -> None:
    if not reason or not reason.strip():
        raise ConfigError("--reason: required with --undo (say why it is undone)")
    known = store.voids.all().get(void_id)
    if known is None:
        raise ConfigError(
            f"--undo {void_id}: is not a void of this lake (see `meterwax void --list`)"
        )
    if dry_run:
        state = "was undone already" if known.undone else "would undo"
        click.echo(f"{state} {void_id}: {known.rule.describe()} ({known.reason!r})")
        return
    # Undone already: an undo interrupted after its rule was recorded is finished here (its
    # windows are recomputed; those already back are left alone).
    again = known.undone
    if not again:
        _refuse_overflow(store, void_id)
        store.voids.undo(void_id, reason)
        crash_point("void.after_undo_rule")
    correction = store.undo_void(void_id)
    if output_format == "json":
        click.echo(
            to_json(
                {
                    "undone": void_id,
                    "undone_before": again,
                    "windows_changed": len(correction.changes),
                }
            )
        )
        return
    click.echo(
        f"{'was undone already; checked ' if again else 'undid '}{void_id}: "
        f"{len(correction.changes):,} windows changed back, "
        f"{len(correction.audited):,} audit rows (reason void_undone)"
    )


def _refuse_catalog_meter(store: CorrectionStore, meter: str | None) -> None:
    """ConfigError for ``--meter`` naming a catalog meter that is no event's meter.

    Voids select events, by the ``meter`` field they were sent with; a catalog meter's name
    (``requests``) would select nothing and be recorded as a rule that never matches.
    """
    catalog = store.catalog
    if meter is None or catalog.is_legacy or catalog.meters_for(meter):
        return
    named = catalog.meter(meter)
    if named is not None:
        msg = (
            f"--meter {meter!r}: a catalog meter, not an event meter; voids select events by "
            f"the meter they were sent with: --meter {named.event_meter!r}"
        )
        raise ConfigError(msg)


def _refuse_overflow(store: CorrectionStore, void_id: str) -> None:
    """ConfigError if counting the void's events again takes a sum past decimal(38, 9)."""
    over = store.undo_overflows(void_id)
    if not over:
        return
    msg = (
        f"--undo {void_id}: its events counted again would take {len(over):,} windows past "
        f"decimal(38, 9) (29 digits before the point), e.g. {describe_windows(over)}: events "
        "counted since the "
        "void fill them. Nothing was undone"
    )
    raise ConfigError(msg)


def _list(store: CorrectionStore, output_format: str) -> None:
    rows = [
        {
            "void_id": v.void_id,
            "selects": v.rule.describe(),
            "reason": v.reason,
            "requested_by": v.requested_by,
            "at": v.requested_at,
            "in_force": not v.undone,
        }
        for v in sorted(store.voids.all().values(), key=lambda v: v.requested_at)
    ]
    if output_format == "json":
        click.echo(to_json(rows))
        return
    columns = ["void_id", "in_force", "selects", "reason", "requested_by", "at"]
    click.echo(text_table(columns, [[r[c] for c in columns] for r in rows]))
    click.echo(f"{len(rows):,} voids")


def _event_json(event: Any) -> dict[str, Any]:
    return {
        "id": event.id,
        "meter": event.meter,
        "event_time": format_micros(event.time_us),
        "quantity_nanos": event.quantity_nanos,
    }


def _value(value: WindowValue | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return {"quantity_nanos": value.quantity_nanos, "event_count": value.event_count}


def _quantity(nanos: int | None) -> str:
    return "—" if nanos is None else format_decimal(Decimal(nanos).scaleb(-9))


def _shown(value: WindowValue | None) -> str:
    if value is None:
        return "—"
    return f"{_quantity(value.quantity_nanos)} ({value.event_count} events)"
