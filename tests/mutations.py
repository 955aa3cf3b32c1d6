"""Hostile input derived from valid events: byte mutations and field mutations, reproducibly.

Half of the messages are valid events from the generator (with its retries and late events);
the other half are those events mutated: bytes flipped, inserted, deleted, cut; a field given
a hostile value (a 5,000-digit quantity, an exponent of a million, a year past 9999, control
characters, the wrong type, nothing at all); envelope keys mixed in; a key repeated with other
content; an earlier event's id reused with another quantity. What each mutation produces is
not decided here: the accounting checks take the lake's word for it, message by message.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass

from meterwax.synthetic.generator import Workload, generate

_HOSTILE_VALUES: dict[str, list[object]] = {
    "quantity": [
        "9" * 5000,
        "1e1000000",
        "1e-9999999",
        "0.1e1000000000000000001",
        -1,
        "NaN",
        "١٢",
        True,
        None,
        {"value": 1},
        "9" * 29,
        "99999999999999999999999999999.999999999",
        "1.0000000000",
        "0",
        10**40,
    ],
    "timestamp": [
        "9999-12-31T23:30:00-01:00",
        "1969-12-31T23:59:59Z",
        "2026-01-05t09:00:00z",
        "2026-01-05T09:00:00",
        "2026-02-30T00:00:00Z",
        "٢٠٢٦-01-05T09:00:00Z",
        "yesterday",
        1767603600,
        "2026-01-05T09:00:00.123456789+05:30",
    ],
    "id": ["", "x" * 300, "e\x00vil", "tab\there", 7, None, ["a"], "\u202eevil"],
    "tenant_id": ["", "t" * 200, "acme\n", 0, None, "\x85next"],
    "meter": ["API Calls", "api\x00calls", "", 3, "m" * 200, "ÄPI"],
    "dimensions": [
        {f"d{i}": "v" for i in range(40)},
        {"region": 5},
        {"re\x07gion": "eu"},
        {"region": "v" * 300},
        ["eu"],
        "eu",
        {"": "x"},
    ],
    "source": ["s" * 300, 5, "svc\x1b[31m"],
}
_ENVELOPE_KEYS: list[tuple[str, object]] = [
    ("specversion", "1.0"),
    ("meterwax_control", "heartbeat"),
    ("meterwax_control", "tick"),
    ("meterwax_control", None),
    ("data", {"quantity": 3}),
    ("subject", "other-tenant"),
]


@dataclass(frozen=True)
class Line:
    """One message: its Kafka key and its bytes."""

    key: bytes
    payload: bytes


def mutated_stream(count: int, seed: int) -> list[Line]:
    """``count`` messages, about half of them mutated, reproducibly for ``seed``."""
    rng = random.Random(seed)
    base = list(generate(Workload(events=count, tenants=50, seed=seed, late=0.02, invalid=0.0)))
    earlier: list[dict] = []
    lines = []
    for message in base:
        if rng.random() < 0.5:
            lines.append(Line(message.key, message.payload))
            if message.intent == "valid" and len(earlier) < 5000:
                earlier.append(json.loads(message.payload))
            continue
        mutate = rng.choice(_MUTATIONS)
        lines.append(Line(message.key, mutate(rng, message.payload, earlier)))
    return lines


def _bytes_flip(rng: random.Random, raw: bytes, _earlier: list[dict]) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 4)):
        if not data:
            break
        data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def _bytes_insert(rng: random.Random, raw: bytes, _earlier: list[dict]) -> bytes:
    at = rng.randrange(len(raw) + 1)
    noise = bytes(rng.randrange(256) for _ in range(rng.randint(1, 6)))
    return raw[:at] + noise + raw[at:]


def _bytes_delete(rng: random.Random, raw: bytes, _earlier: list[dict]) -> bytes:
    at = rng.randrange(len(raw))
    return raw[:at] + raw[at + rng.randint(1, 8) :]


def _bytes_cut(rng: random.Random, raw: bytes, _earlier: list[dict]) -> bytes:
    return raw[: rng.randrange(len(raw))]


def _field_value(rng: random.Random, raw: bytes, _earlier: list[dict]) -> bytes:
    document = json.loads(raw)
    native = "specversion" not in document
    field = rng.choice(list(_HOSTILE_VALUES))
    value = rng.choice(_HOSTILE_VALUES[field])
    if native:
        document[field] = value
    else:  # a CloudEvent: the same field under its envelope name
        names = {"tenant_id": "subject", "meter": "type", "timestamp": "time"}
        if field in ("quantity", "dimensions"):
            document["data"][field] = value
        else:
            document[names.get(field, field)] = value
    return json.dumps(document, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")


def _field_removed(rng: random.Random, raw: bytes, _earlier: list[dict]) -> bytes:
    document = json.loads(raw)
    document.pop(rng.choice(list(document)))
    return json.dumps(document).encode()


def _envelope_key(rng: random.Random, raw: bytes, _earlier: list[dict]) -> bytes:
    document = json.loads(raw)
    key, value = rng.choice(_ENVELOPE_KEYS)
    document[key] = value
    items = list(document.items())
    rng.shuffle(items)
    return json.dumps(dict(items)).encode()


def _repeated_key(rng: random.Random, raw: bytes, _earlier: list[dict]) -> bytes:
    # JSON allows a key twice; every reader must take the same one (the last).
    field, value = rng.choice([("quantity", 7), ("tenant_id", "twice"), ("id", "again")])
    return raw[:-1] + f', "{field}": {json.dumps(value)}'.encode() + b"}"


def _escaped(rng: random.Random, raw: bytes, _earlier: list[dict]) -> bytes:
    # The same document with some characters escaped: the fast path must not read it otherwise.
    document = json.loads(raw)
    text = json.dumps(document, ensure_ascii=True)
    return text.replace('"id"', '"\\u0069d"').replace("specversion", "spec\\u0076ersion").encode()


def _reused_id(rng: random.Random, raw: bytes, earlier: list[dict]) -> bytes:
    # An earlier event's id again, with another quantity (a producer bug) or unchanged.
    if not earlier:
        return raw
    document = dict(rng.choice(earlier))
    if rng.random() < 0.7:
        document["quantity"] = rng.choice([2, "0.5", "123.000000001"])
    return json.dumps(document).encode()


_MUTATIONS: list[Callable[[random.Random, bytes, list[dict]], bytes]] = [
    _bytes_flip,
    _bytes_insert,
    _bytes_delete,
    _bytes_cut,
    _field_value,
    _field_value,
    _field_value,
    _field_removed,
    _envelope_key,
    _repeated_key,
    _escaped,
    _reused_id,
]
