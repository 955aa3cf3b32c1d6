"""Delta Lake writers and readers. A sink knows Delta and nothing about Kafka.

- ``schemas``: the tables, their Arrow schemas and partitioning.
- ``lake``: a lake root and its tables.
- ``arrow_rows``: row objects → Arrow tables (exact decimals).
- ``delta_writes``: the idempotent append and the revision-guarded merge.
- ``metering_sink``: the main flow's Bytewax sink (one writer per source partition).
"""
