"""Synthetic usage streams for the demo, the load generator, tests and the benchmark.

A :class:`Workload` describes the stream (tenants, meters, rates of duplicates, late and
invalid events); :func:`generate` yields :class:`Generated` messages in arrival order, each
tagged with what it is meant to be (``intent``), so tests can compute the expected totals
independently of the dataflow.

The stream is deterministic for a given seed. Event times advance at ``events_per_second``
with a small forward/backward jitter (well inside the allowed lateness, so such events are on
time); late events are placed far enough back that their window has certainly closed;
duplicates are byte-for-byte retries of an earlier valid message, a few hundred messages
later.

With ``late_follows_valid`` a late event is placed behind the latest valid event of its own
(tenant, meter) instead of behind the stream's current time: it is then late for every
clock, per source partition (meterwax) as well as per key (a Bytewax ``EventClock`` keyed by
tenant and meter, Quix Streams' per-key windows). Without it, a late event for a key that had
no recent event is on time for a per-key clock, and engines could not be compared on totals.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson

DEFAULT_START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
METERS = ("api_calls", "cpu_seconds", "storage_gb_hours")
REGIONS = ("eu-west-1", "us-east-1", "ap-south-1")
PLANS = ("free", "pro", "enterprise")


@dataclass(frozen=True)
class Workload:
    """The shape of a synthetic stream."""

    events: int = 10_000
    tenants: int = 20
    tenant_prefix: str = "tenant"
    meters: tuple[str, ...] = METERS
    duplicates: float = 0.02
    late: float = 0.01
    invalid: float = 0.001
    too_late: float = 0.0
    future: float = 0.0
    cloudevents: float = 0.05
    events_per_second: float = 200.0
    jitter_s: float = 3.0
    window_s: int = 60
    allowed_lateness_s: int = 30
    max_late_s: int = 3600
    max_retry_delay: int = 500
    """A duplicate arrives 1 … max_retry_delay messages after its original."""
    late_follows_valid: bool = False
    """Late events only for a (tenant, meter) with an earlier valid event, placed behind its
    latest one (see the module docstring); a late roll before any valid event is valid."""
    correction_horizon_s: int = 35 * 86400
    users: int = 0
    """With users, every event names one of this many users per tenant in a ``user_id``
    dimension (what an active-users meter counts); 0: no user_id."""
    start: datetime = DEFAULT_START
    seed: int = 7


@dataclass(frozen=True, slots=True)
class Generated:
    """One message: Kafka key (the tenant), payload bytes, and what it is meant to be."""

    key: bytes
    payload: bytes
    intent: str
    """``valid``, ``late``, ``duplicate``, ``invalid``, ``too_late`` or ``future``."""
    tenant_id: str = ""
    event_id: str = ""
    meter: str = ""
    quantity: Decimal = Decimal(0)
    time_us: int = 0


_INVALID_SHAPES = (
    "malformed_json",
    "missing_field",
    "invalid_quantity",
    "invalid_timestamp",
    "invalid_meter",
    "not_an_object",
    "field_too_long",
    "too_many_dimensions",
)


def _quantity(rng: random.Random, meter: str) -> tuple[Decimal, object]:
    """A quantity and its JSON form: an int, a JSON number with a fraction, or a string."""
    if meter == "api_calls":
        return Decimal(1), 1
    if meter == "cpu_seconds":
        value = Decimal(rng.randint(1, 250_000)).scaleb(-3)
        return value, float(value)  # a JSON number with a fraction, exercised on purpose
    value = Decimal(rng.randint(1, 10**12)).scaleb(-9)
    return value, str(value)


def _iso(time_us: int) -> str:
    seconds, micros = divmod(time_us, 1_000_000)
    stamp = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{micros:06d}Z"


def _encode(document: dict[str, object]) -> bytes:
    return orjson.dumps(document)


def _event_document(
    rng: random.Random,
    workload: Workload,
    tenant: str,
    event_id: str,
    meter: str,
    quantity: object,
    time_us: int,
) -> dict[str, object]:
    dimensions = {"region": rng.choice(REGIONS), "plan": PLANS[int(tenant[-1], 16) % len(PLANS)]}
    if workload.users:
        dimensions["user_id"] = f"user-{rng.randrange(workload.users):04d}"
    if rng.random() < workload.cloudevents:
        return {
            "specversion": "1.0",
            "id": event_id,
            "source": "meterwax-generator",
            "type": meter,
            "subject": tenant,
            "time": _iso(time_us),
            "datacontenttype": "application/json",
            "data": {"quantity": quantity, "dimensions": dimensions},
        }
    return {
        "id": event_id,
        "tenant_id": tenant,
        "meter": meter,
        "quantity": quantity,
        "timestamp": _iso(time_us),
        "dimensions": dimensions,
        "source": "meterwax-generator",
    }


def _invalid_payload(rng: random.Random, shape: str, time_us: int) -> bytes:
    base = {
        "id": f"bad-{rng.getrandbits(48):012x}",
        "tenant_id": "tenant-bad",
        "meter": "api_calls",
        "quantity": 1,
        "timestamp": _iso(time_us),
    }
    if shape == "malformed_json":
        return b'{"id": "truncated", "tenant_id": "t'
    if shape == "not_an_object":
        return b'["not", "an", "object"]'
    if shape == "missing_field":
        del base["tenant_id"]
    elif shape == "invalid_quantity":
        base["quantity"] = rng.choice(["-3", "abc", "1.0000000001", "1e40"])
    elif shape == "invalid_timestamp":
        base["timestamp"] = rng.choice(["2026-01-05T09:00:00", "yesterday", "2026-02-30T00:00:00Z"])
    elif shape == "invalid_meter":
        base["meter"] = "API Calls"
    elif shape == "field_too_long":
        base["id"] = "x" * 300
    elif shape == "too_many_dimensions":
        base["dimensions"] = {f"d{i}": "v" for i in range(40)}
    return _encode(base)


def generate(workload: Workload) -> Iterator[Generated]:
    """Yield ``workload.events`` messages in arrival order (duplicates included in the count)."""
    rng = random.Random(workload.seed)
    tenants = [f"{workload.tenant_prefix}-{i:04x}" for i in range(workload.tenants)]
    start_us = int(workload.start.timestamp()) * 1_000_000
    step_us = int(1_000_000 / workload.events_per_second)
    jitter_us = int(workload.jitter_s * 1_000_000)
    late_base_us = (workload.window_s + workload.allowed_lateness_s + 10) * 1_000_000
    pending_retries: list[tuple[int, Generated]] = []
    latest_valid_us: dict[tuple[str, str], int] = {}
    """With late_follows_valid: each (tenant, meter)'s latest valid event time."""
    seen_keys: list[tuple[str, str]] = []
    too_late_until = workload.late + workload.too_late
    future_until = too_late_until + workload.future
    sequence = 0
    for position in range(workload.events):
        now_us = start_us + position * step_us
        due = [item for item in pending_retries if item[0] <= position]
        if due:
            pending_retries = [item for item in pending_retries if item[0] > position]
            original = due[0][1]
            pending_retries.extend(due[1:])
            yield Generated(
                original.key,
                original.payload,
                "duplicate",
                original.tenant_id,
                original.event_id,
                original.meter,
                original.quantity,
                original.time_us,
            )
            continue
        roll = rng.random()
        if roll < workload.invalid:
            shape = rng.choice(_INVALID_SHAPES)
            yield Generated(b"tenant-bad", _invalid_payload(rng, shape, now_us), "invalid")
            continue
        roll -= workload.invalid
        tenant = rng.choice(tenants)
        meter = rng.choice(workload.meters)
        quantity, json_quantity = _quantity(rng, meter)
        sequence += 1
        event_id = f"evt-{workload.seed}-{sequence:09d}-{rng.getrandbits(32):08x}"
        if roll < workload.late and not workload.late_follows_valid:
            intent = "late"
            time_us = now_us - late_base_us - rng.randint(0, workload.max_late_s * 1_000_000)
        elif roll < workload.late and seen_keys:  # late_follows_valid
            intent = "late"
            tenant, meter = rng.choice(seen_keys)
            quantity, json_quantity = _quantity(rng, meter)
            behind_us = late_base_us + rng.randint(0, workload.max_late_s * 1_000_000)
            time_us = latest_valid_us[tenant, meter] - behind_us
        elif workload.late <= roll < too_late_until:
            intent = "too_late"
            time_us = now_us - (workload.correction_horizon_s + 86400) * 1_000_000
        elif too_late_until <= roll < future_until:
            intent = "future"
            time_us = now_us + 3600 * 1_000_000
        else:
            intent = "valid"
            time_us = now_us + rng.randint(-jitter_us, jitter_us)
        if intent == "valid" and workload.late_follows_valid:
            key = (tenant, meter)
            if key not in latest_valid_us:
                seen_keys.append(key)
            latest_valid_us[key] = max(time_us, latest_valid_us.get(key, time_us))
        document = _event_document(rng, workload, tenant, event_id, meter, json_quantity, time_us)
        item = Generated(
            tenant.encode(), _encode(document), intent, tenant, event_id, meter, quantity, time_us
        )
        yield item
        if intent in {"valid", "late"} and rng.random() < workload.duplicates / (
            1 - workload.duplicates
        ):
            pending_retries.append((position + rng.randint(1, workload.max_retry_delay), item))


def describe_intents(intents: Mapping[str, int]) -> str:
    """``"19,949 duplicate, 1,024 invalid, …"``: how many messages were made with each intent."""
    return ", ".join(f"{count:,} {intent}" for intent, count in sorted(intents.items()))


def write_jsonl(path: Path, workload: Workload) -> dict[str, int]:
    """Write the workload's messages to ``path`` (one JSON document a line); count intents."""
    path.parent.mkdir(parents=True, exist_ok=True)
    intents: dict[str, int] = {}
    with path.open("wb") as handle:
        for message in generate(workload):
            handle.write(message.payload + b"\n")
            intents[message.intent] = intents.get(message.intent, 0) + 1
    return intents
