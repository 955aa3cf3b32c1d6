"""Settings: command-line flags, then ``METERWAX_*`` environment variables, then defaults.

Each command builds one pydantic-settings model from the flags the user actually gave; fields
left unset fall back to the environment (``METERWAX_WINDOW=5m``), then to the defaults here.
Durations accept ``90s``, ``5m``, ``1h``, ``1d`` and ISO 8601 (``PT5M``) and are held as
microseconds; ``off`` disables the optional limits.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any, TypeVar

from pydantic import BeforeValidator, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from meterwax.cli import secrets
from meterwax.cli.arguments import parse_brokers, parse_host_list
from meterwax.durations import format_duration_us, parse_duration_us
from meterwax.errors import ConfigError
from meterwax.flows.metering import DEFAULT_EPOCH_US
from meterwax.kafka.clients import Cluster
from meterwax.operators.partition import MeteringRules, RulesError
from meterwax.operators.records import DEFAULT_BATCH_SIZE
from meterwax.sinks.lake import Lake
from meterwax.sinks.storage import is_secret, masked

_log = logging.getLogger(__name__)


def _duration(value: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        return parse_duration_us(value)
    except ConfigError as error:
        raise ValueError(str(error)) from None


def _optional_duration(value: object) -> object:
    if isinstance(value, str) and value.strip().lower() in {"off", "none", "0"}:
        return None
    return _duration(value)


Duration = Annotated[int, BeforeValidator(_duration), Field(ge=0)]
OptionalDuration = Annotated[int | None, BeforeValidator(_optional_duration)]


class _Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="METERWAX_", extra="forbid", frozen=True)


def _option_values(value: object) -> object:
    """A map of settings as strings (JSON ``true`` → ``"true"``, numbers → text)."""
    if isinstance(value, dict):
        nested = [key for key, item in value.items() if isinstance(item, (dict, list))]
        if nested:
            msg = f"values are strings, numbers or booleans, not lists or maps: {nested}"
            raise ValueError(msg)
        return {
            key: str(item).lower() if isinstance(item, bool) else str(item)
            for key, item in value.items()
        }
    return value


def _one_spelling(value: object) -> object:
    """Refuse a setting given in two spellings with two values.

    delta-rs reads names in any case (``AWS_ENDPOINT_URL``, ``aws_endpoint_url``) and does
    not say which one wins: the commit check and delta-rs could reach two different stores.
    """
    if isinstance(value, dict):
        seen: dict[str, list[str]] = {}
        for key in value:
            seen.setdefault(str(key).lower(), []).append(str(key))
        clashing = [
            names
            for names in seen.values()
            if len(names) > 1 and len({str(value[n]) for n in names}) > 1
        ]
        if clashing:
            listed = "; ".join(" and ".join(names) for names in clashing)
            msg = f"one setting in two spellings with different values: {listed}; give it once"
            raise ValueError(msg)
    return value


class LakeSettings(_Settings):
    """Where the lake lives, and the delta-rs storage options to reach it."""

    lake: str = Field("./lake", description="lake root: a directory or s3://… URI")
    storage_options: Annotated[
        dict[str, str], BeforeValidator(_one_spelling), BeforeValidator(_option_values)
    ] = Field(
        default_factory=dict,
        description="delta-rs storage options (endpoint, credentials…); the variable holds JSON",
    )

    def open_lake(self, *, writes: bool = False) -> Lake:
        """The lake, with its storage options (whose secrets are hidden from all output).

        ``writes``: the command commits to the lake, so an object store that could lose a
        commit to a concurrent writer is refused first (:meth:`Lake.check_commits`).
        """
        secrets.remember(self.storage_options)
        if self.storage_options:
            _log.info("lake %s, storage options %s", self.lake, masked(self.storage_options))
        lake = Lake(self.lake, dict(self.storage_options) or None)
        if writes:
            lake.check_commits()
        return lake


class UsageSettings(LakeSettings):
    """``meterwax usage``: the lake, and the zone that calendar periods and dates are in."""

    tz: str = Field("UTC", description="IANA time zone of --granularity periods and dates")


_DEFAULT_RULES = MeteringRules()


class RulesSettings(_Settings):
    """What is counted and when: the settings that shape the partition processors' state."""

    window: Duration = Field(_DEFAULT_RULES.window_us, description="tumbling window length")
    allowed_lateness: Duration = Field(
        _DEFAULT_RULES.allowed_lateness_us,
        description="how far behind the max event time a window waits",
    )
    dedupe_horizon: Duration = Field(
        _DEFAULT_RULES.dedupe_horizon_us,
        description="event time for which idempotency keys are kept",
    )
    correction_horizon: OptionalDuration = Field(
        _DEFAULT_RULES.correction_horizon_us,
        description="older late events are quarantined as too_late",
    )
    max_future: OptionalDuration = Field(
        _DEFAULT_RULES.max_future_us, description="events further ahead are quarantined as future"
    )
    max_event_bytes: int = Field(_DEFAULT_RULES.max_event_bytes, gt=0)

    def rules(self, recorded: dict[str, int | None] | None = None) -> MeteringRules:
        """The processor rules: each from its flag or variable, else the lake's, else default.

        ``recorded`` are the rules a lake remembers (:meth:`Lake.recorded_rules`): a run that
        names no rule counts as the lake always has. ConfigError naming the flag if unusable.
        """
        recorded = recorded or {}
        values = {
            f"{name}_us" if name != "max_event_bytes" else name: getattr(self, name)
            for name in _RULE_SETTINGS
        }
        for field, value in recorded.items():
            setting = field.removesuffix("_us")
            if setting not in self.model_fields_set:
                values[field] = value
        try:
            return MeteringRules(**values)
        except RulesError as error:
            flag = "--" + error.setting.replace("_", "-")
            raise ConfigError(f"{flag}: {error.problem}") from None


_RULE_SETTINGS = (
    "window",
    "allowed_lateness",
    "dedupe_horizon",
    "correction_horizon",
    "max_future",
    "max_event_bytes",
)


def describe_rules(rules: MeteringRules) -> str:
    """One line for logs and summaries."""
    return (
        f"{format_duration_us(rules.window_us)} windows, lateness "
        f"{format_duration_us(rules.allowed_lateness_us)}, dedupe horizon "
        f"{format_duration_us(rules.dedupe_horizon_us)}"
    )


def _brokers(value: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        return parse_brokers(value)
    except ConfigError as error:
        raise ValueError(str(error)) from None


_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def _topic(value: object) -> object:
    if isinstance(value, str) and (not _TOPIC_NAME.match(value) or value in {".", ".."}):
        msg = "a Kafka topic name is 1–249 letters, digits, '.', '_' or '-'"
        raise ValueError(msg)
    return value


def _addresses(value: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        return parse_host_list(value, separator=";", what="addresses")
    except ConfigError as error:
        raise ValueError(str(error)) from None


class KafkaSettings(_Settings):
    """Which Kafka cluster and topic; extra librdkafka settings (security…) pass through."""

    brokers: Annotated[str | None, BeforeValidator(_brokers)] = Field(
        None, description="Kafka bootstrap servers: HOST:PORT[,HOST:PORT…]"
    )
    topic: Annotated[str, BeforeValidator(_topic)] = Field(
        "usage-events", description="the topic of usage events"
    )
    kafka_config: Annotated[dict[str, str], BeforeValidator(_option_values)] = Field(
        default_factory=dict, description="extra librdkafka settings; the variable holds JSON"
    )

    def cluster(self) -> Cluster:
        """The brokers as a :class:`Cluster`; ConfigError if none were given."""
        if self.brokers is None:
            msg = "no Kafka brokers: give --brokers HOST:PORT (or set METERWAX_BROKERS)"
            raise ConfigError(msg)
        return Cluster(self.brokers, dict(self.kafka_config))


class ProcessSettings(_Settings):
    """Where this process sits in a multi-process Bytewax cluster (all processes run alike)."""

    process_id: int | None = Field(None, ge=0, description="this process's index in addresses")
    addresses: Annotated[str | None, BeforeValidator(_addresses)] = Field(
        None, description="every process's HOST:PORT, separated by ';', the same list for all"
    )

    def cluster_addresses(self) -> list[str] | None:
        """The address list, after checking it goes with the process id (None: one process)."""
        if self.addresses is None and self.process_id is None:
            return None
        if self.addresses is None or self.process_id is None:
            msg = "--process-id and --addresses go together (give both, or neither)"
            raise ConfigError(msg)
        addresses = self.addresses.split(";")
        repeated = sorted({a for a in addresses if addresses.count(a) > 1})
        if repeated:
            msg = (
                f"--addresses {self.addresses!r} names {', '.join(repeated)} more than once: "
                "each process needs its own HOST:PORT"
            )
            raise ConfigError(msg)
        if self.process_id >= len(addresses):
            msg = (
                f"--process-id {self.process_id} is not an index into the {len(addresses)} "
                f"--addresses {self.addresses!r} (0…{len(addresses) - 1})"
            )
            raise ConfigError(msg)
        return addresses


class ProduceSettings(KafkaSettings):
    """``meterwax produce``: the synthetic workload of the demo, into Kafka or a file."""

    events: int = Field(10_000, ge=0, description="messages to produce, duplicates included")
    rate: float | None = Field(None, gt=0, description="messages per second (None: unlimited)")
    tenants: int = Field(20, ge=1, description="distinct tenants")
    duplicates: float = Field(0.02, ge=0, lt=1, description="share of retried duplicates")
    late: float = Field(0.01, ge=0, lt=1, description="share of late events")
    invalid: float = Field(0.001, ge=0, lt=1, description="share of invalid messages")
    seed: int = Field(7, description="generator seed: the same seed gives the same stream")


class HeartbeatSettings(KafkaSettings):
    """``meterwax heartbeat``: a heartbeat into every partition of the topic, periodically."""

    every: Duration = Field(parse_duration_us("10s"), gt=0, description="time between heartbeats")


class TopicSettings(KafkaSettings):
    """``meterwax topics create``: the events topic, with settings fit for replays."""

    partitions: int | None = Field(None, ge=1, description="partitions (the unit of parallelism)")
    replication_factor: int = Field(1, ge=1, description="copies of every partition")
    retention: Duration = Field(
        parse_duration_us("40d"), gt=0, description="how long messages stay replayable"
    )


class ReplaySettings(LakeSettings, KafkaSettings):
    """``meterwax replay``: a topic range and the lake to repair."""


class RunSettings(LakeSettings, RulesSettings, KafkaSettings, ProcessSettings):
    """``meterwax run``: the main flow."""

    stop_at_end: bool = Field(
        False, description="Kafka input: stop at the end the topic had when the run started"
    )

    workers: int = Field(1, ge=1, description="Bytewax workers (threads) in this process")
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1, description="messages per source read")
    snapshot_interval: Duration = Field(
        DEFAULT_EPOCH_US,
        description="Bytewax epoch: how often state is snapshotted and Delta commits happen",
    )
    recovery_dir: str | None = Field(
        None, description="Bytewax recovery store (Kafka input: a default under --state-dir)"
    )
    state_dir: str = Field(
        "./.meterwax", description="where default recovery stores are kept (Kafka input)"
    )
    recovery: bool = Field(True, description="Kafka input: resume from the recovery store")
    metrics_port: int | None = Field(None, ge=1, le=65535, description="serve /metrics here")


Settings = TypeVar("Settings", bound=_Settings)


def load(model: type[Settings], **given: Any) -> Settings:
    """Build ``model`` from the flags that were given (None means "not given").

    Raises ConfigError naming the setting and the bad value.
    """
    explicit = {name: value for name, value in given.items() if value is not None}
    try:
        return model(**explicit)
    except SettingsError as error:
        msg = f'{error} (METERWAX_* variables of map settings hold JSON, e.g. \'{{"k": "v"}}\')'
        raise ConfigError(secrets.redact(msg)) from None
    except ValidationError as error:
        problems = []
        for problem in error.errors(include_url=False):
            name = ".".join(str(part) for part in problem["loc"])
            setting = str(problem["loc"][0]) if problem["loc"] else name
            flag = "--" + _FLAGS.get(setting, setting).replace("_", "-")
            source = "flag" if setting in explicit else f"METERWAX_{setting.upper()}"
            value = _shown(name, problem.get("input"))
            problems.append(f"{flag} ({source}) = {value}: {problem['msg']}")
        raise ConfigError("; ".join(problems)) from None


_MAP_SETTINGS = {"storage_options", "kafka_config"}
_FLAGS = {"storage_options": "storage_option"}
"""Settings whose flag is not named after them (a repeatable flag gives one item)."""


def _shown(name: str, value: object) -> str:
    """A bad value as an error may show it: the secrets of map settings hidden.

    A map setting that is not even a map (a mistyped JSON variable) may hold a secret
    anywhere, so it is not shown at all.
    """
    setting = name.split(".")[0]
    if setting not in _MAP_SETTINGS:
        return repr(value)
    if isinstance(value, dict):
        return repr(
            {
                k: "***" if is_secret(str(k)) or isinstance(v, (dict, list)) else v
                for k, v in value.items()
            }
        )
    if "." in name and is_secret(name.split(".", 1)[1]):
        return "'***'"
    return "(hidden: it may hold credentials)"
