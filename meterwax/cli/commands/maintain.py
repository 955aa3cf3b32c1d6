"""``meterwax maintain``: compact, vacuum and checkpoint tables, safely while flows run."""

from __future__ import annotations

import click

from meterwax.cli import config
from meterwax.cli.options import CONTEXT, format_option, lake_option
from meterwax.cli.render import text_table, to_json
from meterwax.durations import parse_duration_us
from meterwax.errors import ConfigError, LakeError, RetentionFloorError
from meterwax.sinks.maintenance import (
    RETENTION_FLOOR,
    Plan,
    TableReport,
    maintain_table,
)
from meterwax.sinks.schemas import ALL_TABLES

_FLOOR = RETENTION_FLOOR
_MAINTAIN_EXAMPLES = f"""
\b
Examples:
  meterwax maintain --lake ./lake
  meterwax maintain --lake ./lake --compact --checkpoint
  meterwax maintain --lake ./lake --vacuum --retain 30d --table events
  meterwax maintain --lake ./lake --format json
\b
The retention floor is {_FLOOR}: vacuum never deletes a file removed in the last {_FLOOR},
and expired commit logs are cleaned only when the table keeps them at least that long.
"""


@click.command(epilog=_MAINTAIN_EXAMPLES, context_settings=CONTEXT)
@lake_option
@click.option("--compact", is_flag=True, help="Rewrite small files into large ones.")
@click.option("--vacuum", is_flag=True, help="Delete files removed longer ago than --retain.")
@click.option(
    "--retain",
    default=_FLOOR,
    show_default=True,
    help=f"How long vacuum keeps removed files; never below {_FLOOR}.",
)
@click.option(
    "--checkpoint", is_flag=True, help="Write a checkpoint, then delete expired commit logs."
)
@click.option(
    "--table",
    "tables",
    multiple=True,
    type=click.Choice([spec.name for spec in ALL_TABLES]),
    help="Only this table (repeat for several).  [default: every table of the lake]",
)
@format_option("json")
def maintain(
    lake: str | None,
    storage_options: dict[str, str] | None,
    compact: bool,
    vacuum: bool,
    retain: str,
    checkpoint: bool,
    tables: tuple[str, ...],
    output_format: str,
) -> None:
    """Compact, vacuum and checkpoint tables (all three unless some are named).

    Safe while `meterwax run` and the correction flow write: compaction changes no rows,
    commit conflicts are retried from a fresh snapshot, and vacuum only deletes files that
    left the table more than --retain ago.
    """
    settings = config.load(config.LakeSettings, lake=lake, storage_options=storage_options)
    everything = not (compact or vacuum or checkpoint)
    try:
        plan = Plan(
            compact=compact or everything,
            vacuum=vacuum or everything,
            checkpoint=checkpoint or everything,
            retain_us=parse_duration_us(retain),
        )
    except RetentionFloorError as error:
        msg = (
            f"--retain {retain} is below the {error.floor} retention floor: {error.why}. "
            f"Use --retain {error.floor} or more."
        )
        raise ConfigError(msg) from None
    the_lake = settings.open_lake(writes=True)
    specs = [s for s in ALL_TABLES if s.name in tables] if tables else list(ALL_TABLES)
    reports = [
        maintain_table(the_lake, spec, plan) for spec in specs if tables or the_lake.exists(spec)
    ]
    if not reports:  # a mistyped --lake in a cron job must not pass for a maintained lake
        msg = f"lake {settings.lake} has no meterwax tables: nothing to maintain"
        raise LakeError(msg)
    if output_format == "json":
        click.echo(to_json([r.as_dict() for r in reports]))
        return
    click.echo(_render(reports))


def _mib(size: int) -> str:
    return f"{size / 2**20:,.1f}"


def _render(reports: list[TableReport]) -> str:
    def shown(value: int | None) -> str | int:
        return "-" if value is None else value

    lines = text_table(
        [
            "table",
            "files",
            "MiB",
            "compacted",
            "vacuumed",
            "checkpoint",
            "logs deleted",
            "retries",
            "seconds",
        ],
        [
            [
                r.table,
                f"{r.files_before:,} → {r.files_after:,}",
                f"{_mib(r.bytes_before)} → {_mib(r.bytes_after)}",
                "-"
                if r.files_compacted is None
                else f"{r.files_compacted:,} → {r.files_written:,}",
                shown(r.files_vacuumed),
                "-" if r.checkpoint_version is None else f"v{r.checkpoint_version}",
                shown(r.log_files_deleted),
                r.conflicts_retried,
                f"{r.seconds:.2f}",
            ]
            for r in reports
        ],
    )
    notes = [f"{r.table}: {note}" for r in reports for note in r.notes]
    return "\n".join([lines, *notes])
