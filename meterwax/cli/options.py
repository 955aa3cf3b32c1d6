"""Options shared by several commands (settings resolve flag → METERWAX_* → default)."""

from __future__ import annotations

from typing import Any

import click

from meterwax.errors import ConfigError
from meterwax.sinks.storage import is_secret

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def lake_option(function: Any) -> Any:
    """Add ``--lake`` and ``--storage-option key=value`` (repeatable: delta-rs options)."""
    return click.option(
        "--lake",
        help="Lake root: a directory or an object-store URI.  [env METERWAX_LAKE; default ./lake]",
    )(storage_option(function))


def storage_option(function: Any) -> Any:
    """Add ``--storage-option key=value`` (into ``storage_options``)."""
    return click.option(
        "--storage-option",
        "storage_options",
        multiple=True,
        metavar="KEY=VALUE",
        callback=_parse_storage_options,
        help="delta-rs storage option for an object-store lake, e.g. AWS_ENDPOINT_URL=http://"
        "minio:9000 (repeat for more; secrets are never shown).  "
        "[env METERWAX_STORAGE_OPTIONS as JSON, under the flags; AWS_* variables also apply]",
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


def brokers_option(function: Any) -> Any:
    """Add ``--brokers``."""
    return click.option(
        "--brokers",
        help="Kafka bootstrap servers, HOST:PORT[,HOST:PORT…].  [env METERWAX_BROKERS]",
    )(function)


def topic_option(function: Any) -> Any:
    """Add ``--topic``."""
    return click.option(
        "--topic", help="Topic of usage events.  [env METERWAX_TOPIC; default usage-events]"
    )(function)


def kafka_config_option(function: Any) -> Any:
    """Add ``--kafka-config key=value`` (repeatable): extra librdkafka settings."""
    return click.option(
        "--kafka-config",
        "kafka_config",
        multiple=True,
        metavar="KEY=VALUE",
        callback=_parse_kafka_config,
        help="Extra librdkafka setting, e.g. security.protocol=SASL_SSL (repeat for more).  "
        "[env METERWAX_KAFKA_CONFIG as JSON]",
    )(function)


def kafka_options(function: Any) -> Any:
    """Add ``--brokers``, ``--topic`` and ``--kafka-config``."""
    return brokers_option(topic_option(kafka_config_option(function)))


def _parse_kafka_config(
    _ctx: click.Context, _param: click.Parameter, pairs: tuple[str, ...]
) -> dict[str, str] | None:
    """``("a=1", "b=x")`` → ``{"a": "1", "b": "x"}``; None when no pair was given (env applies)."""
    return _pairs(pairs, "--kafka-config", "security.protocol=SSL", hide=False)


def _parse_storage_options(
    _ctx: click.Context, _param: click.Parameter, pairs: tuple[str, ...]
) -> dict[str, str] | None:
    """Like ``--kafka-config``: the pairs as a map, None when none was given (env applies)."""
    return _pairs(pairs, "--storage-option", "AWS_REGION=us-east-1", hide=True)


def _pairs(pairs: tuple[str, ...], flag: str, example: str, *, hide: bool) -> dict[str, str] | None:
    """Parse ``KEY=VALUE`` pairs.

    Raises ConfigError naming a pair that is not ``key=value`` (one line, like every other
    bad setting, rather than click's usage block). A malformed pair is not shown when it
    may hold a secret: ``hide`` (a storage option without ``=`` may be a bare credential),
    or a secret-sounding name.
    """
    if not pairs:
        return None
    parsed: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            shown = "'***'" if hide or is_secret(pair) else repr(pair)
            msg = f"{flag} {shown}: expected KEY=VALUE, e.g. {example}"
            raise ConfigError(msg)
        parsed[key.strip()] = value
    return parsed
