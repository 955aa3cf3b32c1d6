"""Coming from OpenMeter: its events and its meter definitions, unchanged, window by window.

OpenMeter producers send CloudEvents whose ``data`` has arbitrary fields and no quantity.
Under OpenMeter's own meter definitions (``slug``, ``eventType``, ``valueProperty``,
``groupBy``) every window must equal ``tests/catalog_reference.py`` over the events, with
events that lack the value or carry one that is not a decimal counted as unvalued, never
dropped; late events and retries included.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import orjson
import yaml
from click.testing import CliRunner

from meterwax.cli.main import main
from meterwax.sinks.lake import Lake
from meterwax.sinks.schemas import EVENTS, QUARANTINE, USAGE_WINDOWS
from tests.catalog_reference import comparable, lake_windows, meter_windows, parse_event
from tests.helpers import rows, run_cli

OPENMETER_METERS = """
meters:
  - slug: tokens_total
    description: Tokens by model and type
    eventType: prompt
    aggregation: SUM
    valueProperty: $.tokens
    groupBy:
      model: $.model
      type: $.type
  - slug: prompts
    eventType: prompt
    aggregation: COUNT
  - slug: users
    eventType: prompt
    aggregation: UNIQUE_COUNT
    valueProperty: $.user
  - slug: biggest_prompt
    eventType: prompt
    aggregation: MAX
    valueProperty: $.tokens
  - slug: last_prompt
    eventType: prompt
    aggregation: LATEST
    valueProperty: $.tokens
"""
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def invoke(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def openmeter_stream(seed: int = 5, size: int = 1500) -> tuple[list[bytes], list[bytes]]:
    """(messages in arrival order, the payloads meant to be counted: first copies)."""
    rng = random.Random(seed)
    messages, counted = [], []
    for number in range(size):
        moment = T0 + timedelta(seconds=number * 2 + rng.randint(-3, 3))
        if rng.random() < 0.03:
            moment -= timedelta(minutes=rng.randint(3, 20))  # late: its window has closed
        data: dict[str, object] = {
            "model": rng.choice(["gpt-4", "small"]),
            "user": f"u{rng.randint(1, 30)}",
        }
        if rng.random() < 0.5:
            data["type"] = rng.choice(["input", "output"])
        roll = rng.random()
        if roll < 0.85:
            data["tokens"] = (
                str(rng.randint(1, 5000)) if rng.random() < 0.5 else rng.randint(1, 5000)
            )
        elif roll < 0.92:
            data["tokens"] = "many"  # not a decimal: unvalued
        # else: no tokens at all: unvalued
        payload = orjson.dumps(
            {
                "specversion": "1.0",
                "type": "prompt",
                "id": f"om-{number}",
                "time": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "source": "my-app",
                "subject": f"customer-{rng.randint(1, 4)}",
                "data": data,
            }
        )
        messages.append(payload)
        counted.append(payload)
        if rng.random() < 0.02:
            messages.append(payload)  # a retry
    return messages, counted


def test_openmeter_events_and_meters_window_by_window(tmp_path):
    messages, counted = openmeter_stream()
    source = tmp_path / "openmeter.jsonl"
    source.write_bytes(b"".join(m + b"\n" for m in messages))
    catalog = tmp_path / "openmeter.yaml"
    catalog.write_text(OPENMETER_METERS)
    lake = Lake(tmp_path / "lake")

    applied = json.loads(
        invoke("meters", "apply", str(catalog), "--lake", lake.root, "--format", "json")
    )
    assert sorted(applied["new"]) == [
        "biggest_prompt",
        "last_prompt",
        "prompts",
        "tokens_total",
        "users",
    ]
    summary = run_cli("--input", str(source), "--lake", lake.root)
    assert summary["quarantined"] == 0, rows(lake, QUARANTINE)[:3]
    assert summary["accounted"] is True
    assert summary["late"] > 0 and summary["duplicates"] > 0
    invoke("corrections", "--lake", lake.root, "--once")

    document = yaml.safe_load(OPENMETER_METERS)
    expected = meter_windows(
        [parse_event(p) for p in counted], document["meters"], timedelta(minutes=1)
    )
    got = lake_windows(rows(lake, USAGE_WINDOWS))
    assert comparable(got) == comparable(expected)
    # Nothing skipped silently: unvalued tokens are counted per window, and the ledger keeps
    # every event with its data (no quantity) for the next definition.
    assert sum(v["unvalued"] for k, v in got.items() if k[1] == "tokens_total") > 0
    ledger = rows(lake, EVENTS)
    assert len(ledger) == len(counted)
    assert all(r["quantity"] is None and dict(r["data"])["model"] for r in ledger)
    # Grouped rows carry one column per groupBy key.
    windows = json.loads(
        invoke("usage", "--lake", lake.root, "--meter", "tokens_total", "--format", "json")
    )
    assert windows and all({"model", "type"} <= set(w) for w in windows)
    invoke("reconcile", "--lake", lake.root)
