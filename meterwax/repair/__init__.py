"""Repair jobs: checking the lake against its ledger and putting back what it lacks.

- ``reconcile``: recompute every window from the ledger and compare (G1, G2); ``--fix``.
- ``replay``: re-read a Kafka offset range and count only what the lake is missing.

Both change windows through the one audited correction sequence of
:class:`~meterwax.sinks.corrections_store.CorrectionStore`.
"""
