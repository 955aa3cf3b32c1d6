"""Options shared by several commands (settings resolve flag → METERWAX_* → default)."""

from __future__ import annotations

from typing import Any

import click

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def lake_option(function: Any) -> Any:
    """Add ``--lake``."""
    return click.option(
        "--lake",
        help="Lake root: a directory or an object-store URI.  [env METERWAX_LAKE; default ./lake]",
    )(function)


def rules_options(function: Any) -> Any:
    """Add the options that decide what is counted and when (window, lateness…)."""
    options = [
        click.option("--window", help="Tumbling window length.  [default 1m]"),
        click.option(
            "--allowed-lateness",
            help="How long a window waits for out-of-order events after its end.  [default 30s]",
        ),
        click.option(
            "--dedupe-horizon",
            help="Event time for which idempotency keys are remembered.  [default 24h]",
        ),
        click.option(
            "--correction-horizon",
            help="Late events further behind are quarantined as too_late ('off': never).  "
            "[default 35d]",
        ),
        click.option(
            "--max-future",
            help="Events further ahead of the partition clock are quarantined ('off': never).  "
            "[default 5m]",
        ),
        click.option("--max-event-bytes", type=int, help="Larger messages are quarantined."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def metrics_option(function: Any) -> Any:
    """Add ``--metrics-port``."""
    return click.option(
        "--metrics-port",
        type=int,
        help="Serve Prometheus metrics on this port while running.  [env METERWAX_METRICS_PORT]",
    )(function)


def format_option(*choices: str, help_text: str = "Output format.") -> Any:
    """Add ``--format`` (into ``output_format``): ``table`` by default, or one of ``choices``."""
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(["table", *choices]),
        default="table",
        show_default=True,
        help=help_text,
    )
