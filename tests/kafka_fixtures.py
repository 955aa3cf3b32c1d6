"""Fixtures for the tests against a real Apache Kafka broker (``make test`` starts one).

Registered as a plugin in ``tests/conftest.py`` for the integration and fault tests.

The broker is the one ``METERWAX_KAFKA_BOOTSTRAP`` names. Without it these tests fail (never
skip): a green run must mean the Kafka paths were exercised.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from meterwax.kafka.clients import Cluster
from meterwax.kafka.topics import ensure_topic

REPO = Path(__file__).resolve().parents[1]
KAFKA_SCRIPT = REPO / "scripts" / "kafka"


@pytest.fixture(scope="session")
def bootstrap() -> str:
    """The bootstrap address of the test broker."""
    address = os.environ.get("METERWAX_KAFKA_BOOTSTRAP")
    if not address:
        pytest.fail(
            "METERWAX_KAFKA_BOOTSTRAP is not set: run the Kafka tests with `make test` (it "
            "starts a broker), or `scripts/with-kafka .venv/bin/python -m pytest ...`",
            pytrace=False,
        )
    return address


@pytest.fixture(scope="session")
def cluster(bootstrap: str) -> Cluster:
    """The test broker as a meterwax Cluster."""
    return Cluster(bootstrap)


@pytest.fixture
def new_topic(cluster: Cluster, request: pytest.FixtureRequest) -> Callable[[int], str]:
    """Create a topic only this test uses: ``new_topic(partitions)`` returns its name."""

    def create(partitions: int, *, on: Cluster | None = None) -> str:
        slug = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:60].strip("-")
        name = f"t-{slug}-{uuid.uuid4().hex[:8]}"
        ensure_topic(
            on or cluster,
            name,
            partitions=partitions,
            replication_factor=1,
            retention_us=40 * 86_400_000_000,
        )
        return name

    return create


@pytest.fixture
def second_broker(tmp_path: Path) -> Iterator[tuple[str, Callable[[], None]]]:
    """A broker of this test's own (``scripts/kafka`` in a private run dir), and a restart.

    Yields its bootstrap address and a function that restarts it (same ports and data).
    The broker is stopped at the end, also when the test fails.
    """
    env = {**os.environ, "METERWAX_KAFKA_RUN_DIR": str(tmp_path / "kafka-run")}

    def kafka(verb: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(KAFKA_SCRIPT), verb],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    def start() -> str:
        # The script picks free ports just before the JVM binds them; another process can
        # take one in between ("Address already in use"). One retry on fresh ports covers
        # that race; any other failure shows up twice in the message.
        attempts = []
        for _ in range(2):
            done = kafka("start")
            if done.returncode == 0:
                return done.stdout.strip().splitlines()[-1]
            attempts.append(done.stderr)
            kafka("stop")
        raise AssertionError("scripts/kafka could not start a broker:\n" + "\n---\n".join(attempts))

    address = start()

    def restart() -> None:
        done = kafka("restart")
        assert done.returncode == 0, f"scripts/kafka restart failed:\n{done.stderr}"
        assert done.stdout.strip().splitlines()[-1] == address

    try:
        yield address, restart
    finally:
        kafka("stop")
