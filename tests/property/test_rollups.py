"""Property: a rollup equals an independent, brute-force sum of the windows, in any zone.

The oracle finds period starts minute by minute (every offset and transition of these zones
since 2000 falls on a whole minute): a day or month starts at the first instant at which the
zone's wall clock shows its date (a calendar label), an hour or minute at the last instant up
to the moment at which the clock shows its first moment or jumps forward into it (a span of
elapsed time). It shares no code with meterwax's period arithmetic, and it sums nano-units as
Python integers.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal
from functools import cache
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from hypothesis import event, example, given
from hypothesis import strategies as st

from meterwax.errors import ConfigError
from meterwax.reports.periods import Granularity
from meterwax.reports.rollups import Rollup, rollup
from meterwax.sinks.lake import WINDOW_PROPERTY, Lake
from meterwax.sinks.schemas import USAGE_WINDOWS

ZONES = (
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "America/St_Johns",  # -03:30 / -02:30
    "America/Santiago",  # DST changes at midnight: a day can start at 01:00
    "Asia/Kolkata",  # +05:30, no DST
    "Asia/Kathmandu",  # +05:45
    "Australia/Lord_Howe",  # half-hour DST shift
    "Pacific/Chatham",  # +12:45 / +13:45
    "America/Goose_Bay",  # until 2011 jumped from 00:01 to 01:01, skipping 01:00 itself
    "America/Havana",  # autumn: 01:00 back to 00:00, midnight twice
)
MINUTE = timedelta(minutes=1)
EXACT = Context(prec=100)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def first_moment(wall: datetime, unit: Granularity) -> datetime:
    """Naive wall time → the first wall moment of its unit, spelled out field by field."""
    fields = {
        Granularity.MINUTE: (wall.year, wall.month, wall.day, wall.hour, wall.minute),
        Granularity.HOUR: (wall.year, wall.month, wall.day, wall.hour, 0),
        Granularity.DAY: (wall.year, wall.month, wall.day, 0, 0),
        Granularity.MONTH: (wall.year, wall.month, 1, 0, 0),
    }[unit]
    return datetime(*fields)


def wall(moment: datetime, tz: ZoneInfo) -> datetime:
    return moment.astimezone(tz).replace(tzinfo=None, fold=0)


@cache
def oracle_period(moment: datetime, unit: Granularity, zone_name: str) -> datetime:
    tz = ZoneInfo(zone_name)
    label = first_moment(wall(moment, tz), unit)
    if unit in (Granularity.DAY, Granularity.MONTH):
        # No offset is above +14 hours: a date cannot be shown earlier than 15 hours before
        # its first wall moment read as UTC.
        scan = label.replace(tzinfo=UTC) - timedelta(hours=15)
        while first_moment(wall(scan, tz), unit) != label:
            scan += MINUTE
            assert scan <= moment, "no period start found"
        return scan
    scan = moment.replace(second=0, microsecond=0)
    for _ in range(2 * 24 * 60):
        here = wall(scan, tz)
        starts_here = here == first_moment(here, unit)
        jumped_in = first_moment(here, unit) > first_moment(wall(scan - MINUTE, tz), unit)
        if starts_here or jumped_in:
            return scan
        scan -= MINUTE
    raise AssertionError("no period start found")


@cache
def offset_changes(zone_name: str) -> list[datetime]:
    """The hours in 2026–2027 in which this zone's UTC offset changes."""
    tz = ZoneInfo(zone_name)
    found = []
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    while moment.year < 2028:
        after = moment + timedelta(hours=1)
        if moment.astimezone(tz).utcoffset() != after.astimezone(tz).utcoffset():
            found.append(moment)
        moment = after
    return found or [datetime(2026, 3, 29, 1, tzinfo=UTC)]


MONTH_STARTS = [datetime(2026, month, 1, tzinfo=UTC) for month in range(1, 13)]
KEYS = [("acme", "api"), ("acme", "gb"), ("zeta", "api")]
NANOS = st.one_of(st.integers(0, 10**12), st.integers(0, 10**38 - 1))


@st.composite
def scenarios(draw):
    zone_name = draw(st.sampled_from(ZONES))
    unit = draw(st.sampled_from(list(Granularity)))
    window_minutes = draw(st.sampled_from([1, 5, 15, 30, 60]))
    window = timedelta(minutes=window_minutes)
    anchor = draw(
        st.one_of(st.sampled_from(offset_changes(zone_name)), st.sampled_from(MONTH_STARTS))
    )
    base = EPOCH + ((anchor - EPOCH) // window) * window
    windows = {}
    for step in draw(st.lists(st.integers(-48, 48), min_size=1, max_size=10, unique=True)):
        for tenant, meter in draw(st.lists(st.sampled_from(KEYS), min_size=1, unique=True)):
            windows[(tenant, meter, base + step * window)] = (
                draw(NANOS),
                draw(st.integers(1, 10**9)),
            )
    return zone_name, unit, window, windows


def write_windows(lake: Lake, window: timedelta, windows: dict) -> None:
    DeltaTable.create(
        lake.uri(USAGE_WINDOWS),
        schema=USAGE_WINDOWS.schema,
        partition_by=list(USAGE_WINDOWS.partition_by),
        configuration={WINDOW_PROPERTY: str(window // timedelta(microseconds=1))},
        raise_if_key_not_exists=False,
    )
    now = datetime.now(UTC)
    table = pa.Table.from_pylist(
        [
            {
                "tenant_id": tenant,
                "meter": meter,
                "window_start": start,
                "window_end": start + window,
                "window_date": start.date(),
                "quantity": Decimal(nanos).scaleb(-9, EXACT),
                "event_count": count,
                "revision": 0,
                "updated_at": now,
            }
            for (tenant, meter, start), (nanos, count) in windows.items()
        ],
        schema=USAGE_WINDOWS.schema,
    )
    write_deltalake(lake.uri(USAGE_WINDOWS), table, mode="append")


def scenario_at(zone_name: str, unit: Granularity, start: datetime, minutes: int) -> tuple:
    window = timedelta(minutes=minutes)
    windows = {("acme", "api", start + step * window): (10**9 + step, 1) for step in range(-3, 4)}
    return zone_name, unit, window, windows


@given(scenarios())
# Santiago's spring day starts at 01:00 (midnight is skipped); Lord Howe skips 02:00–02:30;
# Goose Bay's 2011 spring hour "01:00" started at the jump, 00:01 → 01:01.
@example(scenario_at("America/Santiago", Granularity.DAY, datetime(2026, 9, 6, 4, tzinfo=UTC), 60))
@example(
    scenario_at("America/Santiago", Granularity.MONTH, datetime(2026, 9, 6, 4, tzinfo=UTC), 60)
)
@example(
    scenario_at(
        "Australia/Lord_Howe", Granularity.HOUR, datetime(2026, 10, 3, 15, 30, tzinfo=UTC), 30
    )
)
@example(
    scenario_at("Australia/Lord_Howe", Granularity.HOUR, datetime(2026, 4, 4, 15, tzinfo=UTC), 30)
)
@example(
    scenario_at("America/Goose_Bay", Granularity.HOUR, datetime(2011, 3, 13, 4, 1, tzinfo=UTC), 1)
)
@example(scenario_at("Europe/Berlin", Granularity.HOUR, datetime(2026, 10, 25, 1, tzinfo=UTC), 15))
# Havana's autumn change goes from 01:00 back to 00:00: midnight happens twice.
@example(scenario_at("America/Havana", Granularity.DAY, datetime(2026, 11, 1, 5, tzinfo=UTC), 30))
@example(scenario_at("America/Havana", Granularity.MONTH, datetime(2026, 11, 1, 5, tzinfo=UTC), 30))
def test_rollups_equal_brute_force_sums_in_any_zone(scenario):
    zone_name, unit, window, windows = scenario
    straddles = any(
        oracle_period(start, unit, zone_name)
        != oracle_period(start + window - timedelta(microseconds=1), unit, zone_name)
        for (_, _, start) in windows
    )
    expected: dict = {}
    for (tenant, meter, start), (nanos, count) in windows.items():
        key = (tenant, meter, oracle_period(start, unit, zone_name))
        total = expected.setdefault(key, [0, 0])
        total[0] += nanos
        total[1] += count

    with tempfile.TemporaryDirectory() as root:
        lake = Lake(root)
        write_windows(lake, window, windows)
        query = Rollup(tz=ZoneInfo(zone_name), granularity=unit)
        event("refused" if straddles else "rolled up")
        if straddles:
            with pytest.raises(ConfigError, match=r"spans two|longer than"):
                rollup(lake, query)
            return
        got = rollup(lake, query)

    assert {
        # In UTC: Python never equates an ambiguous local time with another zone's (PEP 495).
        (r["tenant_id"], r["meter"], r["period_start"].astimezone(UTC)): [
            int(r["quantity"].scaleb(9, EXACT)),
            r["event_count"],
        ]
        for r in got
    } == expected
    for r in got:
        assert (
            r["period_start"].utcoffset()
            == r["period_start"].astimezone(ZoneInfo(zone_name)).utcoffset()
        )
        assert str(r["period_start"].tzinfo) == zone_name
