"""Window rows in Delta and their exact comparison (bench/totals.py), on a real Delta table."""

from __future__ import annotations

from meterwax.bench.totals import compare, read_windows, write_windows

MINUTE_US = 60_000_000
T0 = 1_767_600_000 * 1_000_000  # 2026-01-05T08:00:00Z


def test_window_rows_round_trip_exactly_through_delta(tmp_path):
    huge = 10**38 - 1  # the largest decimal(38, 9) quantity, in nano-units
    rows = [
        ("acme", "api_calls", T0, 3_000_000_000, 3),
        ("acme", "cpu_seconds", T0 + MINUTE_US, 1, 1),
        ("globex", "storage_gb_hours", T0, huge, 7),
    ]
    assert write_windows(tmp_path, rows[:2]) == 2
    assert write_windows(tmp_path, rows[2:]) == 1
    assert write_windows(tmp_path, []) == 0
    assert read_windows(tmp_path) == {
        ("acme", "api_calls", T0): (3_000_000_000, 3),
        ("acme", "cpu_seconds", T0 + MINUTE_US): (1, 1),
        ("globex", "storage_gb_hours", T0): (huge, 7),
    }


def test_a_difference_is_diagnosed_window_by_window():
    mine = {("a", "m", T0): (10, 1), ("a", "m", T0 + MINUTE_US): (5, 1), ("b", "m", T0): (1, 1)}
    theirs = {("a", "m", T0): (10, 1), ("a", "m", T0 + MINUTE_US): (6, 2), ("c", "m", T0): (1, 1)}
    assert compare("meterwax", mine, "naive", dict(mine)).identical

    comparison = compare("meterwax", mine, "naive", theirs)
    assert not comparison.identical
    assert comparison.only_in_reference == [("b", "m", T0)]
    assert comparison.only_in_other == [("c", "m", T0)]
    assert comparison.different == [(("a", "m", T0 + MINUTE_US), (5, 1), (6, 2))]
    text = comparison.describe()
    assert text.splitlines()[0] == (
        "naive ≠ meterwax: 1 windows only in meterwax, 1 only in naive, 1 with other totals"
    )
    assert "only in meterwax: (b, m, 2026-01-05T08:00:00+00:00)" in text
    assert (
        "(a, m, 2026-01-05T08:01:00+00:00): meterwax (nanos, count) = (5, 1), naive = (6, 2)"
        in text
    )
