"""The Bytewax dataflows and their edges: sources, the steps that wrap operators, execution.

- ``metering``: the main flow (source partitions → partition processors → the lake).
- ``corrections``: the correction flow (pending late events and conflicts → the lake).
- ``steps``: the pure operators as Bytewax operators, for the flows and for users' tests.
- ``file_source``, ``kafka_source``: ordered sources, one partition per file or Kafka partition.
- ``recovery``: the Bytewax recovery store, checked before a resume.
- ``execution``: running a dataflow in this process (signals, errors).

No command-line code lives here: flows take plain values and raise typed errors.
"""
