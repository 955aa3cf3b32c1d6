"""Scrape the flows' Prometheus endpoints while they run; the counters add up exactly."""

from __future__ import annotations

import signal
import socket
import urllib.request
from collections import Counter

import pytest

from meterwax.sinks.lake import Lake
from meterwax.synthetic.generator import Workload, generate
from tests.kafka_helpers import produce_generated
from tests.processes import start_meterwax, stop_cleanly, wait_for

pytestmark = pytest.mark.kafka


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape(port: int) -> dict[str, float]:
    """``name{labels}`` → value of every sample; empty while the endpoint is not up yet."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return {}
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_a_running_flow_exports_counters_that_add_up(tmp_path, bootstrap, cluster, new_topic):
    topic = new_topic(2)
    messages = list(generate(Workload(events=5000, tenants=6, seed=61)))
    produce_generated(cluster, topic, messages)
    intents = Counter(m.intent for m in messages)
    lake, port = Lake(tmp_path / "lake"), free_port()
    flow = start_meterwax(
        tmp_path / "run.log",
        "run",
        "--brokers",
        bootstrap,
        "--topic",
        topic,
        "--lake",
        lake.root,
        "--metrics-port",
        str(port),
        "--snapshot-interval",
        "200ms",
    )
    try:
        metrics = wait_for(
            lambda: (m := scrape(port)).get("meterwax_events_read_total") == len(messages) and m,
            what="every message to be counted in the metrics",
            process=flow,
        )
    finally:
        stop_cleanly(flow, tmp_path / "run.log")
    quarantined = sum(
        v for k, v in metrics.items() if k.startswith("meterwax_events_quarantined_total{")
    )
    assert metrics["meterwax_events_counted_total"] == intents["valid"]
    assert metrics["meterwax_events_duplicate_total"] == intents["duplicate"]
    assert metrics["meterwax_events_late_total"] == intents["late"]
    assert quarantined == intents["invalid"]
    assert (
        metrics["meterwax_events_counted_total"]
        + metrics["meterwax_events_duplicate_total"]
        + metrics["meterwax_events_late_total"]
        + quarantined
    ) == metrics["meterwax_events_read_total"]
    assert metrics["meterwax_delta_commits_total"] > 0
    assert metrics["meterwax_batch_messages_count"] > 0
    assert metrics[f'meterwax_dedupe_keys{{partition="kafka:{topic}#0"}}'] > 0
    assert f'meterwax_watermark_lag_seconds{{partition="kafka:{topic}#1"}}' in metrics

    port = free_port()
    corrections = start_meterwax(
        tmp_path / "corrections.log",
        "corrections",
        "--lake",
        lake.root,
        "--poll-interval",
        "200ms",
        "--metrics-port",
        str(port),
    )
    try:
        fixed = wait_for(
            lambda: (
                (m := scrape(port)).get("meterwax_corrections_late_counted_total")
                == intents["late"]
                and m
            ),
            what="the late events to be counted by corrections",
            process=corrections,
        )
    finally:
        stop_cleanly(corrections, tmp_path / "corrections.log", signal.SIGINT)
    assert fixed["meterwax_corrections_windows_changed_total"] > 0
