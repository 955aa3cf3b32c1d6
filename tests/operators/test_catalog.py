"""Meter catalogs: reading both forms, and errors that name the meter and the key."""

from __future__ import annotations

import pytest
import yaml

from meterwax.meters.documents import catalog_yaml, read_catalog_file
from meterwax.operators.catalog import (
    LEGACY,
    Aggregation,
    Catalog,
    CatalogError,
    parse_catalog,
)

SIX = """
meters:
  - name: requests
    event_meter: api_calls
    aggregation: count
  - name: active_users
    event_meter: api_calls
    aggregation: unique_count
    value: dimensions.user_id
  - name: peak_seats
    event_meter: seats
    aggregation: max
  - name: storage_now
    event_meter: storage_gb
    aggregation: latest
  - name: eu_cpu
    event_meter: cpu_seconds
    aggregation: sum
    filter:
      region: [eu-west-1, eu-central-1]
    group_by: [region]
    unit: {name: hours, divide_by: 3600, decimals: 3, rounding: half_up}
  - name: least
    event_meter: cpu_seconds
    aggregation: min
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(CatalogError) as raised:
        parse_catalog(yaml.safe_load(text))
    return raised.value.problems


def test_the_issue_example_reads_as_six_meters_and_survives_a_round_trip():
    meters = parse_catalog(yaml.safe_load(SIX))
    by_name = {m.name: m for m in meters}
    assert by_name["active_users"].aggregation is Aggregation.UNIQUE_COUNT
    assert by_name["active_users"].value == "dimensions.user_id"
    assert by_name["eu_cpu"].filter == (("dimensions.region", ("eu-central-1", "eu-west-1")),)
    assert by_name["eu_cpu"].group_by == (("region", "dimensions.region"),)
    catalog = Catalog(3, tuple(meters))
    assert Catalog.from_json(3, catalog.to_json()) == catalog
    assert parse_catalog(yaml.safe_load(catalog_yaml(meters))) == sorted(
        meters, key=lambda m: m.name
    )


def test_openmeter_definitions_read_as_they_are_written():
    [meter] = parse_catalog(
        yaml.safe_load(
            """
meters:
  - slug: tokens_total
    eventType: prompt
    aggregation: SUM
    valueProperty: $.tokens
    groupBy:
      model: $.model
      type: $.type
"""
        )
    )
    assert (meter.name, meter.event_meter, meter.aggregation, meter.value) == (
        "tokens_total",
        "prompt",
        Aggregation.SUM,
        "data.tokens",
    )
    assert meter.group_by == (("model", "data.model"), ("type", "data.type"))


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            "{name: a, event_meter: x, aggregation: avg}",
            "meter 'a': aggregation: 'avg' is not one of sum, count, min, max, latest, "
            "unique_count",
        ),
        (
            "{name: a, event_meter: x, aggregation: count, value: dimensions.user}",
            "meter 'a': value: a count meter counts events and reads no value",
        ),
        (
            "{name: a, event_meter: x, aggregation: sum, filter: {'': [eu]}}",
            "meter 'a': filter.: 'dimensions.' is not quantity, dimensions.<key> or data.<key>",
        ),
        (
            "{name: a, event_meter: x, aggregation: sum, value: payload.n}",
            "meter 'a': value: 'payload.n' is not quantity, dimensions.<key> or data.<key>",
        ),
        (
            "{name: A B, event_meter: x, aggregation: sum}",
            "meter 'A B': name: 'A B' is not 1–128 lower-case letters",
        ),
        (
            "{name: a, event_meter: x, aggregation: sum, colour: red}",
            "meter 'a': key 'colour' is not a meter key",
        ),
        (
            "{slug: a, eventType: x, aggregation: SUM, valueProperty: tokens}",
            "meter 'a': valueProperty: expected a JSONPath like $.tokens, got 'tokens'",
        ),
        (
            "{name: a, event_meter: x, aggregation: sum, group_by: [tenant_id]}",
            "meter 'a': group_by.tenant_id: the name is one of the report's own columns",
        ),
        (
            "{name: a, event_meter: x, aggregation: sum, unit: {name: h, divide_by: 0}}",
            "meter 'a': unit.divide_by: must be a positive number",
        ),
    ],
)
def test_a_bad_meter_is_named_with_the_key_that_is_wrong(entry, expected):
    problems = problems_of(f"meters: [{entry}]")
    assert any(p.startswith(expected) for p in problems), problems


def test_duplicate_names_and_every_problem_are_reported_at_once():
    problems = problems_of(
        """
meters:
  - {name: a, event_meter: x, aggregation: sum}
  - {name: a, event_meter: y, aggregation: count}
  - {name: b, event_meter: y, aggregation: nope}
"""
    )
    assert "meter 'a': the name is used by more than one meter" in problems
    assert any(p.startswith("meter 'b': aggregation") for p in problems)


def test_a_file_that_is_not_yaml_names_the_line(tmp_path):
    path = tmp_path / "meters.yaml"
    path.write_text("meters:\n  - name: [unclosed\n")
    with pytest.raises(CatalogError) as raised:
        read_catalog_file(path)
    assert "not valid YAML at line" in raised.value.problems[0]


def test_without_a_catalog_every_event_meter_is_a_sum_of_its_own():
    [meter] = LEGACY.meters_for("cpu_seconds")
    assert (meter.name, meter.aggregation, meter.value) == (
        "cpu_seconds",
        Aggregation.SUM,
        "quantity",
    )


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("{name: a, event_meter: x, aggregation: sum, group_by: [[region]]}", "group_by"),
        (
            "{name: a, event_meter: x, aggregation: sum, unit: {name: h, rounding: [up]}}",
            "unit.rounding",
        ),
        ("{name: a, event_meter: x, aggregation: sum, group_by: [revision]}", "group_by.revision"),
        (
            "{name: a, event_meter: x, aggregation: sum, group_by: [unvalued_count]}",
            "group_by.unvalued_count",
        ),
        ("{name: a, event_meter: x, aggregation: sum, value: data.dimensions}", "value"),
        ("{slug: a, eventType: x, aggregation: SUM, valueProperty: $.dimensions}", "valueProperty"),
    ],
)
def test_odd_catalogs_are_problems_not_tracebacks(entry, expected):
    problems = problems_of(f"meters: [{entry}]")
    assert any(expected in p for p in problems), problems
    assert all(len(p) < 400 for p in problems)


@pytest.mark.parametrize("path", ["$.value", "$.quantity"])
def test_openmeter_value_and_quantity_properties_read_the_quantity(path):
    [meter] = parse_catalog(
        yaml.safe_load(
            f"meters: [{{slug: a, eventType: x, aggregation: SUM, valueProperty: '{path}'}}]"
        )
    )
    assert meter.value == "quantity"


def test_a_unit_converts_the_largest_windows_exactly():
    from decimal import Decimal

    from meterwax.operators.catalog import Unit

    hours = Unit("hours", Decimal(3600), 3, "half_up")
    assert hours.convert(Decimal("99999999999999999999999999999.999999999")) == Decimal(
        "27777777777777777777777777.778"
    )
    assert Unit("u", Decimal(1), 9).convert(Decimal("12345678901234567890.123456789")) == Decimal(
        "12345678901234567890.123456789"
    )


def test_a_number_too_large_to_print_is_a_problem_not_a_traceback(tmp_path):
    huge = 10**5000
    with pytest.raises(CatalogError) as raised:
        parse_catalog({"meters": [{"name": "a", "event_meter": "x", "aggregation": huge}]})
    assert "aggregation: <int too large to show>" in raised.value.problems[0]
    path = tmp_path / "meters.yaml"
    path.write_text("meters: [{name: a, event_meter: x, aggregation: " + "9" * 5000 + "}]")
    with pytest.raises(CatalogError) as raised:
        read_catalog_file(path)
    assert "not valid YAML" in raised.value.problems[0]
