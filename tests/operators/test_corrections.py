"""The correction flow's pure decisions."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from meterwax.operators.aggregates import WindowValue
from meterwax.operators.catalog import LEGACY
from meterwax.operators.contract import MAX_QUANTITY_NANOS
from meterwax.operators.corrections import (
    CORRECTIONS_FLOW,
    ChangeReason,
    CurrentWindow,
    LateEvent,
    LedgerEntry,
    classify_late_events,
    fit_in_windows,
    plan_window_changes,
    reconcile_with_audit,
)
from meterwax.operators.decode import Event

MINUTE = 60_000_000


def late(event_id: str, offset: int, tenant: str = "acme") -> LateEvent:
    return LateEvent(Event(tenant, event_id, "api_calls", 1, 0), "kafka:usage", 0, offset, 0)


def test_late_events_are_new_duplicates_or_already_inserted_by_this_correction():
    batch = [late("a", 10), late("b", 11), late("c", 12), late("a", 13)]
    ledger = {
        ("acme", "b"): LedgerEntry("metering", ("kafka:usage", 0, 2)),  # counted on time
        ("acme", "c"): LedgerEntry(CORRECTIONS_FLOW, ("kafka:usage", 0, 12)),  # our own insert
    }
    result = classify_late_events(batch, ledger)
    assert [e.event.id for e in result.new] == ["a"]
    assert [e.event.id for e in result.already_inserted] == ["c"]
    assert [(e.event.id, e.origin_offset) for e in result.duplicates] == [("b", 11), ("a", 13)]
    assert [e.event.id for e in result.counted] == ["a", "c"]


def test_a_late_retry_of_another_corrections_insert_is_a_duplicate():
    ledger = {("acme", "a"): LedgerEntry(CORRECTIONS_FLOW, ("kafka:usage", 0, 3))}
    result = classify_late_events([late("a", 9)], ledger)
    assert result.duplicates == [late("a", 9)]


def test_the_same_message_counted_by_a_replay_is_not_a_duplicate():
    ledger = {("acme", "a"): LedgerEntry("replay", ("kafka:usage", 0, 9))}
    result = classify_late_events([late("a", 9)], ledger)
    assert result.already_inserted == [late("a", 9)]


def test_classification_does_not_depend_on_input_order():
    batch = [late("a", 13), late("a", 10), late("b", 11)]
    assert classify_late_events(batch, {}) == classify_late_events(list(reversed(batch)), {})


window_keys = st.tuples(
    st.sampled_from(["acme", "zeta"]),
    st.sampled_from(["calls", "gb"]),
    st.integers(0, 5).map(lambda m: m * MINUTE),
    st.just(""),
)
values = st.builds(WindowValue, st.integers(0, 10**12), st.integers(0, 50))


def slice_of_key(key):
    return key[:3]


@given(
    recomputed=st.dictionaries(window_keys, values, max_size=8),
    current=st.dictionaries(window_keys, st.tuples(values, st.integers(0, 4)), max_size=8),
)
def test_applying_the_planned_changes_makes_every_window_equal_the_ledger(recomputed, current):
    affected = {slice_of_key(k) for k in set(recomputed) | set(current)}
    rows = {k: CurrentWindow(v, r) for k, (v, r) in current.items()}
    changes = plan_window_changes(
        recomputed,
        rows,
        catalog=LEGACY,
        window_us=MINUTE,
        late_ids={},
        reasons={k: [ChangeReason.LATE_EVENTS] for k in affected},
    )
    after = {k: row.value for k, row in rows.items()}
    for change in changes:
        assert change.previous == (rows[change.key].value if change.key in rows else None)
        assert change.revision == (rows[change.key].revision + 1 if change.key in rows else 1)
        before = change.previous or WindowValue(0, 0)
        assert change.delta == (
            change.new.quantity_nanos - before.quantity_nanos,
            change.new.event_count - before.event_count,
        )
        assert change.reason == "late_events"
        after[change.key] = change.new
    for key in set(recomputed) | set(current):
        assert after.get(key, WindowValue(0, 0)) == recomputed.get(key, WindowValue(0, 0))
    assert all(c.new != (c.previous or WindowValue(0, 0)) or c.previous is None for c in changes)


def test_a_change_audited_by_an_interrupted_run_is_applied_but_not_audited_again():
    key = ("acme", "calls", 0, "")
    [change] = plan_window_changes(
        {key: WindowValue(5, 2)},
        {key: CurrentWindow(WindowValue(3, 1), 0)},
        catalog=LEGACY,
        window_us=MINUTE,
        late_ids={key[:3]: ["x"]},
        reasons={key[:3]: [ChangeReason.LATE_EVENTS]},
    )
    assert change.late_event_ids == ("x",)
    to_audit, apply_only = reconcile_with_audit([change], {(key, 1): (5, 2, 0)})
    assert to_audit == []
    assert apply_only == [change]


def test_a_change_after_an_audited_one_is_chained_one_revision_higher():
    key = ("acme", "calls", 0, "")
    [change] = plan_window_changes(
        {key: WindowValue(9, 3)},
        {key: CurrentWindow(WindowValue(3, 1), 0)},
        catalog=LEGACY,
        window_us=MINUTE,
        late_ids={},
        reasons={key[:3]: [ChangeReason.WINDOW_CONFLICT]},
    )
    to_audit, apply_only = reconcile_with_audit([change], {(key, 1): (5, 2, 0)})
    assert apply_only == []
    assert [(c.revision, c.previous, c.new) for c in to_audit] == [
        (2, WindowValue(5, 2), WindowValue(9, 3))
    ]


def late_with(event_id: str, offset: int, quantity: int, minute: int = 0) -> LateEvent:
    start = minute * MINUTE
    return LateEvent(
        Event("acme", event_id, "api_calls", quantity, start + 1), "kafka:usage", 0, offset, start
    )


def test_a_late_copy_with_other_content_is_conflicting_not_a_duplicate():
    counted = late_with("a", 3, 5)
    ledger = {("acme", "a"): LedgerEntry("metering", counted.coordinates, counted.content)}
    batch = [
        late_with("a", 9, 5),
        late_with("a", 10, 6),
        late_with("b", 11, 1),
        late_with("b", 12, 2),
    ]
    result = classify_late_events(batch, ledger)
    assert [(e.event.id, e.origin_offset) for e in result.duplicates] == [("a", 9)]
    assert [(e.event.id, e.origin_offset) for e in result.conflicting] == [("a", 10), ("b", 12)]
    assert [e.origin_offset for e in result.new] == [11]


def test_a_ledger_copy_of_unknown_content_only_makes_duplicates():
    ledger = {("acme", "a"): LedgerEntry("metering", ("kafka:usage", 0, 1))}
    assert classify_late_events([late_with("a", 9, 7)], ledger).duplicates == [late_with("a", 9, 7)]


@given(
    quantities=st.lists(st.integers(0, MAX_QUANTITY_NANOS), max_size=12),
    start=st.integers(0, MAX_QUANTITY_NANOS),
)
def test_fitting_keeps_each_window_within_the_bound_in_order(quantities, start):
    items = [late_with(f"e{i}", i, q, minute=i % 2) for i, q in enumerate(quantities)]
    kept, left_out = fit_in_windows(
        items,
        contributions_of=lambda e: [(e.slice, e.event.quantity_nanos)],
        totals={("acme", "api_calls", 0): start},
    )
    assert sorted(kept + left_out, key=lambda e: e.origin_offset) == items
    for minute, base in ((0, start), (1, 0)):
        running = base
        for item in items:
            if item.window_start_us != minute * MINUTE:
                continue
            fits = running + item.event.quantity_nanos <= MAX_QUANTITY_NANOS
            assert (item in kept) == fits
            running += item.event.quantity_nanos if fits else 0
