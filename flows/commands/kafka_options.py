"""Options of the commands that talk to Kafka (settings resolve flag → METERWAX_* → default)."""

from __future__ import annotations

from typing import Any

import click

from meterwax.errors import ConfigError


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
    """``("a=1", "b=x")`` → ``{"a": "1", "b": "x"}``; None when no pair was given (env applies).

    Raises ConfigError naming a pair that is not ``key=value`` (one line, like every other
    bad setting, rather than click's usage block).
    """
    if not pairs:
        return None
    parsed: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            msg = f"--kafka-config {pair!r}: expected KEY=VALUE, e.g. security.protocol=SSL"
            raise ConfigError(msg)
        parsed[key.strip()] = value
    return parsed
