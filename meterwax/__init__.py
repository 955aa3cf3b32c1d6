"""meterwax: billing-grade usage metering, Kafka → Bytewax → Delta Lake, exactly once.

The promise: every valid event is counted exactly once, in the window of its event time,
and every number can be explained from the ledger.

Layout (see README "Layout"): ``meterwax.operators`` holds pure, I/O-free steps;
``meterwax.sinks`` knows Delta Lake; ``meterwax.flows`` wires them into Bytewax dataflows
and holds the command line.
"""

__version__ = "0.1.0"
