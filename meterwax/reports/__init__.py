"""Reports over the lake: window totals and calendar rollups, exact decimals only.

- ``usage``: ``usage_windows`` rows and per-tenant totals.
- ``rollups``: windows (or ledger events, for a dimension) summed by calendar period.
- ``periods``: calendar periods in an IANA zone, DST-aware.
"""
