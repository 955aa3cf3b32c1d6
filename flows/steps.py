"""The pure steps as Bytewax operators, for meterwax's flows and for users' own tests.

Each operator is a thin adapter: the logic lives in the pure operators (``decode``,
``ColumnarPartitionMeter``) and the adapter only moves items and state in and out of Bytewax.

Recovery: step ids are part of the recovery schema (renaming a step silently starts it
empty), so the flows derive them from the settings that shape the state, e.g. ``meter_1m``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import bytewax.operators as op
from bytewax.dataflow import Stream, operator
from bytewax.operators import KeyedStream, StatefulBatchLogic

from meterwax.operators.catalog import LEGACY, Catalog, CatalogSchedule
from meterwax.operators.columnar import ColumnarPartitionMeter
from meterwax.operators.decode import DEFAULT_MAX_EVENT_BYTES, Event, Rejection, decode
from meterwax.operators.partition import MeteringRules, PartitionState
from meterwax.operators.records import PartitionOutput, SourceBatch


@operator
def decode_messages(
    step_id: str, up: Stream[bytes | None], max_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> op.BranchOut[Event, Rejection]:
    """Decode raw messages; valid events go to ``trues``, rejections to ``falses``.

    Heartbeats are control records of the partition processor and are dropped here.

    >>> import bytewax.operators as op
    >>> from bytewax.dataflow import Dataflow
    >>> from bytewax.testing import TestingSink, TestingSource, run_main
    >>> flow = Dataflow("decode_example")
    >>> raw = op.input("in", flow, TestingSource([b"{", b'{"id": "e1"}']))
    >>> split = decode_messages("decode", raw)
    >>> rejected = []
    >>> op.output("rejected", split.falses, TestingSink(rejected))
    >>> run_main(flow)
    >>> [r.reason.value for r in rejected]
    ['malformed_json', 'missing_field']
    """
    decoded = op.map("decode", up, lambda raw: decode(raw, max_bytes=max_bytes))
    relevant = op.filter("drop_heartbeats", decoded, lambda d: isinstance(d, Event | Rejection))
    return op.branch("is_event", relevant, lambda d: isinstance(d, Event))


class _PartitionLogic(StatefulBatchLogic[SourceBatch, PartitionOutput, PartitionState]):
    def __init__(
        self,
        rules: MeteringRules,
        catalog: Catalog,
        schedules: Mapping[str, CatalogSchedule],
        resume: PartitionState | None,
    ) -> None:
        self._rules = rules
        self._catalog = catalog
        self._schedules = schedules
        self._meter = (
            ColumnarPartitionMeter(
                resume.where, rules, resume, catalog, schedules.get(resume.where.key)
            )
            if resume is not None
            else None
        )

    def on_batch(self, values: list[SourceBatch]) -> tuple[Iterable[PartitionOutput], bool]:
        if self._meter is None:
            where = values[0].where
            self._meter = ColumnarPartitionMeter(
                where, self._rules, catalog=self._catalog, schedule=self._schedules.get(where.key)
            )
        return [self._meter.process(batch) for batch in values], StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[PartitionOutput], bool]:
        if self._meter is None:
            return [], StatefulBatchLogic.RETAIN
        return [self._meter.finish()], StatefulBatchLogic.RETAIN

    def snapshot(self) -> PartitionState:
        if self._meter is None:  # pragma: no cover - Bytewax builds logic only for items
            msg = "snapshot of a partition processor that never saw a batch"
            raise RuntimeError(msg)
        return self._meter.snapshot()


@operator
def meter_partitions(
    step_id: str,
    up: KeyedStream[SourceBatch],
    rules: MeteringRules,
    catalog: Catalog = LEGACY,
    schedules: Mapping[str, CatalogSchedule] | None = None,
) -> KeyedStream[PartitionOutput]:
    """Run a :class:`ColumnarPartitionMeter` per source partition (the stream must be keyed by it).

    One output per input batch, plus one at end of input carrying the flushed windows.
    ``catalog`` is the meter catalog to count with (default: none, every event meter a sum);
    ``schedules`` (by partition key) say which version decides offsets read again.

    Recovery: snapshots the partition's watermark, dedupe index and open windows; together
    with the source's offsets this resumes exactly where the snapshot was taken.
    """
    plans = dict(schedules or {})
    return op.stateful_batch(
        "process", up, lambda resume: _PartitionLogic(rules, catalog, plans, resume)
    )
