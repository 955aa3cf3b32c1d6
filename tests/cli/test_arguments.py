"""Times on the command line: any text is a time in UTC or a ConfigError naming the option."""

from __future__ import annotations

from datetime import UTC
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterwax.cli.arguments import parse_bound, parse_instant
from meterwax.errors import ConfigError


@pytest.mark.parametrize(
    "text", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:30:00-01:00", "0001-01-01"]
)
def test_a_time_outside_the_calendar_in_utc_is_refused_by_name(text):
    with pytest.raises(ConfigError, match=r"--from .* outside years 1–9999 in UTC"):
        parse_bound(text, option="--from", tz=ZoneInfo("Europe/Berlin"))


@given(
    moment=st.datetimes(timezones=st.timezones()),
    zone=st.timezones(),
    as_date=st.booleans(),
)
def test_any_time_or_date_parses_to_utc_or_is_refused(moment, zone, as_date):
    text = moment.date().isoformat() if as_date else moment.isoformat()
    for parse in (
        lambda: parse_bound(text, option="--to", tz=zone),
        lambda: parse_instant(text, option="--to"),
    ):
        try:
            outcome: object = parse()
        except ConfigError as error:
            outcome = error
        if isinstance(outcome, ConfigError):
            assert str(outcome).startswith("--to ")
        else:
            assert outcome.tzinfo is UTC
