"""A compact index of idempotency keys and their content, remembered for a horizon of event time.

Each (tenant_id, id) key is reduced to 96 bits of a BLAKE2b digest (with a billion keys alive
in one partition, the chance that two collide, and one legitimate event is taken for a
retry, is about 6·10⁻¹²) and stored with a 32-bit fingerprint of what the event bills (its
meter, quantity and time) and the minute of its event time. A copy of a key with another
fingerprint is a *conflicting* duplicate: a producer bug billing must see, not a retry.

Keys are kept in three sorted numpy columns, 20 bytes a key (key and fingerprint in two 64-bit
words, the minute in 32 bits), searched once per batch with one vectorised call. There are two
sets of them: the *frozen* columns hold almost every key, and the *recent* columns the keys of
the last batches, merged into the frozen ones once they are 8,192 or a sixteenth of them,
whichever is more (a merge copies the frozen columns, so it must be rare). Only the keys of the
batch being processed live in a dict (about 170 bytes a key), and maintenance moves them into
the recent columns after every batch (a copy of the recent columns only). The whole index
stays within a byte or two of 20 bytes a key; the fingerprints cost nothing extra.

Semantics (deterministic, independent of batch sizes and of when maintenance runs): a key is
seen if it was remembered before and its minute ``b`` is still alive, i.e.
``(b + 1) · minute > max_event_time − horizon`` at the moment of the check. Maintenance only
discards keys that can never be alive again, because the partition's max event time only grows.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from meterwax.operators.event import Event

BUCKET_US = 60_000_000
"""Keys are aged by the minute of their event time."""
NOT_FOUND = np.iinfo(np.int32).min
"""Bucket value meaning "not in the frozen columns"."""
UNKNOWN_CONTENT = 0
"""The fingerprint of keys remembered before fingerprints existed (a store written by
meterwax 0.1): their copies can be told to be duplicates, not whether they conflict."""
KEY_BYTES = 12
_LOW_32 = np.uint64(0xFFFF_FFFF)
_PAD = b"\0\0\0\0"
_KEY_FORMAT = 3
"""1: 128-bit digests without fingerprints (0.1); 2: 96-bit keys with fingerprints of the first
function; 3: the same with today's :func:`content_fingerprint`."""


def dedupe_key(tenant_id: str, event_id: str) -> bytes:
    """The 12-byte key that stands for (tenant_id, id). Stable across processes and runs.

    The first 12 bytes of the 16-byte BLAKE2b digest that meterwax 0.1 stored whole, so keys
    in an older recovery store still match.
    """
    tenant = tenant_id.encode()
    return hashlib.blake2b(
        len(tenant).to_bytes(2, "little") + tenant + event_id.encode(), digest_size=16
    ).digest()[:KEY_BYTES]


def content_fingerprint(meter: str, quantity_nanos: int, time_us: int) -> int:
    """32 bits that differ, but for a 2⁻³² chance, when two copies differ in what they bill.

    What a copy bills is its meter, quantity and time; a copy that differs in any of them is a
    conflicting duplicate. A multiplicative hash of the quantity and time (64-bit), offset by
    the meter's CRC-32 (cached: meters are few), folded to 32 bits. A quantity past 64 bits
    first has its high bits multiplied into its low ones (merely XOR-ing them in let
    quantities 2⁹⁶ apart collide). Stable across processes and runs: it is kept in recovery
    state.
    """
    start = _METER_CRC.get(meter)
    if start is None:
        start = _meter_crc(meter)
    if quantity_nanos >> 64:  # rare: fold the high bits in, multiplied so none aliases
        quantity_nanos ^= (quantity_nanos >> 64) * _ODD_C
    mixed = (quantity_nanos * _ODD_A ^ time_us * _ODD_B ^ start) & _LOW_64
    return ((mixed >> 32) ^ mixed) & _LOW_32_INT or 1  # 0: UNKNOWN_CONTENT


def content_fingerprints(events: Sequence[Event]) -> np.ndarray:
    """:func:`event_content` of each event, as int64, computed a column at a time.

    The same arithmetic in 64-bit words, where numpy's products wrap exactly as ``& _LOW_64``
    does; events whose quantity is missing or needs more than 64 bits take the function.
    """
    count = len(events)
    try:
        quantities = np.fromiter((e.quantity_nanos for e in events), np.uint64, count)
    except (TypeError, OverflowError, ValueError):
        return np.fromiter(
            (event_content(e.meter, e.quantity_nanos, e.time_us, e.data) for e in events),
            np.int64,
            count,
        )
    times = np.fromiter((e.time_us for e in events), np.int64, count).view(np.uint64)
    meters = [e.meter for e in events]
    crcs = {meter: _meter_crc(meter) for meter in set(meters)}
    starts = np.fromiter(map(crcs.__getitem__, meters), np.uint64, count)
    mixed = quantities * np.uint64(_ODD_A) ^ times * np.uint64(_ODD_B) ^ starts
    folded = ((mixed >> np.uint64(32)) ^ mixed) & np.uint64(_LOW_32_INT)
    folded[folded == 0] = 1  # 0 is UNKNOWN_CONTENT
    return folded.astype(np.int64)


def event_content(
    meter: str, quantity_nanos: int | None, time_us: int, data: dict[str, str] | None
) -> int:
    """:func:`content_fingerprint` of an event, also one without a quantity.

    Under a meter catalog an event may carry no quantity (its meters read its ``data``); its
    data fields then stand in for the quantity, through their CRC-32 made negative, so they
    never equal a real quantity.
    """
    if quantity_nanos is None:
        text = json.dumps(data or {}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        quantity_nanos = -1 - zlib.crc32(text.encode())
    return content_fingerprint(meter, quantity_nanos, time_us)


def _meter_crc(meter: str) -> int:
    """The CRC-32 of a meter name, from a cache (a stream has few meters)."""
    start = _METER_CRC.get(meter)
    if start is None:
        start = zlib.crc32(meter.encode())
        if len(_METER_CRC) >= _CACHE_LIMIT:
            _METER_CRC.clear()
        _METER_CRC[meter] = start
    return start


_METER_CRC: dict[str, int] = {}
_CACHE_LIMIT = 10_000
_ODD_A = 0x9E37_79B9_7F4A_7C15
_ODD_B = 0xC2B2_AE3D_27D4_EB4F
_ODD_C = 0x1656_67B1_9E37_79F9
_LOW_64 = (1 << 64) - 1
_LOW_32_INT = (1 << 32) - 1


def key_words(keys: Iterable[bytes]) -> np.ndarray:
    """12-byte keys as rows of two 64-bit words (the second holds 4 bytes), in one copy."""
    return np.frombuffer(_PAD.join(keys) + _PAD, dtype="<u8").reshape(-1, 2)


def bucket_of(time_us: int) -> int:
    """The minute (since the epoch) that ages a key with this event time."""
    return time_us // BUCKET_US


def alive_from(max_event_us: int | None, horizon_us: int) -> int:
    """The oldest bucket still remembered when the partition has seen ``max_event_us``."""
    if max_event_us is None:
        return NOT_FOUND + 1
    return (max_event_us - horizon_us) // BUCKET_US


class Columns(NamedTuple):
    """Keys sorted by their first word, 20 bytes each: the arrays the index searches."""

    first: np.ndarray
    """The key's first 64 bits (uint64)."""
    second: np.ndarray
    """Its last 32 bits, and the content fingerprint in the high 32 (uint64)."""
    buckets: np.ndarray
    """The minute of its event time (int32)."""


_EMPTY = Columns(
    np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int32)
)


@dataclass(frozen=True, slots=True)
class DedupeSnapshot:
    """Recovery state. The arrays are never mutated after creation, so sharing them is safe."""

    word0: np.ndarray
    word1: np.ndarray
    buckets: np.ndarray
    pending: dict[bytes, int]
    """Recent keys: key → bucket."""
    contents: dict[bytes, int] | None = None
    """Recent keys: key → fingerprint, in the same order as ``pending``."""
    key_format: int = _KEY_FORMAT


class DedupeIndex:
    """Set of keys with a content fingerprint and an event-time age, in about 20 bytes a key.

    Use it a batch at a time::

        buckets, contents = index.lookup(keys)          # one vectorised search per batch
        for i, key in enumerate(keys):                  # then, in offset order:
            seen = index.find(key, buckets[i], contents[i], oldest_alive)
            if seen is None and counted:                # a first copy that was counted
                index.remember(key, bucket, fingerprint, oldest_alive)
        index.maintain(oldest_alive)                    # merge recent keys, forget dead ones
    """

    def __init__(self, snapshot: DedupeSnapshot | None = None, *, merge_every: int = 8_192) -> None:
        self._merge_every = merge_every
        self._swept_below = NOT_FOUND
        """Every stored key's bucket is at least this (the last sweep's ``oldest_alive``)."""
        self._recent = _EMPTY
        """Keys of the last batches, merged into ``_frozen`` once they are many."""
        if snapshot is None:
            self._frozen = _EMPTY
            self._pending: dict[bytes, int] = {}
            self._contents: dict[bytes, int] = {}
        elif getattr(snapshot, "key_format", 1) == 1:
            self._load_0_1(snapshot)
        elif snapshot.key_format == 2:
            self._load_format_2(snapshot)
        else:
            self._frozen = Columns(snapshot.word0, snapshot.word1, snapshot.buckets)
            self._pending = dict(snapshot.pending)
            self._contents = dict(snapshot.contents or {})

    def _load_0_1(self, snapshot: DedupeSnapshot) -> None:
        """A snapshot of meterwax 0.1: 128-bit digests, no fingerprints.

        The first 96 bits of each digest are this version's key; the content is unknown.
        """
        self._frozen = Columns(snapshot.word0, snapshot.word1 & _LOW_32, snapshot.buckets)
        self._pending = {digest[:KEY_BYTES]: bucket for digest, bucket in snapshot.pending.items()}
        self._contents = dict.fromkeys(self._pending, UNKNOWN_CONTENT)

    def _load_format_2(self, snapshot: DedupeSnapshot) -> None:
        """Fingerprints of an earlier function: the keys stay, their content is unknown.

        Compared with today's fingerprints they would make every retry look conflicting; as
        unknown content a copy of such a key is a plain duplicate, as before fingerprints.
        """
        self._frozen = Columns(snapshot.word0, snapshot.word1 & _LOW_32, snapshot.buckets)
        self._pending = dict(snapshot.pending)
        self._contents = dict.fromkeys(self._pending, UNKNOWN_CONTENT)

    def __len__(self) -> int:
        return len(self._frozen.first) + len(self._recent.first) + len(self._pending)

    @property
    def nbytes(self) -> int:
        """Approximate memory held by the index (both sets of columns plus the dict)."""
        pending = 0
        if self._pending:
            # Two dict slots (~3 words + load factor each), a 12-byte bytes object (45 bytes)
            # and two small ints (28 bytes each) per key.
            pending = len(self._pending) * (2 * (8 * 3 * 3 // 2) + 45 + 2 * 28)
        return sum(c.nbytes for c in (*self._frozen, *self._recent)) + pending

    def lookup(self, keys: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """For each key, the newest (bucket, fingerprint) in the frozen and recent columns.

        The bucket is NOT_FOUND where the key has no entry in either.
        """
        if not keys:
            return np.full(0, NOT_FOUND, dtype=np.int32), np.zeros(0, dtype=np.uint32)
        query = key_words(keys)
        found, contents = _search(self._frozen, query)
        if len(self._recent.first):
            newer, newer_contents = _search(self._recent, query)
            take = newer > found
            found[take] = newer[take]
            contents[take] = newer_contents[take]
        return found, contents

    def find(
        self, key: bytes, frozen_bucket: int, frozen_content: int, oldest_alive: int
    ) -> int | None:
        """The remembered fingerprint of ``key`` if it is alive, else None.

        ``frozen_bucket`` and ``frozen_content`` are this key's answer from :meth:`lookup`.
        """
        if frozen_bucket >= oldest_alive:
            return frozen_content
        recent = self._pending.get(key)
        if recent is not None and recent >= oldest_alive:
            return self._contents[key]
        return None

    def remember(self, key: bytes, bucket: int, content: int, oldest_alive: int) -> None:
        """Remember ``key`` (not alive now) with its minute and content fingerprint."""
        if bucket >= oldest_alive:  # a key already dead could never match: not worth keeping
            self._pending[key] = bucket
            self._contents[key] = content

    @property
    def has_pending(self) -> bool:
        """Whether keys wait in the dict (between batches, only after an old store's restore)."""
        return bool(self._pending)

    def remember_alive(
        self, keys: Sequence[bytes], buckets: Sequence[int], contents: Sequence[int]
    ) -> None:
        """:meth:`remember` each key, in order, all known to be alive."""
        self._pending.update(zip(keys, buckets, strict=True))
        self._contents.update(zip(keys, contents, strict=True))

    def maintain(self, oldest_alive: int) -> None:
        """Move the dict's keys into the recent columns (and those, when many, into the frozen).

        Then drop dead keys.
        Keys die only when ``oldest_alive`` moves (once a minute of event time), and no dead
        key is ever added, so the sweep over every key runs only then, not once per batch.
        """
        if self._pending:
            self._merge_pending()
        if len(self._recent.first) >= max(self._merge_every, len(self._frozen.first) // 16):
            self._freeze_recent()
        if oldest_alive <= self._swept_below:
            return
        self._swept_below = oldest_alive
        self._frozen = _alive(self._frozen, oldest_alive)
        self._recent = _alive(self._recent, oldest_alive)

    def _merge_pending(self) -> None:
        """The dict's keys into the recent columns (a copy of those only)."""
        # Both dicts hold the same keys in the same order (every change goes to both).
        count = len(self._pending)
        words = key_words(self._pending)
        contents = np.fromiter(self._contents.values(), dtype=np.uint64, count=count)
        buckets = np.fromiter(self._pending.values(), dtype=np.int32, count=count)
        order = np.argsort(words[:, 0], kind="stable")
        self._recent = _merged(
            self._recent,
            Columns(
                words[order, 0],
                words[order, 1] | (contents[order] << np.uint64(32)),
                buckets[order],
            ),
        )
        self._pending = {}
        self._contents = {}

    def _freeze_recent(self) -> None:
        """The recent columns into the frozen ones (a copy of every key: done rarely)."""
        self._frozen = _merged(self._frozen, self._recent)
        self._recent = _EMPTY

    def snapshot(self) -> DedupeSnapshot:
        """Recovery state; cheap (the columns are shared, only recent keys are copied).

        The recent columns are frozen first, so a snapshot has the one set of columns every
        version of meterwax reads (a copy of every key once an epoch).
        """
        if len(self._recent.first):
            self._freeze_recent()
        return DedupeSnapshot(*self._frozen, dict(self._pending), dict(self._contents))


def _search(columns: Columns, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each query key (two words), the newest (bucket, fingerprint) in these columns."""
    word0, word1, buckets = columns
    found = np.full(len(query), NOT_FOUND, dtype=np.int32)
    contents = np.zeros(len(query), dtype=np.uint32)
    size = len(word0)
    if size == 0:
        return found, contents
    query0, query1 = query[:, 0], query[:, 1]
    position = np.searchsorted(word0, query0)
    clipped = np.minimum(position, size - 1)
    first_word = word0[clipped] == query0
    exact = first_word & ((word1[clipped] & _LOW_32) == query1)
    found[exact] = buckets[clipped[exact]]
    contents[exact] = (word1[clipped[exact]] >> np.uint64(32)).astype(np.uint32)
    # A first word shared by more than one stored key: a re-added key, or a 64-bit collision.
    # Rare; resolve those exactly by scanning the run.
    following = np.minimum(clipped + 1, size - 1)
    run = first_word & (clipped + 1 < size) & (word0[following] == query0)
    for i in np.flatnonzero(run | (first_word & ~exact)):
        found[i], contents[i] = _scan_run(columns, int(clipped[i]), int(query0[i]), int(query1[i]))
    return found, contents


def _scan_run(columns: Columns, start: int, first: int, key_low: int) -> tuple[int, int]:
    word0, word1, buckets = columns
    newest, content = NOT_FOUND, UNKNOWN_CONTENT
    index = start
    while index < len(word0) and int(word0[index]) == first:
        second = int(word1[index])
        if second & 0xFFFF_FFFF == key_low and int(buckets[index]) > newest:
            newest, content = int(buckets[index]), second >> 32
        index += 1
    return newest, content


def _merged(into: Columns, new: Columns) -> Columns:
    """``new`` (sorted by first word) inserted into ``into`` (sorted the same way)."""
    at = np.searchsorted(into.first, new.first)
    return Columns(*(np.insert(old, at, added) for old, added in zip(into, new, strict=True)))


def _alive(columns: Columns, oldest: int) -> Columns:
    """The columns without the keys whose bucket is older than ``oldest``."""
    if not len(columns.buckets) or int(columns.buckets.min()) >= oldest:
        return columns
    keep = columns.buckets >= oldest
    return Columns(*(column[keep] for column in columns))
