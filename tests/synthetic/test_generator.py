"""The generator's ``late_follows_valid`` option: late for every clock, per key included."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from meterwax.synthetic.generator import Workload, generate

WINDOW_US = 60_000_000
LATENESS_US = 30_000_000
BASE = Workload(events=20_000, tenants=200, cloudevents=0.0, events_per_second=1000, seed=11)


def test_late_events_follow_a_valid_event_of_their_own_key_far_enough_behind() -> None:
    latest: dict[tuple[str, str], int] = {}
    late = 0
    for message in generate(replace(BASE, late_follows_valid=True)):
        key = (message.tenant_id, message.meter)
        if message.intent == "valid":
            latest[key] = max(message.time_us, latest.get(key, message.time_us))
        elif message.intent == "late":
            late += 1
            assert key in latest, f"late event {message.event_id} for a key with no valid event"
            window_end = message.time_us - message.time_us % WINDOW_US + WINDOW_US
            # closed by the key's own clock (max event time − allowed lateness) …
            assert window_end <= latest[key] - LATENESS_US
            # … and older than that clock's watermark (Bytewax's per-item test)
            assert message.time_us < latest[key] - LATENESS_US
    assert 0.005 * BASE.events < late < 0.015 * BASE.events


def test_the_option_keeps_the_other_shares_and_changes_nothing_when_off() -> None:
    default = [(m.payload, m.intent) for m in generate(BASE)]
    off = [(m.payload, m.intent) for m in generate(replace(BASE, late_follows_valid=False))]
    assert off == default
    on = Counter(m.intent for m in generate(replace(BASE, late_follows_valid=True)))
    assert sum(on.values()) == BASE.events
    assert on.keys() == {"valid", "late", "duplicate", "invalid"}
    assert abs(on["late"] - Counter(i for _, i in default)["late"]) < 0.005 * BASE.events
