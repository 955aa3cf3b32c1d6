"""Pure, I/O-free steps of the metering dataflow.

Everything here is a plain function or a small class over plain data: no Kafka, no Delta,
no wall clock. That is what makes the dataflow deterministic (guarantee G5) and these steps
unit-testable with ``bytewax.testing`` inputs.

- ``reasons``: the stable quarantine reason codes.
- ``contract``: the event contract (native and CloudEvents 1.0), as pydantic models.
- ``decode``: raw bytes → a validated event, a heartbeat, or a rejection with a reason.
- ``dedupe``: a compact index of (tenant_id, id) keys over an event-time horizon.
- ``windows``: tumbling-window arithmetic and the per-window accumulator.
- ``partition``: the per-source-partition processor that composes all of the above.
- ``records``: the plain data passed between sources, operators and sinks.
- ``dataflow``: the same steps as Bytewax operators, for flows and for users' tests.
"""
