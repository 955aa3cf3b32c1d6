"""The meter catalog: what each billed meter takes from the events, and how it aggregates them.

A meter takes the events whose ``meter`` (a CloudEvent's ``type``) is its ``event_meter`` and
that pass its filter, reads a value from each (``quantity``, ``dimensions.<key>`` or
``data.<key>``), and aggregates the values of a window per tenant and per group:

================  ==========================================================================
aggregation       the window's value
================  ==========================================================================
``sum``           exact decimal sum of the values
``count``         number of events (no value needed)
``min``, ``max``  least, greatest value
``latest``        value of the event with the greatest (event time, id): arrival order
                  never matters
``unique_count``  number of distinct values (compared as text)
================  ==========================================================================

An event that lacks the value a meter reads, or whose value is not a decimal the contract
accepts (for ``sum``, ``min``, ``max``, ``latest``), does not contribute to that meter and is
counted in its window's ``unvalued_count``: nothing is skipped silently. The event itself is
valid and stays in the ledger, where a later definition may value it.

Without a catalog, every event meter is a ``sum`` of ``quantity`` under its own name
(:data:`LEGACY`), which is what meterwax did before catalogs existed.

Catalogs come as YAML, in meterwax's own form or in OpenMeter's (``slug``, ``eventType``,
``valueProperty: $.field``, ``groupBy: {name: $.field}``); :func:`parse_catalog` reads either
from the parsed document and names the meter and the key of every problem it finds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import (
    MAX_EMAX,
    MIN_EMIN,
    ROUND_DOWN,
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    ROUND_UP,
    Context,
    Decimal,
    localcontext,
)
from enum import StrEnum
from typing import Any

from pydantic_core import PydanticCustomError

from meterwax.operators.contract import (
    MAX_DIMENSION_KEY_CHARS,
    MAX_METER_CHARS,
    METER_CHARS,
    quantity_to_nanos,
)
from meterwax.operators.event import Event
from meterwax.operators.timeline import format_nanos


class Aggregation(StrEnum):
    """How a meter aggregates the values of a window."""

    SUM = "sum"
    COUNT = "count"
    MIN = "min"
    MAX = "max"
    LATEST = "latest"
    UNIQUE_COUNT = "unique_count"


NUMERIC = frozenset({Aggregation.SUM, Aggregation.MIN, Aggregation.MAX, Aggregation.LATEST})
"""Aggregations whose values must be decimals (the others count events or distinct texts)."""
QUANTITY = "quantity"
_PATH = re.compile(r"(quantity)|(dimensions|data)\.(.+)")
_NAME = re.compile(rf"{METER_CHARS}")
_ROUNDINGS = {
    "half_even": ROUND_HALF_EVEN,
    "half_up": ROUND_HALF_UP,
    "down": ROUND_DOWN,
    "up": ROUND_UP,
}


_WIDE = Context(prec=200, Emax=MAX_EMAX, Emin=MIN_EMIN)
"""Quotients are exact to far more places than a unit keeps, then rounded once."""


def shown(value: object, limit: int = 80) -> str:
    """A value for a problem's text: its repr, cut short (a huge int cannot even be printed)."""
    try:
        text = repr(value)
    except ValueError:
        text = f"<{type(value).__name__} too large to show>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class CatalogError(ValueError):
    """A catalog that cannot be used; each problem names the meter and the key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Unit:
    """How reports show a meter: its values divided by ``divide_by``, rounded to ``decimals``.

    Applied at report time only: stored windows stay exact in the meter's own unit.
    """

    name: str
    divide_by: Decimal = Decimal(1)
    decimals: int = 9
    rounding: str = "half_even"

    def convert(self, value: Decimal) -> Decimal:
        """``value`` in this unit, rounded once, by the unit's rule.

        In a context wide enough for any decimal(38, 9) divided by any factor: the default
        28 digits would round the quotient first (and fail past 10^19).
        """
        exponent = Decimal(1).scaleb(-self.decimals)
        with localcontext(_WIDE) as context:
            context.rounding = _ROUNDINGS[self.rounding]
            return (value / self.divide_by).quantize(exponent)


@dataclass(frozen=True)
class MeterDefinition:
    """One billed meter."""

    name: str
    event_meter: str
    aggregation: Aggregation
    value: str = QUANTITY
    """Where the value is read: ``quantity``, ``dimensions.<key>`` or ``data.<key>``."""
    filter: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(field path, values it may have): an event must match every one."""
    group_by: tuple[tuple[str, str], ...] = ()
    """(column name, field path): one window row per combination of values."""
    unit: Unit | None = None

    def as_dict(self) -> dict[str, Any]:
        """The definition as plain JSON data (how a catalog version is stored)."""
        stored: dict[str, Any] = {
            "name": self.name,
            "event_meter": self.event_meter,
            "aggregation": self.aggregation.value,
        }
        if self.aggregation is not Aggregation.COUNT:
            stored["value"] = self.value
        if self.filter:
            stored["filter"] = {path: list(values) for path, values in self.filter}
        if self.group_by:
            stored["group_by"] = dict(self.group_by)
        if self.unit is not None:
            stored["unit"] = {
                "name": self.unit.name,
                "divide_by": str(self.unit.divide_by),
                "decimals": self.unit.decimals,
                "rounding": self.unit.rounding,
            }
        return stored

    def same_counting(self, other: MeterDefinition) -> bool:
        """True if both count the same windows the same way (the unit only changes reports)."""
        return (
            self.event_meter,
            self.aggregation,
            self.value,
            self.filter,
            self.group_by,
        ) == (other.event_meter, other.aggregation, other.value, other.filter, other.group_by)


@dataclass(frozen=True)
class Catalog:
    """A version of the lake's meter catalog (version 0, :data:`LEGACY`: no catalog)."""

    version: int
    meters: tuple[MeterDefinition, ...]
    _by_event_meter: dict[str, tuple[MeterDefinition, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        # One order for every catalog with the same meters (versions compare equal).
        object.__setattr__(self, "meters", tuple(sorted(self.meters, key=lambda m: m.name)))
        grouped: dict[str, list[MeterDefinition]] = {}
        for meter in self.meters:
            grouped.setdefault(meter.event_meter, []).append(meter)
        self._by_event_meter.update({k: tuple(v) for k, v in grouped.items()})

    @property
    def is_legacy(self) -> bool:
        """True for "no catalog": every event meter is a sum of its quantity."""
        return self.version == LEGACY_VERSION

    def meters_for(self, event_meter: str) -> tuple[MeterDefinition, ...]:
        """The meters that take events of this event meter (empty: none does)."""
        found = self._by_event_meter.get(event_meter)
        if found is None:
            if not self.is_legacy:
                return ()
            found = self._by_event_meter[event_meter] = (legacy_meter(event_meter),)
        return found

    def meter(self, name: str) -> MeterDefinition | None:
        """The definition called ``name`` (None if the catalog has none)."""
        if self.is_legacy:
            return legacy_meter(name)
        return next((m for m in self.meters if m.name == name), None)

    def to_json(self) -> str:
        """The catalog's meters as canonical JSON (sorted by name)."""
        meters = sorted((m.as_dict() for m in self.meters), key=lambda m: m["name"])
        return json.dumps({"meters": meters}, sort_keys=True)

    @classmethod
    def from_json(cls, version: int, text: str) -> Catalog:
        """A stored catalog version."""
        return cls(version, tuple(parse_catalog(json.loads(text))))


LEGACY_VERSION = 0
"""The version number of "no catalog"."""


def legacy_meter(event_meter: str) -> MeterDefinition:
    """The meter an event meter is without a catalog: the sum of its quantity."""
    return MeterDefinition(event_meter, event_meter, Aggregation.SUM)


LEGACY = Catalog(LEGACY_VERSION, ())
"""No catalog: each event meter is a ``sum`` of ``quantity`` under its own name."""


@dataclass(frozen=True)
class CatalogSchedule:
    """Which catalog version decides each offset of one source partition.

    A partition switches to a new version at an offset recorded in the lake (the first one a
    flow running that version read): every message before it was decided under the older
    version, and is decided so again whenever it is read again (a replay, a rerun of a file,
    a restart without a recovery store), so re-reading never re-decides a message.
    """

    switches: tuple[tuple[int, Catalog], ...]
    """(first offset, catalog), by offset; the first starts at offset 0."""

    @classmethod
    def constant(cls, catalog: Catalog) -> CatalogSchedule:
        """One catalog for every offset."""
        return cls(((0, catalog),))

    def at(self, offset: int) -> Catalog:
        """The catalog that decides ``offset``."""
        found = self.switches[0][1]
        for start, catalog in self.switches:
            if start > offset:
                break
            found = catalog
        return found

    def next_switch(self, offset: int) -> int | None:
        """The first switch offset after ``offset`` (None: none)."""
        return next((start for start, _ in self.switches if start > offset), None)

    @property
    def latest(self) -> Catalog:
        """The catalog of the last switch (what new offsets are decided under)."""
        return self.switches[-1][1]


# --- reading a catalog document -------------------------------------------------------------


def parse_catalog(document: object) -> list[MeterDefinition]:
    """Meter definitions from a parsed YAML or JSON document; CatalogError on any problem.

    The document is ``{"meters": [...]}``; each entry is meterwax's form (``name``,
    ``event_meter``, ``aggregation``…) or OpenMeter's (``slug``, ``eventType``,
    ``aggregation``, ``valueProperty``, ``groupBy``).
    """
    if not isinstance(document, Mapping) or not isinstance(document.get("meters"), list):
        raise CatalogError(["the catalog must be a mapping with a list under 'meters'"])
    problems: list[str] = []
    meters: list[MeterDefinition] = []
    for number, entry in enumerate(document["meters"], start=1):
        label = f"meter #{number}"
        if isinstance(entry, Mapping):
            name = entry.get("name", entry.get("slug"))
            if isinstance(name, str):
                label = f"meter {shown(name)}"
        try:
            meters.append(_definition(entry))
        except CatalogError as error:
            problems += [f"{label}: {problem}" for problem in error.problems]
    names = [m.name for m in meters]
    problems += [
        f"meter {shown(name)}: the name is used by more than one meter"
        for name in sorted({n for n in names if names.count(n) > 1})
    ]
    if problems:
        raise CatalogError(problems)
    return meters


def _definition(entry: object) -> MeterDefinition:
    if not isinstance(entry, Mapping):
        raise CatalogError(["must be a mapping of keys to values"])
    if "slug" in entry or "eventType" in entry:
        entry = _from_openmeter(entry)
    problems: list[str] = []
    known = {"name", "event_meter", "aggregation", "value", "filter", "group_by", "unit"}
    problems += [
        f"key {shown(key)} is not a meter key ({', '.join(sorted(known))})"
        for key in entry
        if key not in known
    ]
    name = _meter_name(entry.get("name"), "name", problems)
    event_meter = _meter_name(entry.get("event_meter"), "event_meter", problems)
    aggregation = _aggregation(entry.get("aggregation"), problems)
    value = entry.get("value", QUANTITY)
    if "value" in entry and aggregation is Aggregation.COUNT:
        problems.append("value: a count meter counts events and reads no value")
    value = _path(value, "value", problems) or QUANTITY
    filters = _filters(entry.get("filter"), problems)
    group_by = _group_by(entry.get("group_by"), problems)
    unit = _unit(entry.get("unit"), problems)
    if problems:
        raise CatalogError(problems)
    if name is None or event_meter is None or aggregation is None:  # reported above
        raise CatalogError(problems)
    return MeterDefinition(name, event_meter, aggregation, value, filters, group_by, unit)


def _from_openmeter(entry: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenMeter meter definition in meterwax's own terms."""
    problems = []
    converted: dict[str, Any] = {"name": entry.get("slug"), "event_meter": entry.get("eventType")}
    aggregation = entry.get("aggregation")
    converted["aggregation"] = aggregation.lower() if isinstance(aggregation, str) else aggregation
    if "valueProperty" in entry:
        converted["value"] = _openmeter_path(entry["valueProperty"], "valueProperty", problems)
    if "groupBy" in entry:
        group_by = entry["groupBy"]
        if isinstance(group_by, Mapping):
            converted["group_by"] = {
                column: _openmeter_path(path, f"groupBy.{column}", problems)
                for column, path in group_by.items()
            }
        else:
            problems.append("groupBy: must map column names to $.field paths")
    ignored = {
        "slug",
        "eventType",
        "aggregation",
        "valueProperty",
        "groupBy",
        "description",
        "name",
    }
    problems += [f"key {shown(key)} is not supported here" for key in entry if key not in ignored]
    if problems:
        raise CatalogError(problems)
    return converted


def _openmeter_path(path: object, key: str, problems: list[str]) -> str:
    if isinstance(path, str) and path.startswith("$.") and len(path) > 2:
        return _data_path(f"data.{path[2:]}", key, problems) or QUANTITY
    problems.append(f"{key}: expected a JSONPath like $.tokens, got {shown(path)}")
    return QUANTITY


def _data_path(path: str, key: str, problems: list[str]) -> str | None:
    """A ``data.<key>`` path as meterwax reads it.

    ``data.quantity`` and ``data.value`` are the event's quantity (a CloudEvent's quantity
    comes from them); ``data.dimensions`` is no value (its keys are ``dimensions.<key>``).
    """
    if path in ("data.quantity", "data.value"):
        return QUANTITY
    if path == "data.dimensions":
        problems.append(
            f"{key}: data.dimensions holds the dimensions; read one as dimensions.<key>"
        )
        return None
    return path


def _meter_name(value: object, key: str, problems: list[str]) -> str | None:
    if not isinstance(value, str) or not value:
        problems.append(f"{key}: required, a name of [a-z0-9_.-]")
        return None
    if len(value) > MAX_METER_CHARS or not _NAME.fullmatch(value):
        problems.append(
            f"{key}: {shown(value)} is not 1–{MAX_METER_CHARS} lower-case letters, digits, "
            "'_', '.', '-'"
        )
        return None
    return value


def _aggregation(value: object, problems: list[str]) -> Aggregation | None:
    if isinstance(value, str) and value in Aggregation._value2member_map_:
        return Aggregation(value)
    choices = ", ".join(a.value for a in Aggregation)
    problems.append(f"aggregation: {shown(value)} is not one of {choices}")
    return None


def _path(value: object, key: str, problems: list[str]) -> str | None:
    match = _PATH.fullmatch(value) if isinstance(value, str) else None
    if match is None or (match.group(3) is not None and not _field_key(match.group(3))):
        problems.append(
            f"{key}: {shown(value)} is not quantity, dimensions.<key> or data.<key> (a key of 1–"
            f"{MAX_DIMENSION_KEY_CHARS} characters)"
        )
        return None
    if value.startswith("data."):  # type: ignore[union-attr]
        return _data_path(value, key, problems)  # type: ignore[arg-type]
    return value  # type: ignore[return-value]


def _field_key(key: str) -> bool:
    return 0 < len(key) <= MAX_DIMENSION_KEY_CHARS and key.isprintable()


def _filters(value: object, problems: list[str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        problems.append("filter: must map dimension names (or data.<key>) to allowed values")
        return ()
    filters = []
    for key, allowed in value.items():
        path = key if isinstance(key, str) and "." in key else f"dimensions.{key}"
        if _path(path, f"filter.{key}", problems) is None:
            continue
        if path == QUANTITY:
            problems.append(f"filter.{key}: filters match dimensions or data, not quantity")
            continue
        values = allowed if isinstance(allowed, list) else [allowed]
        if not values or not all(
            isinstance(v, str | int) and not isinstance(v, bool) for v in values
        ):
            problems.append(
                f"filter.{key}: expected a value or a list of values, got {shown(allowed)}"
            )
            continue
        filters.append((path, tuple(sorted({str(v) for v in values}))))
    return tuple(sorted(filters))


def _filter_value(value: object) -> bool:
    return isinstance(value, str | int) and not isinstance(value, bool)


def _group_by(value: object, problems: list[str]) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if isinstance(value, list):
        bad = [key for key in value if not isinstance(key, str)]
        if bad:
            problems.append(f"group_by: {shown(bad[0])} is not a dimension name")
            return ()
        value = {key: f"dimensions.{key}" for key in value}
    if not isinstance(value, Mapping):
        problems.append("group_by: must be a list of dimension names or map columns to paths")
        return ()
    columns = []
    for column, path in value.items():
        if not isinstance(column, str) or not _field_key(column):
            problems.append(f"group_by: {shown(column)} is not a valid column name")
            continue
        if column in _RESERVED_COLUMNS:
            problems.append(f"group_by.{column}: the name is one of the report's own columns")
            continue
        checked = _path(path, f"group_by.{column}", problems)
        if checked == QUANTITY:
            problems.append(f"group_by.{column}: groups are dimensions or data, not quantity")
        elif checked is not None:
            columns.append((column, checked))
    return tuple(sorted(columns))


_RESERVED_COLUMNS = frozenset(
    {
        "tenant_id",
        "meter",
        "period_start",
        "window_start",
        "window_end",
        "window_date",
        "quantity",
        "event_count",
        "unvalued_count",
        "revision",
        "updated_at",
        "aggregation",
        "unit",
        "quantity_in_unit",
        "group_key",
        "groups",
        "distinct_values",
        "latest_time",
        "latest_id",
        "catalog_version",
        "dimension",
    }
)
"""Columns of the reports and of usage_windows: a group column of one of these names would
overwrite them."""


def _unit(value: object, problems: list[str]) -> Unit | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not isinstance(value.get("name"), str):
        problems.append("unit: must be a mapping with a name (and divide_by, decimals, rounding)")
        return None
    try:
        divide_by = Decimal(str(value.get("divide_by", 1)))
    except ArithmeticError:
        divide_by = Decimal(0)
    decimals = value.get("decimals", 9)
    rounding = value.get("rounding", "half_even")
    if not divide_by.is_finite() or divide_by <= 0:
        problems.append(
            f"unit.divide_by: must be a positive number, got {shown(value.get('divide_by'))}"
        )
    if not isinstance(decimals, int) or isinstance(decimals, bool) or not 0 <= decimals <= 9:
        problems.append(f"unit.decimals: must be 0 to 9, got {shown(decimals)}")
    if not isinstance(rounding, str) or rounding not in _ROUNDINGS:
        problems.append(f"unit.rounding: {shown(rounding)} is not one of {', '.join(_ROUNDINGS)}")
    if problems:
        return None
    return Unit(value["name"], divide_by, decimals, rounding)


# --- what a meter takes from one event -------------------------------------------------------


def field_value(event: Event, path: str) -> int | str | None:
    """The value at ``path`` in ``event``: nano-units for quantity, text otherwise (None: none)."""
    if path == QUANTITY:
        return event.quantity_nanos
    group, _, key = path.partition(".")
    source = event.dimensions if group == "dimensions" else event.data
    return source.get(key) if source else None


def field_text(event: Event, path: str) -> str | None:
    """The value at ``path`` as text: how filters, groups and unique counts compare values.

    A quantity is its exact decimal (``1.5``), so a quantity of ``1.50`` is the same value.
    """
    found = field_value(event, path)
    if found is None or isinstance(found, str):
        return found
    return format_nanos(found)


def matches(meter: MeterDefinition, event: Event) -> bool:
    """True if ``event`` passes ``meter``'s filter (its event meter is checked by the caller)."""
    return all(field_text(event, path) in allowed for path, allowed in meter.filter)


def group_key(meter: MeterDefinition, event: Event) -> str:
    """The event's group in ``meter`` as one text: part of its window's key.

    Empty for a meter without groups; otherwise a JSON object of group column → value (null
    for an event without that field), with sorted keys, so it is also the ``groups`` column.
    """
    if not meter.group_by:
        return ""
    groups = {column: field_text(event, path) for column, path in meter.group_by}
    return json.dumps(groups, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def groups_of(key: str) -> dict[str, str | None] | None:
    """The ``groups`` map of a window from its group key (None for a meter without groups)."""
    return json.loads(key) if key else None


def numeric_value(meter: MeterDefinition, event: Event) -> int | None:
    """The event's value for a numeric aggregation, in nano-units (None: unvalued).

    A text value is read with the quantity rules of the contract (a non-negative decimal,
    at most 29 digits before the point and 9 after); anything else leaves the event unvalued.
    """
    found = field_value(event, meter.value)
    if found is None or isinstance(found, int):
        return found
    try:
        return quantity_to_nanos(found)
    except PydanticCustomError:
        return None
