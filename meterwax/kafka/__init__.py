"""Kafka tooling: clients built one way, the idempotent producer, topics, heartbeats, ranges.

- ``clients``: confluent-kafka clients with meterwax's reserved settings, topic metadata.
- ``producer``: an idempotent producer that counts deliveries.
- ``topics``: the events topic with replay-safe settings.
- ``heartbeat``: heartbeat records that move an idle partition's event time.
- ``ranges``: offset ranges of a topic, resolved and read back (for replay).

The main flow's Kafka *source* lives with the other sources in ``meterwax.flows``.
"""
