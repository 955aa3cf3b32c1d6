"""Heartbeat records: wall-clock time written into every partition, so idle windows close.

The main flow's watermark is derived from event times in the log only (that is what makes it
deterministic), so a partition that receives no events never closes its last windows. A
heartbeat ``{"meterwax_control": "heartbeat", "timestamp": <now, UTC>}`` written to a
partition moves that partition's event time to ``now``: its windows that end before
``now - allowed lateness`` close. Because the heartbeat is a record in the log, a replay sees
it at the same offset and closes the same windows at the same place.

Every partition gets its own heartbeat by explicit partition number (a keyed record would
reach only one partition), and the partition list is read again at every tick, so
partitions added to the topic get heartbeats too.

The cost, documented in the README: an event produced more than the allowed lateness behind
wall-clock time, after a heartbeat reached its partition, is late.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import orjson

from meterwax.kafka.clients import Cluster
from meterwax.kafka.producer import DeliveryReport, Record, RecordWriter
from meterwax.operators.contract import HEARTBEAT_MARKER


def heartbeat_payload(now: datetime) -> bytes:
    """The heartbeat record for ``now`` (an aware datetime), RFC 3339 in UTC."""
    if now.tzinfo is None:
        msg = f"heartbeat time must be timezone-aware, got {now!r}"
        raise ValueError(msg)
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return orjson.dumps({HEARTBEAT_MARKER: "heartbeat", "timestamp": stamp})


def send_heartbeats(
    writer: RecordWriter,
    cluster: Cluster,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> tuple[list[int], DeliveryReport]:
    """Write one heartbeat to every partition of the writer's topic; wait for their delivery.

    Returns the partitions written to and the delivery report of this round.
    Raises BrokerError if the topic does not exist.
    """
    partitions = cluster.require_partitions(writer.topic)
    payload = heartbeat_payload(now())
    writer.report = DeliveryReport()  # the previous round was flushed: nothing is in flight
    for partition in partitions:
        writer.write(Record(None, payload, partition))
    return partitions, writer.flush()
