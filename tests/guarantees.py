"""Checks of guarantees G1–G5 (docs/guarantees.md) against the messages really stored in the topic.

Each check computes what the lake must hold independently, from the stored messages and the
generator's intents, never from meterwax's own code paths.
"""

from __future__ import annotations

import itertools
from collections import Counter

from meterwax.sinks.lake import Lake
from meterwax.sinks.schemas import (
    EVENTS,
    QUARANTINE,
    USAGE_CORRECTIONS,
    USAGE_WINDOWS,
)
from meterwax.synthetic.generator import Generated
from tests.helpers import generated_windows, rows
from tests.kafka_helpers import Stored, read_topic
from tests.processes import run_meterwax


def check_g1_ledger(lake: Lake, messages: list[Generated]) -> None:
    """Each valid (tenant_id, id) is in the ledger exactly once, and nothing else is."""
    keys = Counter((r["tenant_id"], r["id"]) for r in rows(lake, EVENTS))
    assert max(keys.values(), default=1) == 1, [k for k, n in keys.items() if n > 1][:5]
    valid = {(m.tenant_id, m.event_id) for m in messages if m.intent in {"valid", "late"}}
    assert set(keys) == valid, (len(set(keys) - valid), len(valid - set(keys)))


def check_g2_totals(lake: Lake, messages: list[Generated]) -> None:
    """Every window equals the exact total and count of its unique valid events."""
    windows = {
        (r["tenant_id"], r["meter"], r["window_start"]): (r["quantity"], r["event_count"])
        for r in rows(lake, USAGE_WINDOWS)
    }
    expected = generated_windows(messages, late_too=True)
    wrong = {k for k in set(windows) | set(expected) if windows.get(k) != expected.get(k)}
    assert not wrong, sorted(wrong)[:5]


def check_g3_audit(lake: Lake) -> None:
    """Every window changed after its first write has a gap-free chain of audit rows."""
    windows = {
        (r["tenant_id"], r["meter"], r["window_start"], r.get("group_key") or ""): r
        for r in rows(lake, USAGE_WINDOWS)
    }
    chains: dict = {}
    for row in rows(lake, USAGE_CORRECTIONS):
        key = (row["tenant_id"], row["meter"], row["window_start"], row.get("group_key") or "")
        chains.setdefault(key, []).append(row)
    assert {k for k, w in windows.items() if w["revision"] > 0} == set(chains)
    for key, chain in chains.items():
        chain.sort(key=lambda r: r["revision"])
        assert [r["revision"] for r in chain] == list(range(1, windows[key]["revision"] + 1))
        for before, after in itertools.pairwise(chain):
            assert (after["previous_quantity"], after["previous_event_count"]) == (
                before["new_quantity"],
                before["new_event_count"],
            )
        assert (chain[-1]["new_quantity"], chain[-1]["new_event_count"]) == (
            windows[key]["quantity"],
            windows[key]["event_count"],
        )


def check_g4_accounting(lake: Lake, stored: list[Stored], *, origin: str) -> None:
    """Every stored message ends in exactly one of: ledger, duplicate, quarantine."""
    ledger = rows(lake, EVENTS)
    by_coordinates = {
        (r["origin_partition"], r["origin_offset"]) for r in ledger if r["origin"] == origin
    }
    keys_of = {(r["tenant_id"], r["id"]) for r in ledger}
    quarantined = Counter(
        (r["origin_partition"], r["origin_offset"])
        for r in rows(lake, QUARANTINE)
        if r["origin"] == origin
    )
    assert max(quarantined.values(), default=1) == 1
    from meterwax.operators.decode import Event, decode

    for message in stored:
        where = (message.partition, message.offset)
        decoded = decode(message.value)
        duplicate = (
            isinstance(decoded, Event)
            and where not in by_coordinates
            and (decoded.tenant_id, decoded.id) in keys_of
        )
        outcomes = (where in by_coordinates) + (where in quarantined) + duplicate
        assert outcomes == 1, (where, message.value[:120] if message.value else None, outcomes)


def check_g4_line_by_line(
    lake: Lake, messages: list[tuple[int, int, bytes | None]], *, origin: str, max_bytes: int
) -> Counter[str]:
    """Every message ``(partition, offset, payload)`` ends in exactly one place.

    The ledger (at its own coordinates, by the main flow or the correction flow), quarantine
    (at its coordinates), a duplicate (a valid event whose key was counted elsewhere, or whose
    counted-to-be copy a rule quarantined), or a heartbeat. Returns how many of each.
    """
    from meterwax.operators.decode import Event, Heartbeat, decode

    ledger = rows(lake, EVENTS)
    at_ledger = Counter(
        (r["origin_partition"], r["origin_offset"]) for r in ledger if r["origin"] == origin
    )
    assert max(at_ledger.values(), default=1) == 1
    keys = {(r["tenant_id"], r["id"]) for r in ledger}
    quarantine = [r for r in rows(lake, QUARANTINE) if r["origin"] == origin]
    at_quarantine = Counter((r["origin_partition"], r["origin_offset"]) for r in quarantine)
    assert max(at_quarantine.values(), default=1) == 1
    rejected_keys = {(r["tenant_id"], r["event_id"]) for r in quarantine if r["tenant_id"]}
    seen: Counter[str] = Counter()
    for partition, offset, payload in messages:
        where = (partition, offset)
        decoded = decode(payload, max_bytes=max_bytes)
        in_ledger, in_quarantine = where in at_ledger, where in at_quarantine
        elsewhere = not in_ledger and not in_quarantine
        duplicate = (
            elsewhere
            and isinstance(decoded, Event)
            and ((decoded.tenant_id, decoded.id) in keys | rejected_keys)
        )
        heartbeat = elsewhere and isinstance(decoded, Heartbeat)
        outcomes = in_ledger + in_quarantine + duplicate + heartbeat
        assert outcomes == 1, (where, payload[:160] if payload else payload, outcomes)
        seen[
            "ledger"
            if in_ledger
            else "quarantine"
            if in_quarantine
            else "duplicate"
            if duplicate
            else "heartbeat"
        ] += 1
    return seen


def check_g1_to_g4_against_the_topic(
    lake: Lake, bootstrap: str, topic: str, messages: list[Generated]
) -> None:
    """Apply pending corrections, then G1–G4 against what ``topic`` holds (reconcile clean)."""
    assert run_meterwax("corrections", "--lake", lake.root, "--once").returncode == 0
    assert run_meterwax("reconcile", "--lake", lake.root).returncode == 0
    stored = read_topic(bootstrap, topic)
    assert len(stored) == len(messages)
    check_g1_ledger(lake, messages)
    check_g2_totals(lake, messages)
    check_g3_audit(lake)
    check_g4_accounting(lake, stored, origin=f"kafka:{topic}")
