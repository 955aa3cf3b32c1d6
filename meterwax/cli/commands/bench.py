"""``meterwax bench``: floor, meterwax, naive Bytewax and Quix Streams side by side."""

from __future__ import annotations

import json
from pathlib import Path

import click

from meterwax.bench.contestants import CONTESTANTS, DEFAULT
from meterwax.bench.harness import BenchOptions, render_table, run_bench
from meterwax.bench.runner import ContestantFailedError
from meterwax.cli.arguments import parse_brokers
from meterwax.cli.options import CONTEXT
from meterwax.errors import ConfigError

_BENCH_EXAMPLES = """
\b
Examples:
  scripts/with-kafka meterwax bench --json bench.json           # what `make bench` runs
  meterwax bench --brokers localhost:9092 --events 20000 --runs 1
  meterwax bench --contestants floor,meterwax --runs 5
"""


@click.command(epilog=_BENCH_EXAMPLES, context_settings=CONTEXT)
@click.option("--events", type=int, default=1_000_000, show_default=True, help="Messages in B1.")
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
    help=f"Comma-separated, from {', '.join(CONTESTANTS)}.",
)
@click.pass_context
def bench(
    ctx: click.Context,
    events: int,
    partitions: int,
    runs: int,
    json_path: Path | None,
    brokers: str | None,
    contestants: str,
) -> None:
    """Meter one workload with several engines and compare speed, memory and totals.

    Loads workload B1 (docs/benchmarks.md: --events messages, 1,000 tenants, 3 meters, 2%
    duplicates, 1% late, 0.1% invalid) into a fresh topic, runs every contestant --runs
    times, each run in its own process, and reports median events/s, peak RSS and the ratio
    to the floor (a plain Kafka consumer). Exits 1 if any contestant missed a message or if
    the window totals of meterwax, naive Bytewax and Quix Streams differ in any window.
    """
    if brokers is None:
        msg = "no broker: give --brokers HOST:PORT or set METERWAX_KAFKA_BOOTSTRAP"
        raise ConfigError(msg)
    chosen = tuple(name.strip() for name in contestants.split(",") if name.strip())
    unknown = [name for name in chosen if name not in CONTESTANTS]
    if unknown or not chosen:
        msg = f"--contestants: unknown {', '.join(unknown) or '(none given)'}; choose from "
        raise ConfigError(msg + ", ".join(CONTESTANTS))
    for name, value in (("--events", events), ("--partitions", partitions), ("--runs", runs)):
        if value < 1:
            msg = f"{name} must be at least 1, got {value}"
            raise ConfigError(msg)
    options = BenchOptions(parse_brokers(brokers), events, partitions, runs, chosen)
    try:
        result = run_bench(options, lambda line: click.echo(line, err=True))
    except ContestantFailedError as error:
        click.echo(f"error: {error}", err=True)
        ctx.exit(1)
    click.echo(render_table(result))
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2) + "\n")
    for problem in result["problems"]:
        click.echo(f"error: {problem}", err=True)
    if result["problems"]:
        ctx.exit(1)
