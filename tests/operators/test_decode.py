"""The event contract: what is accepted, exactly how it is normalised, and why it is rejected."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Context, Decimal

import bytewax.operators as op
import orjson
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import given
from hypothesis import strategies as st

from meterwax.flows.steps import decode_messages
from meterwax.operators.decode import Event, Heartbeat, Rejection, decode
from meterwax.operators.reasons import Reason
from tests.helpers import T0, event, iso

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def test_native_event_is_normalised_to_exact_integers():
    decoded = decode(
        event("e1", quantity="12.345", at=T0, dimensions={"region": "eu"}, source="api")
    )
    assert decoded == Event(
        "acme", "e1", "api_calls", 12_345_000_000, micros(T0), {"region": "eu"}, "api"
    )


def test_cloudevent_maps_onto_the_native_fields():
    document = {
        "specversion": "1.0",
        "id": "ce-1",
        "source": "billing",
        "type": "cpu_seconds",
        "subject": "acme",
        "time": "2026-03-02T13:00:00+01:00",
        "data": {"value": 2.5},
    }
    decoded = decode(orjson.dumps(document))
    assert decoded == Event(
        "acme", "ce-1", "cpu_seconds", 2_500_000_000, micros(T0), None, "billing"
    )


def test_cloudevent_missing_subject_names_the_cloudevent_field():
    document = {
        "specversion": "1.0",
        "id": "x",
        "source": "s",
        "type": "m",
        "time": iso(T0),
        "data": {"quantity": 1},
    }
    decoded = decode(orjson.dumps(document))
    assert decoded == Rejection(Reason.MISSING_FIELD, "subject: required field is missing")


def test_heartbeat_is_a_control_record():
    assert decode(
        orjson.dumps({"meterwax_control": "heartbeat", "timestamp": iso(T0)})
    ) == Heartbeat(micros(T0))


@pytest.mark.parametrize(
    ("raw", "reason", "detail_mentions"),
    [
        (b"", Reason.EMPTY_PAYLOAD, "no payload"),
        (None, Reason.EMPTY_PAYLOAD, "tombstone"),
        (b'{"id": ', Reason.MALFORMED_JSON, "not valid JSON"),
        (b"\xff\xfe{}", Reason.MALFORMED_JSON, "UTF-8"),
        (b'{"id": "\\ud800"}', Reason.MALFORMED_JSON, "Unicode"),
        (b"[1, 2]", Reason.NOT_AN_OBJECT, "array"),
        (b'"text"', Reason.NOT_AN_OBJECT, "string"),
        (event("e", quantity=-1), Reason.INVALID_QUANTITY, "≥ 0"),
        (event("e", quantity="1.0000000001"), Reason.INVALID_QUANTITY, "9 digits after"),
        (event("e", quantity="1" * 30), Reason.INVALID_QUANTITY, "29 digits before"),
        (event("e", quantity="abc"), Reason.INVALID_QUANTITY, "'abc'"),
        (event("e", quantity=True), Reason.INVALID_QUANTITY, "boolean"),
        (
            b'{"id":"e","tenant_id":"t","meter":"m","quantity":NaN,"timestamp":"2026-01-01T00:00:00Z"}',
            Reason.INVALID_QUANTITY,
            "finite",
        ),
        (event("e", meter="API Calls"), Reason.INVALID_METER, "'API Calls'"),
        (event("e", tenant=""), Reason.EMPTY_FIELD, "tenant_id"),
        (event("e", tenant="t" * 129), Reason.FIELD_TOO_LONG, "tenant_id"),
        (event("x" * 257), Reason.FIELD_TOO_LONG, "id"),
        (event("e", tenant=7), Reason.INVALID_TYPE, "tenant_id: must be a string (got 7)"),
        (
            event("e", dimensions={f"k{i}": "v" for i in range(17)}),
            Reason.TOO_MANY_DIMENSIONS,
            "17",
        ),
        (event("e", dimensions={"region": 1}), Reason.INVALID_DIMENSIONS, "'region'"),
        (event("e", dimensions={"region": "r" * 257}), Reason.FIELD_TOO_LONG, "'region'"),
        (orjson.dumps({"specversion": "0.3"}), Reason.INVALID_CLOUDEVENT, "'0.3'"),
        (b'{"tenant_id": "t"}', Reason.MISSING_FIELD, "id: required field is missing"),
    ],
)
def test_rejections_carry_a_stable_reason_and_name_the_problem(raw, reason, detail_mentions):
    decoded = decode(raw)
    assert isinstance(decoded, Rejection)
    assert decoded.reason == reason
    assert detail_mentions in decoded.detail


@pytest.mark.parametrize(
    ("stamp", "detail_mentions"),
    [
        ("2026-03-02T12:00:00", "no UTC offset"),
        ("2026-03-02", "not an RFC 3339"),
        ("2026-02-30T00:00:00Z", "not a valid date-time"),
        ("yesterday", "not an RFC 3339"),
    ],
)
def test_timestamps_must_be_rfc3339_with_an_offset(stamp, detail_mentions):
    raw = orjson.dumps(
        {"id": "e", "tenant_id": "t", "meter": "m", "quantity": 1, "timestamp": stamp}
    )
    decoded = decode(raw)
    assert isinstance(decoded, Rejection)
    assert decoded.reason == Reason.INVALID_TIMESTAMP
    assert detail_mentions in decoded.detail
    assert stamp in decoded.detail


def test_payload_over_the_size_limit_is_rejected_before_parsing():
    decoded = decode(b"{" + b" " * 100 + b"}", max_bytes=64)
    assert decoded == Rejection(
        Reason.PAYLOAD_TOO_LARGE, "message is 102 bytes, the limit is 64 (max event size)"
    )


def test_every_failure_is_listed_and_the_first_one_gives_the_reason():
    raw = orjson.dumps(
        {"id": "e", "tenant_id": "t", "meter": "BAD", "quantity": "-1", "timestamp": "x"}
    )
    decoded = decode(raw)
    assert decoded.reason == Reason.INVALID_METER
    assert decoded.detail.count(";") == 2


quantities = st.decimals(min_value=0, max_value=Decimal("9" * 29), places=9, allow_nan=False)


@given(quantity=quantities, as_string=st.booleans())
def test_quantity_is_exact_whatever_its_json_form(quantity, as_string):
    text = format(quantity, "f")
    payload = event("e", quantity="__Q__").replace(
        b'"__Q__"', (f'"{text}"' if as_string else text).encode()
    )
    decoded = decode(payload)
    assert isinstance(decoded, Event), decoded
    assert decoded.quantity_nanos == int(quantity.scaleb(9, context=Context(prec=60)))


@given(
    offset_minutes=st.integers(-14 * 60, 14 * 60),
    micros_=st.integers(0, 999_999),
    seconds=st.integers(0, 10**9),
)
def test_timestamp_offsets_normalise_to_the_same_utc_instant(offset_minutes, micros_, seconds):
    instant = EPOCH + timedelta(seconds=seconds, microseconds=micros_)
    local = instant.astimezone(timezone(timedelta(minutes=offset_minutes)))
    decoded = decode(event("e", at=local).replace(iso(local).encode(), local.isoformat().encode()))
    assert isinstance(decoded, Event)
    assert decoded.time_us == micros(instant)


@given(st.binary(max_size=300))
def test_decode_never_raises_on_arbitrary_bytes(raw):
    assert isinstance(decode(raw), Event | Heartbeat | Rejection)


def test_decode_messages_operator_splits_events_from_rejections():
    flow = Dataflow("decode_test")
    raw = op.input("in", flow, TestingSource([event("e1"), b"nope", event("e2", quantity=-2)]))
    split = decode_messages("decode", raw)
    events, rejected = [], []
    op.output("events", split.trues, TestingSink(events))
    op.output("rejected", split.falses, TestingSink(rejected))
    run_main(flow)
    assert [e.id for e in events] == ["e1"]
    assert [r.reason for r in rejected] == [Reason.MALFORMED_JSON, Reason.INVALID_QUANTITY]


# Documents near the contract's edges, to show the fast path and pydantic agree everywhere:
# mostly valid fields, some replaced by edge values or removed.
_valid_text = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)
_valid_meter = st.from_regex(r"[a-z0-9_.\-]{1,20}", fullmatch=True)
_valid_quantity = st.one_of(
    st.integers(0, 10**12),
    st.decimals(min_value=0, max_value=10**9, places=9, allow_nan=False).map(
        lambda d: format(d, "f")
    ),
    st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False).map(float),
)
_valid_time = st.datetimes(
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))])
).map(lambda d: d.isoformat())
_valid_dimensions = st.one_of(st.none(), st.dictionaries(_valid_text, _valid_text, max_size=4))
_edge_text = st.sampled_from(["", "x" * 129, "y" * 257, "API", "ok"]) | st.integers() | st.none()
_edge_quantity = st.one_of(
    st.integers(-5, 10**31),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.decimals(min_value=-10, max_value=Decimal("9" * 30), allow_nan=False, places=10).map(str),
    st.sampled_from(["1e3", "1.5E-3", " 1", "+1", "0.000000001", "1.", ".5", "-0", "1.0000000000"]),
)
_edge_time = st.one_of(
    st.datetimes().map(lambda d: d.isoformat()),
    st.sampled_from(
        [
            "2026-01-01T00:00:00.123456789+05:30",
            "2026-02-30T00:00:00Z",
            "2026-01-01 00:00:00z",
            "yesterday",
            "2026-01-01",
        ]
    ),
    st.integers(),
)
_edge_dimensions = st.one_of(
    st.dictionaries(st.text(max_size=70), st.text(max_size=260), min_size=15, max_size=18),
    st.dictionaries(st.text(max_size=5), st.integers(), min_size=1, max_size=2),
    st.lists(st.text(), max_size=2),
    st.just({"": "v"}),
    st.just({"k" * 65: "v"}),
    st.just({"k": "v" * 257}),
)
_REMOVE = object()


def _near_valid(valid: dict, edges: dict) -> st.SearchStrategy[dict]:
    def assemble(base: dict, changes: dict) -> dict:
        document = dict(base)
        for key, value in changes.items():
            if value is _REMOVE:
                document.pop(key, None)
            else:
                document[key] = value
        return document

    change = st.fixed_dictionaries(
        {}, optional={k: st.one_of(v, st.just(_REMOVE)) for k, v in edges.items()}
    )
    return st.builds(assemble, st.fixed_dictionaries(valid), st.one_of(st.just({}), change))


_native = _near_valid(
    {
        "id": _valid_text,
        "tenant_id": _valid_text,
        "meter": _valid_meter,
        "quantity": _valid_quantity,
        "timestamp": _valid_time,
        "dimensions": _valid_dimensions,
        "source": st.one_of(st.none(), _valid_text),
    },
    {
        "id": _edge_text,
        "tenant_id": _edge_text,
        "meter": _edge_text,
        "quantity": _edge_quantity,
        "timestamp": _edge_time,
        "dimensions": _edge_dimensions,
        "source": _edge_text,
        "extra": st.dictionaries(
            st.sampled_from(["quantity", "value"]), _edge_quantity, max_size=2
        ),
    },
)
_cloudevents = _near_valid(
    {
        "specversion": st.just("1.0"),
        "id": _valid_text,
        "subject": _valid_text,
        "type": _valid_meter,
        "time": _valid_time,
        "source": _valid_text,
        "data": st.builds(
            lambda key, quantity, dimensions: {key: quantity, "dimensions": dimensions},
            st.sampled_from(["quantity", "value"]),
            _valid_quantity,
            _valid_dimensions,
        ),
    },
    {
        "specversion": st.sampled_from(["0.3", 1.0]),
        "subject": _edge_text,
        "type": _edge_text,
        "time": _edge_time,
        "datacontenttype": st.sampled_from(
            [
                "application/json",
                "text/plain",
                "application/jsonx",
                "Application/JSON; charset=utf-8",
            ]
        ),
        "data": st.one_of(
            st.integers(),
            st.fixed_dictionaries(
                {}, optional={"quantity": _edge_quantity, "value": _edge_quantity}
            ),
        ),
    },
)


def _serialise(document: dict) -> bytes:
    import json as stdlib_json

    return stdlib_json.dumps(document, default=str).encode()


@given(document=st.one_of(_native, _cloudevents))
def test_fast_path_and_pydantic_contract_agree_on_any_document(document):
    raw = _serialise(document)
    assert decode(raw) == decode(raw, fast=False)


@given(
    quantity=st.decimals(min_value=0, max_value=10**6, places=9, allow_nan=False),
    noise=st.sampled_from(["", ' "x": "\\"quantity\\": 1.5",', ' "meta": {"quantity": 2.5},']),
)
def test_a_fractional_json_number_keeps_its_exact_digits(quantity, noise):
    text = format(quantity, "f")
    raw = (
        f'{{"id": "e",{noise} "tenant_id": "t", "meter": "m", "quantity": {text}, '
        f'"timestamp": "2026-01-01T00:00:00Z"}}'
    ).encode()
    decoded = decode(raw)
    assert isinstance(decoded, Event)
    assert decoded.quantity_nanos == int(quantity.scaleb(9, context=Context(prec=60)))


def _native(**fields) -> bytes:
    document = {
        "id": "e1",
        "tenant_id": "acme",
        "meter": "api_calls",
        "quantity": 1,
        "timestamp": "2026-03-02T12:00:00Z",
        **fields,
    }
    return orjson.dumps({k: v for k, v in document.items() if v is not _GONE})


_GONE = object()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (
            b'{"id":"e","tenant_id":"t","meter":"m","quantity":'
            + b"7" * 5000
            + b',"timestamp":"2026-03-02T12:00:00Z"}',
            "invalid_quantity",
        ),
        (_native(quantity="7" * 5000), "invalid_quantity"),
        (_native(quantity="1e1000000"), "invalid_quantity"),
        (_native(quantity="1e-9999999"), "invalid_quantity"),
        (_native(quantity="0.0000000001"), "invalid_quantity"),
        (
            b'{"id":"e","tenant_id":"t","meter":"m","quantity":1e-9999999,"timestamp":"2026-03-02T12:00:00Z"}',
            "invalid_quantity",
        ),
        (
            b'{"id":"e","tenant_id":"t","meter":"m","quantity":0.1e1000000000000000001,"timestamp":"2026-03-02T12:00:00Z"}',
            "invalid_quantity",
        ),
        (_native(quantity="١٢"), "invalid_quantity"),
        (_native(timestamp="9999-12-31T23:30:00-01:00"), "invalid_timestamp"),
        (_native(timestamp="1969-12-31T23:59:59Z"), "invalid_timestamp"),
        (_native(timestamp="٢٠٢٦-03-02T12:00:00Z"), "invalid_timestamp"),
        (_native(id="e\x001"), "invalid_characters"),
        (_native(tenant_id="acme\n"), "invalid_characters"),
        (_native(source="svc\x85"), "invalid_characters"),
        (_native(dimensions={"re\x07gion": "eu"}), "invalid_characters"),
        (_native(dimensions={"region": "e\x7fu"}), "invalid_characters"),
        (_native(meter="api\x00calls"), "invalid_meter"),
        (_native(specversion="1.0"), "missing_field"),  # a CloudEvent: no subject, type, time
        (_native(meterwax_control="tick"), "invalid_type"),  # a control record, not an event
    ],
)
def test_hostile_values_are_rejected_with_their_reason_by_both_paths(raw, reason):
    for fast in (True, False):
        decoded = decode(raw, fast=fast)
        assert isinstance(decoded, Rejection), (fast, decoded)
        assert decoded.reason.value == reason, (fast, decoded)


def test_lowercase_t_and_z_are_rfc_3339_and_mean_the_same_instant():
    upper = decode(_native(timestamp="2026-03-02T12:00:00.5Z"))
    for text in ("2026-03-02t12:00:00.5z", "2026-03-02T12:00:00.5z", "2026-03-02 12:00:00.5Z"):
        lower = decode(_native(timestamp=text))
        assert isinstance(lower, Event) and lower == upper == decode(
            _native(timestamp=text), fast=False
        )


def test_native_fields_with_a_heartbeat_marker_are_a_heartbeat_on_both_paths():
    raw = _native(meterwax_control="heartbeat")
    assert decode(raw) == decode(raw, fast=False) == Heartbeat(1_772_452_800_000_000)


def test_a_valid_event_nested_too_deep_elsewhere_gets_the_same_answer_on_both_paths():
    deep = (
        b'{"id":"e","tenant_id":"t","meter":"m","quantity":1,"timestamp":"2026-03-02T12:00:00Z","x":'
        + b"[" * 3000
        + b"]" * 3000
        + b"}"
    )
    assert decode(deep) == decode(deep, fast=False)
    assert isinstance(decode(deep), Rejection)


def test_datacontenttype_is_compared_as_a_media_type_not_a_prefix():
    def cloudevent(content_type: str) -> bytes:
        return orjson.dumps(
            {
                "specversion": "1.0",
                "type": "api_calls",
                "id": "c1",
                "time": "2026-03-02T12:00:00Z",
                "source": "s",
                "subject": "acme",
                "datacontenttype": content_type,
                "data": {"quantity": 1},
            }
        )

    assert isinstance(decode(cloudevent("application/json; charset=utf-8")), Event)
    rejected = decode(cloudevent("application/jsonx"))
    assert isinstance(rejected, Rejection) and rejected.reason is Reason.INVALID_CLOUDEVENT


def test_a_data_field_with_thousands_of_digits_is_decided_by_the_contract_not_crashing():
    document = {
        "specversion": "1.0",
        "type": "prompt",
        "id": "c1",
        "time": "2026-03-02T12:00:00Z",
        "source": "s",
        "subject": "acme",
        "data": {"quantity": 1},
    }
    raw = orjson.dumps(document)[:-2] + b', "tokens": ' + b"7" * 5000 + b"}}"
    fast = decode(raw, quantity_required=False)
    assert fast == decode(raw, fast=False, quantity_required=False)
    assert isinstance(fast, Rejection) and fast.reason is Reason.INVALID_DATA


@pytest.mark.parametrize(
    "extra",
    [
        {"note": "x" * 2000},
        {f"f{n}": "v" for n in range(65)},
        {"k" * 70: "v"},
        {"": "v"},
        {"note": "bell\u0007"},
    ],
)
def test_data_fields_decide_nothing_without_a_catalog(extra):
    document = {
        "specversion": "1.0",
        "type": "api_calls",
        "id": "c1",
        "time": "2026-03-02T12:00:00Z",
        "source": "s",
        "subject": "acme",
        "data": {"quantity": 1, **extra},
    }
    raw = orjson.dumps(document)
    legacy = decode(raw)
    assert legacy == decode(raw, fast=False)
    assert isinstance(legacy, Event) and legacy.quantity_nanos == 10**9  # counted, as before
    assert legacy.data is None  # fields no catalog could read are not kept
    under_catalog = decode(raw, quantity_required=False)
    assert under_catalog == decode(raw, fast=False, quantity_required=False)
    assert isinstance(under_catalog, Rejection)


@pytest.mark.parametrize(
    "meter",
    ["api", "API", "a b", "a-b.c_d", "é", "a/b", "", "x" * 128, "x" * 129, "api\u00a0", "٣"],
)
def test_both_paths_judge_a_meter_name_alike_before_and_after_it_was_seen(meter):
    # The fast path remembers names it found plain instead of matching each message against
    # the pattern: a second look must decide exactly as the first, and as the contract.
    native = {"id": "e1", "tenant_id": "acme", "meter": meter, "quantity": 1, "timestamp": iso(T0)}
    cloudevent = {
        "specversion": "1.0",
        "id": "e1",
        "source": "s",
        "subject": "acme",
        "type": meter,
        "time": iso(T0),
        "data": {"quantity": 1},
    }
    for document in (native, cloudevent, native, cloudevent):
        raw = orjson.dumps(document)
        assert decode(raw) == decode(raw, fast=False)
