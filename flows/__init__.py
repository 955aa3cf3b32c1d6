"""The Bytewax dataflows and the command line that starts them.

- ``metering``: the main flow (source → partition processors → lake).
- ``file_source``: JSON Lines files as an ordered source.
- ``kafka_source``: a Kafka topic as ordered sources, one per partition.
- ``kafka_clients``, ``kafka_producer``, ``heartbeat``, ``topics``: talking to Kafka (clients,
  the idempotent producer, heartbeat records, the events topic).
- ``stopping``, ``progress``: stopping long commands on signals; progress on stderr.
- ``config``: settings from flags, ``METERWAX_*`` variables and defaults.
- ``generator``: synthetic usage streams (demo, load generator, tests, benchmark).
- ``cli``: the ``meterwax`` command.
"""
