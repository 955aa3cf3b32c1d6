"""A compact index of idempotency keys, remembered for a horizon of event time.

Each (tenant_id, id) key is reduced to a 128-bit BLAKE2b digest (a collision is not expected in
the lifetime of the universe at any realistic event rate; 64 bits would be expected to drop one
legitimate event somewhere in ~10¹² events, which billing cannot accept) and stored with the
minute of its event time. Recent keys live in a dict; older ones are merged into three sorted
numpy columns, about 20 bytes a key, searched once per batch with one vectorised call. Recent
keys are merged once they are 8,192 or a sixteenth of the frozen ones, whichever is more,
which keeps the whole index under 26 bytes a key in steady state.

Semantics (deterministic, independent of batch sizes and of when maintenance runs): a key is a
duplicate if it was added before and its minute ``b`` is still alive, i.e.
``(b + 1) · minute > max_event_time − horizon`` at the moment of the check. Maintenance only
discards keys that can never be alive again, because the partition's max event time only grows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BUCKET_US = 60_000_000
"""Keys are aged by the minute of their event time."""
NOT_FOUND = np.iinfo(np.int32).min
"""Bucket value meaning "not in the frozen columns"."""
_DIGEST_BYTES = 16


def dedupe_key(tenant_id: str, event_id: str) -> bytes:
    """The 16-byte digest that stands for (tenant_id, id). Stable across processes and runs."""
    tenant = tenant_id.encode()
    return hashlib.blake2b(
        len(tenant).to_bytes(2, "little") + tenant + event_id.encode(), digest_size=_DIGEST_BYTES
    ).digest()


def bucket_of(time_us: int) -> int:
    """The minute (since the epoch) that ages a key with this event time."""
    return time_us // BUCKET_US


def alive_from(max_event_us: int | None, horizon_us: int) -> int:
    """The oldest bucket still remembered when the partition has seen ``max_event_us``."""
    if max_event_us is None:
        return NOT_FOUND + 1
    return (max_event_us - horizon_us) // BUCKET_US


@dataclass(frozen=True, slots=True)
class DedupeSnapshot:
    """Recovery state. The arrays are never mutated after creation, so sharing them is safe."""

    word0: np.ndarray
    word1: np.ndarray
    buckets: np.ndarray
    pending: dict[bytes, int]


class DedupeIndex:
    """Set of key digests with an event-time age, in about 20 bytes a key.

    Use it a batch at a time::

        frozen = index.lookup(digests)            # one vectorised search per batch
        for i, digest in enumerate(digests):      # then, in offset order:
            duplicate = index.check_and_add(digest, frozen[i], bucket, oldest_alive)
        index.maintain(oldest_alive)              # merge recent keys, forget dead ones
    """

    def __init__(self, snapshot: DedupeSnapshot | None = None, *, merge_every: int = 8_192) -> None:
        self._merge_every = merge_every
        self._swept_below = NOT_FOUND
        """Every stored key's bucket is at least this (the last sweep's ``oldest_alive``)."""
        if snapshot is None:
            self._word0 = np.empty(0, dtype=np.uint64)
            self._word1 = np.empty(0, dtype=np.uint64)
            self._buckets = np.empty(0, dtype=np.int32)
            self._pending: dict[bytes, int] = {}
        else:
            self._word0, self._word1 = snapshot.word0, snapshot.word1
            self._buckets = snapshot.buckets
            self._pending = dict(snapshot.pending)

    def __len__(self) -> int:
        return len(self._word0) + len(self._pending)

    @property
    def nbytes(self) -> int:
        """Approximate memory held by the index (frozen columns plus the recent-keys dict)."""
        pending = 0
        if self._pending:
            # dict slot (~3 words + load factor) plus one 16-byte bytes object (49 bytes) per key.
            pending = len(self._pending) * (8 * 3 * 3 // 2 + 49)
        return self._word0.nbytes + self._word1.nbytes + self._buckets.nbytes + pending

    def lookup(self, digests: Sequence[bytes]) -> np.ndarray:
        """For each digest, the newest bucket it has in the frozen columns, or NOT_FOUND."""
        found = np.full(len(digests), NOT_FOUND, dtype=np.int32)
        size = len(self._word0)
        if not digests or size == 0:
            return found
        query = np.frombuffer(b"".join(digests), dtype="<u8").reshape(-1, 2)
        query0, query1 = query[:, 0], query[:, 1]
        position = np.searchsorted(self._word0, query0)
        clipped = np.minimum(position, size - 1)
        first_word = self._word0[clipped] == query0
        exact = first_word & (self._word1[clipped] == query1)
        found[exact] = self._buckets[clipped[exact]]
        # A first word shared by more than one stored key: a re-added key, or a 64-bit collision.
        # Rare; resolve those exactly by scanning the run.
        following = np.minimum(clipped + 1, size - 1)
        run = first_word & (clipped + 1 < size) & (self._word0[following] == query0)
        for i in np.flatnonzero(run | (first_word & ~exact)):
            found[i] = self._scan_run(int(clipped[i]), int(query0[i]), int(query1[i]))
        return found

    def _scan_run(self, start: int, word0: int, word1: int) -> int:
        newest = NOT_FOUND
        index = start
        while index < len(self._word0) and int(self._word0[index]) == word0:
            if int(self._word1[index]) == word1:
                newest = max(newest, int(self._buckets[index]))
            index += 1
        return newest

    def check_and_add(
        self, digest: bytes, frozen_bucket: int, bucket: int, oldest_alive: int
    ) -> bool:
        """Return True if ``digest`` is an alive duplicate; otherwise remember it, return False."""
        if frozen_bucket >= oldest_alive:
            return True
        recent = self._pending.get(digest)
        if recent is not None and recent >= oldest_alive:
            return True
        if bucket >= oldest_alive:  # a key already dead could never match: not worth keeping
            self._pending[digest] = bucket
        return False

    def maintain(self, oldest_alive: int) -> None:
        """Merge recent keys into the frozen columns when there are many; drop dead keys.

        Keys die only when ``oldest_alive`` moves (once a minute of event time), and no dead
        key is ever added, so the sweep over every key runs only then, not once per batch.
        """
        if len(self._pending) >= max(self._merge_every, len(self._word0) // 16):
            self._merge_pending()
        if oldest_alive <= self._swept_below:
            return
        self._swept_below = oldest_alive
        if len(self._buckets) and int(self._buckets.min()) < oldest_alive:
            keep = self._buckets >= oldest_alive
            self._word0, self._word1 = self._word0[keep], self._word1[keep]
            self._buckets = self._buckets[keep]
        if self._pending and min(self._pending.values()) < oldest_alive:
            self._pending = {d: b for d, b in self._pending.items() if b >= oldest_alive}

    def _merge_pending(self) -> None:
        digests = list(self._pending)
        words = np.frombuffer(b"".join(digests), dtype="<u8").reshape(-1, 2)
        buckets = np.fromiter(self._pending.values(), dtype=np.int32, count=len(digests))
        order = np.argsort(words[:, 0], kind="stable")
        new0, new1, new_buckets = words[order, 0], words[order, 1], buckets[order]
        at = np.searchsorted(self._word0, new0)
        self._word0 = np.insert(self._word0, at, new0)
        self._word1 = np.insert(self._word1, at, new1)
        self._buckets = np.insert(self._buckets, at, new_buckets)
        self._pending = {}

    def snapshot(self) -> DedupeSnapshot:
        """Recovery state; cheap (the columns are shared, only recent keys are copied)."""
        return DedupeSnapshot(self._word0, self._word1, self._buckets, dict(self._pending))
