"""Void rules: which counted events an operator has taken back, and why.

A void is a durable rule, not an edit: "these ids of this tenant" or "this tenant's events
(of one meter, from one source) with an event time in [from, to)". Every ledger row a rule
matches, now or later (a late copy, a replay, a producer that sends it again), stops counting
(``voided_events`` lists it; the ledger itself is never rewritten), and every window it was
in is recomputed with an audit row. Undoing a void makes its events count again, the same way.

A rule's id is a digest of what it selects (not of its reason), so repeating a void is a
no-op and two operators voiding the same thing get the same id.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from meterwax.durations import format_duration_us
from meterwax.operators.event import Event
from meterwax.operators.timeline import DAY_US, format_micros

DEFAULT_MAX_RANGE_US = 31 * DAY_US
"""A void range wider than this needs an explicit ``force``: a slip of a date can void a year."""
MAX_IDS = 100_000
MAX_REASON_CHARS = 1024


class VoidRuleError(ValueError):
    """A void rule that cannot be recorded; ``setting`` names what to change."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem


@dataclass(frozen=True)
class VoidRule:
    """What a void selects. Either ``ids``, or a time range ``[from_us, to_us)``."""

    tenant_id: str
    ids: tuple[str, ...] = ()
    meter: str | None = None
    """Only events of this event meter (ranges only)."""
    source: str | None = None
    """Only events with this ``source`` (ranges only)."""
    from_us: int | None = None
    to_us: int | None = None
    _id_set: frozenset[str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", tuple(sorted(set(self.ids))))
        object.__setattr__(self, "_id_set", frozenset(self.ids))

    @property
    def is_range(self) -> bool:
        """True for a time-range void, False for a void by ids."""
        return self.from_us is not None

    @property
    def void_id(self) -> str:
        """``void-`` and 16 hex digits of a digest of the selection (stable across runs)."""
        selection = {
            "tenant_id": self.tenant_id,
            "ids": list(self.ids),
            "meter": self.meter,
            "source": self.source,
            "from_us": self.from_us,
            "to_us": self.to_us,
        }
        text = json.dumps(selection, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return "void-" + hashlib.sha256(text.encode()).hexdigest()[:16]

    def matches(self, event: Event) -> bool:
        """True if this rule takes ``event`` back."""
        if event.tenant_id != self.tenant_id:
            return False
        if not self.is_range:
            return event.id in self._id_set
        if not (self.from_us or 0) <= event.time_us < (self.to_us or 0):
            return False
        if self.meter is not None and event.meter != self.meter:
            return False
        return self.source is None or event.source == self.source

    def describe(self) -> str:
        """One line saying what the rule selects."""
        if not self.is_range:
            shown = ", ".join(self.ids[:5]) + (
                f" (+{len(self.ids) - 5} more)" if len(self.ids) > 5 else ""
            )
            return f"tenant {self.tenant_id!r}, ids {shown}"
        parts = [f"tenant {self.tenant_id!r}"]
        if self.meter is not None:
            parts.append(f"meter {self.meter!r}")
        if self.source is not None:
            parts.append(f"source {self.source!r}")
        parts.append(f"from {format_micros(self.from_us or 0)} to {format_micros(self.to_us or 0)}")
        return ", ".join(parts)


def check_rule(rule: VoidRule, reason: str, *, max_range_us: int, force: bool) -> None:
    """Refuse a rule that cannot be what the operator means (VoidRuleError names the setting)."""
    if not rule.tenant_id:
        raise VoidRuleError("tenant", "required")
    if not reason.strip():
        raise VoidRuleError("reason", "required: say why (it is kept with the void)")
    if len(reason) > MAX_REASON_CHARS:
        raise VoidRuleError("reason", f"at most {MAX_REASON_CHARS} characters")
    if rule.is_range == bool(rule.ids):
        raise VoidRuleError("id", "give either ids or a time range (from and to), not both")
    if not rule.is_range:
        if len(rule.ids) > MAX_IDS:
            raise VoidRuleError("id", f"at most {MAX_IDS:,} ids per void, got {len(rule.ids):,}")
        if rule.meter is not None or rule.source is not None:
            raise VoidRuleError("meter", "meter and source select within a time range only")
        return
    if rule.to_us is None or rule.from_us is None:
        raise VoidRuleError("to", "a range needs both from and to")
    if rule.from_us >= rule.to_us:
        problem = (
            f"{format_micros(rule.to_us)} is not after from ({format_micros(rule.from_us)}): "
            "the range is [from, to)"
        )
        raise VoidRuleError("to", problem)
    width = rule.to_us - rule.from_us
    if width > max_range_us and not force:
        problem = (
            f"the range is {format_duration_us(width)} wide, more than the safety limit of "
            f"{format_duration_us(max_range_us)}; check the dates, or force it"
        )
        raise VoidRuleError("force", problem)
