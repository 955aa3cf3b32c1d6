"""The compact dedupe index against a plain dict that applies the documented rule."""

from __future__ import annotations

import hashlib
import pickle

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from meterwax.operators.dedupe import (
    BUCKET_US,
    NOT_FOUND,
    UNKNOWN_CONTENT,
    DedupeIndex,
    DedupeSnapshot,
    alive_from,
    bucket_of,
    content_fingerprint,
    dedupe_key,
)

MINUTE = 60_000_000

# (tenant index, id index, event minute, event second, content variant)
arrivals = st.lists(
    st.tuples(
        st.integers(0, 2),
        st.integers(0, 15),
        st.integers(0, 120),
        st.integers(0, 59),
        st.integers(1, 3),
    ),
    max_size=120,
)


def reference_seen(items, horizon_us, counted):
    """Plain-dict model: a key is seen while its minute is alive; it answers the content it was
    remembered with. ``counted(i)`` says whether arrival i, if new, is remembered."""
    newest: dict[tuple[int, int], tuple[int, int]] = {}
    max_time = None
    answers = []
    for i, (tenant, event_id, minute, second, content) in enumerate(items):
        time_us = minute * MINUTE + second * 1_000_000
        key = (tenant, event_id)
        cutoff = None if max_time is None else (max_time - horizon_us) // BUCKET_US
        seen = newest.get(key)
        alive = seen is not None and (cutoff is None or seen[0] >= cutoff)
        answers.append(seen[1] if alive else None)
        if not alive and counted(i):
            newest[key] = (time_us // BUCKET_US, content)
            max_time = time_us if max_time is None else max(max_time, time_us)
    return answers


def index_seen(items, horizon_us, batch_size, merge_every, counted, *, restore=True):
    index = DedupeIndex(merge_every=merge_every)
    max_time = None
    answers = []
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        keys = [dedupe_key(f"tenant-{t}", f"id-{i}") for t, i, _, _, _ in batch]
        buckets, contents = index.lookup(keys)
        for offset, (key, (_, _, minute, second, content)) in enumerate(
            zip(keys, batch, strict=True)
        ):
            time_us = minute * MINUTE + second * 1_000_000
            oldest_alive = alive_from(max_time, horizon_us)
            seen = index.find(key, int(buckets[offset]), int(contents[offset]), oldest_alive)
            answers.append(seen)
            if seen is None and counted(start + offset):
                index.remember(key, bucket_of(time_us), content, oldest_alive)
                max_time = time_us if max_time is None else max(max_time, time_us)
        index.maintain(alive_from(max_time, horizon_us))
        if restore:  # as after a crash: every batch resumes from the previous snapshot
            index = DedupeIndex(
                pickle.loads(pickle.dumps(index.snapshot())), merge_every=merge_every
            )
    return answers


@given(
    items=arrivals,
    horizon_minutes=st.integers(0, 90),
    batch_size=st.integers(1, 40),
    merge_every=st.integers(1, 64),
    restore=st.booleans(),
    rejected=st.sets(st.integers(0, 119)),
)
def test_index_matches_the_reference_whatever_the_batching(
    items, horizon_minutes, batch_size, merge_every, restore, rejected
):
    horizon_us = horizon_minutes * MINUTE

    def counted(i):  # arrivals a later rule rejects (too late, overflow…) are not remembered
        return i not in rejected

    answers = index_seen(items, horizon_us, batch_size, merge_every, counted, restore=restore)
    assert answers == reference_seen(items, horizon_us, counted)


def test_a_copy_with_other_content_is_seen_with_the_first_copys_fingerprint():
    index = DedupeIndex(merge_every=1)
    key = dedupe_key("acme", "e1")
    first = content_fingerprint("api_calls", 2_000_000_000, 0)
    retry = content_fingerprint("api_calls", 2_000_000_000, 0)
    other = content_fingerprint("api_calls", 3_000_000_000, 0)
    assert first == retry != other
    assert first != content_fingerprint("cpu_seconds", 2_000_000_000, 0)
    assert first != content_fingerprint("api_calls", 2_000_000_000, 1)
    alive = alive_from(None, MINUTE)
    assert index.find(key, *map(int, (b[0] for b in index.lookup([key]))), alive) is None
    index.remember(key, 0, first, alive)
    assert index.find(key, NOT_FOUND, 0, alive) == first  # recent keys
    index.maintain(alive)  # merged into the frozen columns (merge_every=1)
    buckets, contents = index.lookup([key])
    assert index.find(key, int(buckets[0]), int(contents[0]), alive) == first


def test_a_key_is_forgotten_once_its_minute_leaves_the_horizon():
    index = DedupeIndex(merge_every=1)
    key = dedupe_key("acme", "e1")
    index.remember(key, bucket_of(0), 7, alive_from(None, MINUTE))
    index.maintain(alive_from(0, MINUTE))
    # Still alive one horizon later...
    buckets, contents = index.lookup([key])
    assert index.find(key, int(buckets[0]), int(contents[0]), alive_from(MINUTE, MINUTE)) == 7
    # ...gone when the max event time is two minutes past it.
    index.maintain(alive_from(2 * MINUTE + 1, MINUTE))
    assert len(index) == 0


def test_a_snapshot_of_meterwax_0_1_keeps_its_keys_with_unknown_content():
    # 0.1 stored whole 16-byte digests: frozen as two words, recent ones as dict keys.
    def old_digest(tenant, event_id):
        data = len(tenant).to_bytes(2, "little") + tenant.encode() + event_id.encode()
        return hashlib.blake2b(data, digest_size=16).digest()

    frozen = sorted(old_digest("acme", f"f{n}") for n in range(5))
    words = np.frombuffer(b"".join(frozen), dtype="<u8").reshape(-1, 2)
    order = np.argsort(words[:, 0], kind="stable")
    # What unpickling a 0.1 snapshot gives: four fields set, key_format missing.
    old = object.__new__(DedupeSnapshot)
    old.__setstate__(
        [
            words[order, 0].copy(),
            words[order, 1].copy(),
            np.full(5, 10, dtype=np.int32),
            {old_digest("acme", "p1"): 11},
        ]
    )
    index = DedupeIndex(old)
    keys = [dedupe_key("acme", name) for name in ("f0", "f4", "p1", "never")]
    buckets, contents = index.lookup(keys)
    found = [
        index.find(k, int(b), int(c), 0) for k, b, c in zip(keys, buckets, contents, strict=True)
    ]
    assert found == [UNKNOWN_CONTENT, UNKNOWN_CONTENT, UNKNOWN_CONTENT, None]


def test_tenant_is_part_of_the_key():
    assert dedupe_key("a", "bc") != dedupe_key("ab", "c")
    assert dedupe_key("acme", "e1") != dedupe_key("other", "e1")


def test_keys_cost_about_20_bytes_after_each_batch_and_at_most_24_at_any_moment():
    # 20 bytes a key in either set of columns; only the batch in hand is in the dict (about
    # 170 bytes a key). Maintained once per 2,500-key batch, as the processor does.
    index = DedupeIndex()
    after_batches, anywhere = [], []
    for n in range(1, 250_001):
        index.remember(dedupe_key("acme", f"id-{n}"), 0, n, alive_from(None, MINUTE))
        if n % 2_500 == 0:
            index.maintain(alive_from(0, MINUTE))
            after_batches.append(index.nbytes / len(index))
        elif n >= 200_000 and n % 997 == 0:
            anywhere.append(index.nbytes / len(index))
    assert len(index) == 250_000
    assert max(after_batches) <= 20.0  # the dict is empty after maintenance
    assert max(anywhere) <= 24


@given(
    meters=st.tuples(st.sampled_from(["a", "b", "api_calls"]), st.sampled_from(["a", "b"])),
    quantities=st.tuples(st.integers(0, 10**38 - 1), st.integers(0, 10**38 - 1)),
    times=st.tuples(st.integers(0, 2**55), st.integers(0, 2**55)),
)
def test_a_fingerprint_tells_copies_apart_by_what_they_bill(meters, quantities, times):
    one = content_fingerprint(meters[0], quantities[0], times[0])
    two = content_fingerprint(meters[1], quantities[1], times[1])
    assert 0 < one < 2**32 and 0 < two < 2**32  # never UNKNOWN_CONTENT
    assert content_fingerprint(meters[0], quantities[0], times[0]) == one  # stable


def test_small_differences_in_quantity_or_time_always_change_the_fingerprint():
    time_us = 1_767_603_600_000_000
    base = content_fingerprint("api_calls", 1_500_000_000, time_us)
    for delta in (1, 10**9, 2**32, 2**40, 10**20, 2**64):
        assert content_fingerprint("api_calls", 1_500_000_000 + delta, time_us) != base
    for delta in (1, 10**6, 2**32, 2**40):  # event times are below 2**55
        assert content_fingerprint("api_calls", 1_500_000_000, time_us + delta) != base


def test_no_structured_quantity_difference_leaves_the_fingerprint_unchanged():
    # Differences of a power of two at every bit position of a decimal(38, 9) quantity (and
    # of a sum of two): a fold that drops or aliases high bits collides on one of them.
    time_us = 1_767_603_600_000_000
    for base in (1, 10**9, 2**70 + 12345):
        fingerprint = content_fingerprint("m", base, time_us)
        for bit in range(127):
            other = base + (1 << bit)
            if other <= 10**38 - 1:
                assert content_fingerprint("m", other, time_us) != fingerprint, (base, bit)


def test_a_snapshot_with_fingerprints_of_the_old_function_keeps_its_keys_as_unknown_content():
    index = DedupeIndex(merge_every=2)
    keys = [dedupe_key("acme", f"e{n}") for n in range(3)]
    for n, key in enumerate(keys):
        index.remember(key, 5, 1000 + n, 0)
    index.maintain(0)
    old = index.snapshot()
    object.__setattr__(old, "key_format", 2)  # as meterwax wrote them before
    restored = DedupeIndex(old)
    buckets, contents = restored.lookup(keys)
    found = [
        restored.find(k, int(b), int(c), 0) for k, b, c in zip(keys, buckets, contents, strict=True)
    ]
    assert found == [UNKNOWN_CONTENT] * 3
