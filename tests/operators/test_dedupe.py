"""The compact dedupe index against a plain dict that applies the documented rule."""

from __future__ import annotations

import pickle

from hypothesis import given
from hypothesis import strategies as st

from meterwax.operators.dedupe import (
    BUCKET_US,
    DedupeIndex,
    alive_from,
    bucket_of,
    dedupe_key,
)

MINUTE = 60_000_000

# (tenant index, id index, event minute, event second)
arrivals = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 15), st.integers(0, 120), st.integers(0, 59)),
    max_size=120,
)


def reference_duplicates(items, horizon_us):
    """Plain-dict model: a key is a duplicate while its minute is alive."""
    newest: dict[tuple[int, int], int] = {}
    max_time = None
    flags = []
    for tenant, event_id, minute, second in items:
        time_us = minute * MINUTE + second * 1_000_000
        key = (tenant, event_id)
        cutoff = None if max_time is None else (max_time - horizon_us) // BUCKET_US
        seen = key in newest and (cutoff is None or newest[key] >= cutoff)
        flags.append(seen)
        if not seen:
            newest[key] = time_us // BUCKET_US
            max_time = time_us if max_time is None else max(max_time, time_us)
    return flags


def index_duplicates(items, horizon_us, batch_size, merge_every, *, restore=True):
    index = DedupeIndex(merge_every=merge_every)
    max_time = None
    flags = []
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        digests = [dedupe_key(f"tenant-{t}", f"id-{i}") for t, i, _, _ in batch]
        frozen = index.lookup(digests).tolist()
        for digest, found, (_, _, minute, second) in zip(digests, frozen, batch, strict=True):
            time_us = minute * MINUTE + second * 1_000_000
            duplicate = index.check_and_add(
                digest, found, bucket_of(time_us), alive_from(max_time, horizon_us)
            )
            flags.append(duplicate)
            if not duplicate:
                max_time = time_us if max_time is None else max(max_time, time_us)
        index.maintain(alive_from(max_time, horizon_us))
        if restore:  # as after a crash: every batch resumes from the previous snapshot
            index = DedupeIndex(
                pickle.loads(pickle.dumps(index.snapshot())), merge_every=merge_every
            )
    return flags


@given(
    items=arrivals,
    horizon_minutes=st.integers(0, 90),
    batch_size=st.integers(1, 40),
    merge_every=st.integers(1, 8),
    restore=st.booleans(),
)
def test_index_matches_the_reference_whatever_the_batching(
    items, horizon_minutes, batch_size, merge_every, restore
):
    horizon_us = horizon_minutes * MINUTE
    flags = index_duplicates(items, horizon_us, batch_size, merge_every, restore=restore)
    assert flags == reference_duplicates(items, horizon_us)


def test_a_key_is_forgotten_once_its_minute_leaves_the_horizon():
    index = DedupeIndex(merge_every=1)
    key = dedupe_key("acme", "e1")
    assert not index.check_and_add(
        key, int(index.lookup([key])[0]), bucket_of(0), alive_from(None, MINUTE)
    )
    index.maintain(alive_from(0, MINUTE))
    # Still alive one horizon later...
    assert index.check_and_add(key, int(index.lookup([key])[0]), 0, alive_from(MINUTE, MINUTE))
    # ...gone when the max event time is two minutes past it.
    index.maintain(alive_from(2 * MINUTE + 1, MINUTE))
    assert len(index) == 0


def test_tenant_is_part_of_the_key():
    assert dedupe_key("a", "bc") != dedupe_key("ab", "c")
    assert dedupe_key("acme", "e1") != dedupe_key("other", "e1")


def test_keys_cost_at_most_32_bytes_in_steady_state():
    # 20 bytes a frozen key, plus recent keys (at most 1/8 of the frozen ones) in a dict.
    index = DedupeIndex(merge_every=1000)
    for n in range(10_000):
        digest = dedupe_key("acme", f"id-{n}")
        index.check_and_add(digest, int(index.lookup([digest])[0]), 0, alive_from(None, MINUTE))
        if n % 1000 == 999:
            index.maintain(alive_from(0, MINUTE))
    assert len(index) == 10_000
    assert index.nbytes / len(index) <= 32
