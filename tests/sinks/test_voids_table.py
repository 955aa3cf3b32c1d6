"""void_rules: the state of a void is decided by commit order, never by the writers' clocks."""

from __future__ import annotations

from datetime import datetime, timedelta

from meterwax.operators.partition import MeteringRules
from meterwax.operators.voids import VoidRule
from meterwax.sinks import voids_table
from meterwax.sinks.lake import Lake
from meterwax.sinks.voids_table import VoidStore


class _TenMinutesBehind(datetime):
    """A host whose clock stepped back after the undo."""

    @classmethod
    def now(cls, tz=None):
        return datetime.now(tz) - timedelta(minutes=10)


def test_a_void_recorded_again_after_an_undo_is_in_force_whatever_the_clock(tmp_path, monkeypatch):
    lake = Lake(tmp_path / "lake")
    lake.ensure_tables(MeteringRules())
    store = VoidStore(lake)
    rule = VoidRule("acme", ids=("e1",))
    store.record(rule, "first")
    assert store.undo(rule.void_id, "oops") is not None

    monkeypatch.setattr(voids_table, "datetime", _TenMinutesBehind)
    recorded, new = store.record(rule, "after all")
    assert new
    assert not recorded.undone and recorded.reason == "after all"
    assert [v.void_id for v in store.active()] == [rule.void_id]
    assert store.undone_ids() == set()
