"""Hostile input, generated: decoding is total, and the fast path is the contract.

For arbitrary bytes, arbitrary JSON (numbers and strings of any length, deep nesting, any
unicode, duplicate and escaped keys) and arbitrary envelopes (native fields, CloudEvents
keys, control records, all mixed), decoding returns an event, a heartbeat or a rejection and
never raises; with and without the fast path the answer is the same; and the partition
processor accounts for every message of a batch of them (G4 at the operator's level).
"""

from __future__ import annotations

import json
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from meterwax.operators.contract import (
    HEARTBEAT_MARKER,
    MAX_EVENT_US,
    MAX_QUANTITY_NANOS,
    MIN_EVENT_US,
)
from meterwax.operators.decode import Event, Heartbeat, Rejection, decode
from meterwax.operators.partition import MeteringRules, PartitionMeter
from meterwax.operators.records import SourceBatch, SourcePartition

WHERE = SourcePartition("file:hostile", 0)
FIELDS = (
    "id",
    "tenant_id",
    "meter",
    "quantity",
    "timestamp",
    "dimensions",
    "source",
    "specversion",
    "subject",
    "type",
    "time",
    "data",
    "datacontenttype",
    HEARTBEAT_MARKER,
    "value",
)


def check(raw: bytes) -> None:
    """Decoding never raises, gives one of three answers, and the fast path agrees."""
    slow = decode(raw, fast=False)
    assert isinstance(slow, Event | Heartbeat | Rejection)
    assert decode(raw) == slow
    if isinstance(slow, Event):
        assert 0 <= slow.quantity_nanos <= MAX_QUANTITY_NANOS
        assert MIN_EVENT_US <= slow.time_us < MAX_EVENT_US


# --- building blocks of hostile JSON ------------------------------------------------------

_digits = st.text("0123456789", min_size=1, max_size=6000)
_numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**60), max_value=10**60),
    st.builds(lambda w: w.lstrip("0") or "0", _digits),  # integers of any length, as text
    st.builds(
        lambda w, f, e: f"{w.lstrip('0') or '0'}.{f}e{e}",
        _digits,
        _digits,
        st.integers(-(10**30), 10**30),
    ),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "-0", "1e-9999999", "1e1000000"]),
)
_strings = st.one_of(
    st.text(max_size=50),
    st.text(st.characters(codec="utf-8"), max_size=300),
    st.text(st.characters(min_codepoint=0, max_codepoint=0x9F), max_size=10),  # controls
    st.text("٠١٢٣٤٥٦٧٨٩0123456789.eE-+", max_size=40),  # other scripts' digits
    _digits,
    st.sampled_from(
        [
            "2026-01-01t00:00:00z",
            "2026-01-01 00:00:00Z",
            "9999-12-31T23:30:00-01:00",
            "0001-01-01T00:00:00+01:00",
            "1969-12-31T23:59:59.999999Z",
            "2999-12-31T23:59:59.9999999999Z",
            "3000-01-01T00:00:00Z",
            "٢٠٢٦-٠١-٠١T00:00:00Z",
            "2026-01-01T00:00:60Z",
            "2026-01-01T00:00:00+24:00",
            "heartbeat",
            "1.0",
        ]
    ),
)


def _json_text(value: object) -> str:
    """JSON text for generated values; numbers given as text are written as bare numbers."""
    if isinstance(value, _Number):
        return value.text
    if isinstance(value, dict | list | str | int | float | bool) or value is None:
        return json.dumps(value, ensure_ascii=False)
    raise TypeError(type(value))


class _Number:
    """A JSON number written exactly as generated (any length, any exponent)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"_Number({self.text[:40]!r})"


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    _numbers.map(lambda n: n if isinstance(n, int) else _Number(n)),
    _strings,
)


@st.composite
def _documents(draw, depth: int = 0) -> list[tuple[str, object]]:
    """An object as a list of (key, value) pairs: keys may repeat, as JSON allows."""
    keys = draw(st.lists(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), max_size=10))
    pairs = []
    for key in keys:
        if depth < 3 and draw(st.booleans()) and draw(st.booleans()):
            value: object = _Object(draw(_documents(depth + 1)))
        elif depth < 3 and draw(st.integers(0, 9)) == 0:
            value = draw(st.lists(_scalars, max_size=5))
        else:
            value = draw(_scalars)
        pairs.append((key, value))
    return pairs


class _Object:
    def __init__(self, pairs: list[tuple[str, object]]) -> None:
        self.pairs = pairs


def _render(value: object, escape_keys: bool, rng: random.Random) -> str:
    if isinstance(value, _Object):
        parts = []
        for key, item in value.pairs:
            key_text = json.dumps(key, ensure_ascii=escape_keys and rng.random() < 0.5)
            if escape_keys and key and rng.random() < 0.2:
                key_text = '"' + "".join(f"\\u{ord(c):04x}" for c in key) + '"'
            space = rng.choice(["", " ", "\n\t "])
            parts.append(f"{key_text}:{space}{_render(item, escape_keys, rng)}")
        return "{" + ",".join(parts) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_render(item, escape_keys, rng) for item in value) + "]"
    return _json_text(value)


# --- the properties -------------------------------------------------------------------------


@given(raw=st.binary(max_size=3000))
def test_any_bytes_decode_to_an_answer_and_both_paths_agree(raw):
    check(raw)


@given(pairs=_documents(), escape_keys=st.booleans(), seed=st.integers(0, 2**32))
@settings(max_examples=400)
def test_any_json_object_decodes_to_an_answer_and_both_paths_agree(pairs, escape_keys, seed):
    raw = _render(_Object(pairs), escape_keys, random.Random(seed)).encode("utf-8", "surrogatepass")
    check(raw)


def _valid_native(seq: int) -> dict:
    return {
        "id": f"e{seq}",
        "tenant_id": "acme",
        "meter": "api_calls",
        "quantity": "1.5",
        "timestamp": "2026-03-02T12:00:00Z",
        "dimensions": {"region": "eu"},
    }


@given(
    extra=st.lists(st.tuples(st.sampled_from(FIELDS), _scalars), min_size=1, max_size=4),
    seed=st.integers(0, 2**32),
)
def test_a_valid_event_with_envelope_keys_added_is_judged_the_same_by_both_paths(extra, seed):
    # Native fields plus "specversion", "meterwax_control", CloudEvents keys, or a repeated
    # field: the fast path must not count what the contract would read otherwise.
    pairs = list(_valid_native(1).items()) + extra
    random.Random(seed).shuffle(pairs)
    check(_render(_Object(pairs), False, random.Random(seed)).encode("utf-8", "surrogatepass"))


@given(
    data=st.data(),
    mutations=st.lists(
        st.tuples(
            st.sampled_from(["flip", "drop", "insert", "truncate"]),
            st.integers(0, 400),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_mutated_valid_events_decode_to_an_answer_and_both_paths_agree(data, mutations):
    raw = bytearray(json.dumps(_valid_native(data.draw(st.integers(0, 9)))).encode())
    for kind, position, byte in mutations:
        at = position % (len(raw) + 1)
        if kind == "flip" and raw:
            raw[at % len(raw)] = byte
        elif kind == "drop" and raw:
            del raw[at % len(raw)]
        elif kind == "insert":
            raw.insert(at, byte)
        else:
            del raw[at:]
    check(bytes(raw))


@given(payloads=st.lists(st.one_of(st.binary(max_size=200), st.none()), max_size=40))
def test_the_partition_processor_accounts_for_every_hostile_message(payloads):
    payloads = [
        p if p is None or i % 3 else json.dumps(_valid_native(i)).encode()
        for i, p in enumerate(payloads)
    ]
    meter = PartitionMeter(WHERE, MeteringRules(max_event_bytes=150))
    out = meter.process(SourceBatch(WHERE, list(range(len(payloads))), payloads))
    counters = out.counters
    accounted = sum(counters[k] for k in ("counted", "duplicates", "late", "quarantined"))
    assert accounted + counters["heartbeats"] == counters["read"] == len(payloads)
    assert len(out.quarantine) == counters["quarantined"]
