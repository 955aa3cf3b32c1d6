"""``meterwax bench``: floor, meterwax, naive Bytewax and Quix Streams side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from meterwax.bench import sweep as sweeps
from meterwax.bench.contestants import CONTESTANTS, DEFAULT
from meterwax.bench.harness import BenchOptions, render_table, run_bench
from meterwax.bench.runner import ContestantFailedError
from meterwax.bench.workload import TENANTS
from meterwax.cli.arguments import parse_brokers
from meterwax.cli.options import CONTEXT
from meterwax.errors import ConfigError

_BENCH_EXAMPLES = """
\b
Examples:
  scripts/with-kafka meterwax bench --json bench.json           # what `make bench` runs
  meterwax bench --brokers localhost:9092 --events 20000 --runs 1
  meterwax bench --contestants floor,meterwax --runs 5
  meterwax bench --tenants 100000 --contestants floor,meterwax
\b
  # the sweep: (1,000, 1M), (10,000, 1M), (100,000, 1M) and (1,000, 4M) tenants and events,
  # floor and meterwax, one table row per point and contestant
  meterwax bench --sweep --json sweep.json
  meterwax bench --sweep --sweep-tenants 100,1000 --sweep-events 50000,100000 --runs 1
  meterwax bench --sweep --sweep-tenants 1000,50000 --sweep-events 1000000 --contestants floor,naive
"""

_SWEEP_TENANTS = ",".join(map(str, sweeps.DEFAULT_TENANTS))
_SWEEP_EVENTS = ",".join(map(str, sweeps.DEFAULT_EVENTS))


@click.command(epilog=_BENCH_EXAMPLES, context_settings=CONTEXT)
@click.option("--events", type=int, default=1_000_000, show_default=True, help="Messages in B1.")
@click.option(
    "--tenants", type=int, default=TENANTS, show_default=True, help="Tenants in the workload."
)
@click.option("--partitions", type=int, default=4, show_default=True, help="Topic partitions.")
@click.option("--runs", type=int, default=3, show_default=True, help="Runs per contestant.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the result as JSON to this file.",
)
@click.option(
    "--brokers",
    envvar="METERWAX_KAFKA_BOOTSTRAP",
    help="Kafka bootstrap servers.  [env METERWAX_KAFKA_BOOTSTRAP]",
)
@click.option(
    "--contestants",
    default=",".join(DEFAULT),
    show_default=True,
    help=f"Comma-separated, from {', '.join(CONTESTANTS)}.  [--sweep: "
    f"{','.join(sweeps.DEFAULT_CONTESTANTS)}]",
)
@click.option(
    "--sweep",
    is_flag=True,
    help="Run the workload at several (tenants, events) points, a fresh topic each: every "
    "--sweep-tenants count at the first --sweep-events count, then every other events count "
    "at the first tenant count.",
)
@click.option(
    "--sweep-tenants",
    default=_SWEEP_TENANTS,
    show_default=True,
    help="Comma-separated tenant counts of the sweep.",
)
@click.option(
    "--sweep-events",
    default=_SWEEP_EVENTS,
    show_default=True,
    help="Comma-separated event counts of the sweep.",
)
@click.pass_context
def bench(
    ctx: click.Context,
    events: int,
    tenants: int,
    partitions: int,
    runs: int,
    json_path: Path | None,
    brokers: str | None,
    contestants: str,
    sweep: bool,
    sweep_tenants: str,
    sweep_events: str,
) -> None:
    """Meter one workload with several engines and compare speed, memory and totals.

    Loads workload B1 (docs/benchmarks.md: --events messages, --tenants tenants, 3 meters,
    2% duplicates, 1% late, 0.1% invalid) into a fresh topic, runs every contestant --runs
    times, each run in its own process, and reports median events/s, peak RSS and the ratio
    to the floor (a plain Kafka consumer). Exits 1 if any contestant missed a message or if
    the window totals of meterwax, naive Bytewax and Quix Streams differ in any window.

    With --sweep it does so at every (tenants, events) point of --sweep-tenants and
    --sweep-events, reports one row per point and contestant (events/s, × floor, peak RSS,
    dedupe bytes per id, CPU µs per event, start-up included) and says whether CPU per event
    stayed flat across the tenant counts. --json then holds every point's full result under
    "sweep". The same checks apply at every point.
    """
    if brokers is None:
        msg = "no broker: give --brokers HOST:PORT or set METERWAX_KAFKA_BOOTSTRAP"
        raise ConfigError(msg)
    given = _given_options(ctx)
    if sweep:
        for name in ("--events", "--tenants"):
            if name in given:
                msg = f"{name}: not with --sweep (it runs --sweep-{name[2:]})"
                raise ConfigError(msg)
        if "--contestants" not in given:
            contestants = ",".join(sweeps.DEFAULT_CONTESTANTS)
    else:
        for name in ("--sweep-tenants", "--sweep-events"):
            if name in given:
                msg = f"{name}: only with --sweep"
                raise ConfigError(msg)
    chosen = tuple(name.strip() for name in contestants.split(",") if name.strip())
    unknown = [name for name in chosen if name not in CONTESTANTS]
    if unknown or not chosen:
        msg = f"--contestants: unknown {', '.join(unknown) or '(none given)'}; choose from "
        raise ConfigError(msg + ", ".join(CONTESTANTS))
    for name, value in (
        ("--events", events),
        ("--tenants", tenants),
        ("--partitions", partitions),
        ("--runs", runs),
    ):
        if value < 1:
            msg = f"{name} must be at least 1, got {value}"
            raise ConfigError(msg)
    options = BenchOptions(
        parse_brokers(brokers),
        events=events,
        partitions=partitions,
        runs=runs,
        contestants=chosen,
        tenants=tenants,
    )
    if sweep:
        points = sweeps.sweep_points(
            _counts("--sweep-tenants", sweep_tenants), _counts("--sweep-events", sweep_events)
        )
        _run_sweep(ctx, options, points, json_path)
        return
    try:
        result = run_bench(options, lambda line: click.echo(line, err=True))
    except ContestantFailedError as error:
        click.echo(f"error: {error}", err=True)
        ctx.exit(1)
    _report(ctx, render_table(result), result, json_path)


def _given_options(ctx: click.Context) -> set[str]:
    """The options given on the command line or by environment variable (not defaulted)."""
    return {
        f"--{name.replace('_', '-')}"
        for name in ctx.params
        if ctx.get_parameter_source(name) not in {ParameterSource.DEFAULT, None}
    }


def _counts(option: str, text: str) -> list[int]:
    """``1000,10000``: comma-separated counts, each at least 1, none twice."""
    counts: list[int] = []
    for item in (part.strip() for part in text.split(",")):
        try:
            count = int(item)
        except ValueError:
            msg = f"{option}: {item!r} is not a whole number (give e.g. 1000,10000)"
            raise ConfigError(msg) from None
        if count < 1:
            msg = f"{option} must be at least 1, got {count}"
            raise ConfigError(msg)
        if count in counts:
            msg = f"{option}: {count} given twice"
            raise ConfigError(msg)
        counts.append(count)
    return counts


def _run_sweep(
    ctx: click.Context,
    options: BenchOptions,
    points: list[sweeps.Point],
    json_path: Path | None,
) -> None:
    result: dict[str, Any] = sweeps.run_sweep(
        options, points, lambda line: click.echo(line, err=True)
    )
    _report(ctx, sweeps.render_sweep(result), result, json_path)


def _report(ctx: click.Context, table: str, result: dict[str, Any], json_path: Path | None) -> None:
    """Print the table, write the JSON, and exit 1 after naming each problem, if any."""
    click.echo(table)
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2) + "\n")
    for problem in result["problems"]:
        click.echo(f"error: {problem}", err=True)
    if result["problems"]:
        ctx.exit(1)
