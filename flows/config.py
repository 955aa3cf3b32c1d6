"""Settings: command-line flags, then ``METERWAX_*`` environment variables, then defaults.

Each command builds one pydantic-settings model from the flags the user actually gave; fields
left unset fall back to the environment (``METERWAX_WINDOW=5m``), then to the defaults here.
Durations accept ``90s``, ``5m``, ``1h``, ``1d`` and ISO 8601 (``PT5M``) and are held as
microseconds; ``off`` disables the optional limits.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from meterwax.durations import format_duration_us, parse_duration_us
from meterwax.errors import ConfigError
from meterwax.operators.decode import DEFAULT_MAX_EVENT_BYTES
from meterwax.operators.partition import MeteringRules


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


class LakeSettings(_Settings):
    """Where the lake lives."""

    lake: str = Field("./lake", description="lake root: a directory or s3://… URI")


class UsageSettings(LakeSettings):
    """``meterwax usage``: the lake, and the zone that calendar periods and dates are in."""

    tz: str = Field("UTC", description="IANA time zone of --granularity periods and dates")


class RulesSettings(_Settings):
    """What is counted and when: the settings that shape the partition processors' state."""

    window: Duration = Field(parse_duration_us("1m"), description="tumbling window length")
    allowed_lateness: Duration = Field(
        parse_duration_us("30s"), description="how far behind the max event time a window waits"
    )
    dedupe_horizon: Duration = Field(
        parse_duration_us("24h"), description="event time for which idempotency keys are kept"
    )
    correction_horizon: OptionalDuration = Field(
        parse_duration_us("35d"), description="older late events are quarantined as too_late"
    )
    max_future: OptionalDuration = Field(
        parse_duration_us("5m"), description="events further ahead are quarantined as future"
    )
    max_event_bytes: int = Field(DEFAULT_MAX_EVENT_BYTES, gt=0)

    def rules(self) -> MeteringRules:
        """The processor rules these settings describe."""
        if self.window == 0:
            msg = "--window must be longer than 0s"
            raise ConfigError(msg)
        if self.dedupe_horizon < self.window + self.allowed_lateness:
            msg = (
                f"--dedupe-horizon {format_duration_us(self.dedupe_horizon)} is shorter than "
                f"--window + --allowed-lateness ({format_duration_us(self.window)} + "
                f"{format_duration_us(self.allowed_lateness)}): a retry could be counted twice"
            )
            raise ConfigError(msg)
        return MeteringRules(
            window_us=self.window,
            allowed_lateness_us=self.allowed_lateness,
            dedupe_horizon_us=self.dedupe_horizon,
            correction_horizon_us=self.correction_horizon,
            max_future_us=self.max_future,
            max_event_bytes=self.max_event_bytes,
        )

    def describe(self) -> str:
        """One line for logs and summaries."""
        return (
            f"{format_duration_us(self.window)} windows, lateness "
            f"{format_duration_us(self.allowed_lateness)}, dedupe horizon "
            f"{format_duration_us(self.dedupe_horizon)}"
        )


class RunSettings(LakeSettings, RulesSettings):
    """``meterwax run``: the main flow."""

    workers: int = Field(1, ge=1, description="Bytewax workers (threads) in this process")
    batch_size: int = Field(10_000, ge=1, description="messages per source read")
    commit_interval: Duration = Field(
        parse_duration_us("5s"), description="epoch length: how often Delta commits happen"
    )


def load(model: type[_Settings], **given: Any) -> Any:
    """Build ``model`` from the flags that were given (None means "not given").

    Raises ConfigError naming the setting and the bad value.
    """
    explicit = {name: value for name, value in given.items() if value is not None}
    try:
        return model(**explicit)
    except ValidationError as error:
        problems = []
        for problem in error.errors(include_url=False):
            name = ".".join(str(part) for part in problem["loc"])
            flag = "--" + name.replace("_", "-")
            source = "flag" if name in explicit else f"METERWAX_{name.upper()}"
            value = problem.get("input")
            problems.append(f"{flag} ({source}) = {value!r}: {problem['msg']}")
        raise ConfigError("; ".join(problems)) from None
