"""A real S3-compatible HTTP server for the tests (scripts/s3), started once and on demand.

Only tests that ask for ``s3_server`` (or a fixture built on it) start it: the first build of
the Go program needs the Go module proxy and a minute or more; later starts take
milliseconds. Each test gets its own prefix in the bucket (``s3_lake``), so tests never see
each other's tables. The server lives until the test session ends (its stdin is a pipe that
closes when pytest exits, so it never outlives a killed test run).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from meterwax.sinks.lake import Lake

REPO = Path(__file__).resolve().parents[1]
BUCKET = "lake"


@dataclass(frozen=True)
class S3Server:
    """A running server: where it listens and the delta-rs options that reach it."""

    address: str
    process: subprocess.Popen[str]

    @property
    def endpoint(self) -> str:
        return f"http://{self.address}"

    def storage_options(self) -> dict[str, str]:
        """delta-rs storage options for this server (dummy credentials: it checks none)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "meterwax-test",
            "AWS_SECRET_ACCESS_KEY": "test-secret-do-not-print",
        }

    def env(self) -> dict[str, str]:
        """Environment for a meterwax subprocess: the options as METERWAX_STORAGE_OPTIONS."""
        return {"METERWAX_STORAGE_OPTIONS": json.dumps(self.storage_options())}

    def lake(self, name: str | None = None) -> Lake:
        """A fresh lake under its own prefix of the bucket."""
        prefix = name or uuid.uuid4().hex[:12]
        return Lake(f"s3://{BUCKET}/{prefix}", self.storage_options())


def start_s3_server(*flags: str) -> S3Server:
    """Build the server if needed and start it on a free loopback port."""
    process = subprocess.Popen(
        ["bash", str(REPO / "scripts" / "s3"), "serve", "-addr", "127.0.0.1:0", *flags],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # blocks through a first build; EOF if it failed
    if not line.startswith("listening on "):
        process.kill()
        raise RuntimeError(f"the S3 server did not start (exit {process.wait()}): {line!r}")
    return S3Server(line.removeprefix("listening on ").strip(), process)


def stop_s3_server(server: S3Server) -> None:
    """Stop it (closing stdin is its signal to shut down), waiting for it to exit."""
    assert server.process.stdin is not None
    server.process.stdin.close()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """The S3-compatible server that honours conditional writes, as S3, MinIO and R2 do."""
    server = start_s3_server("-bucket", BUCKET)
    yield server
    stop_s3_server(server)


@pytest.fixture(scope="session")
def s3_server_without_conditional_put() -> Iterator[S3Server]:
    """A server that ignores ``If-None-Match`` on PUT: a store meterwax must refuse."""
    server = start_s3_server("-bucket", BUCKET, "-no-conditional-put")
    yield server
    stop_s3_server(server)


@pytest.fixture
def s3_lake(s3_server: S3Server) -> Lake:
    """A fresh lake on the S3 server, under a prefix of its own."""
    return s3_server.lake()
