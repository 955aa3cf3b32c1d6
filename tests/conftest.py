"""Shared fixtures. Hypothesis profiles: HYPOTHESIS_PROFILE=dev (fast) | ci (default) | deep."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

pytest_plugins = ["tests.kafka_fixtures", "tests.s3_fixtures"]
"""The real Kafka broker's and the real S3-compatible server's fixtures."""

settings.register_profile(
    "ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=30, deadline=None)
settings.register_profile(
    "deep", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True, scope="session")
def _state_outside_the_repository(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Default recovery stores of Kafka runs go to a temporary directory, not ./.meterwax."""
    os.environ["METERWAX_STATE_DIR"] = str(tmp_path_factory.mktemp("meterwax-state"))


@pytest.fixture
def lake_dir(tmp_path: Path) -> Path:
    """A fresh, empty lake directory."""
    return tmp_path / "lake"


# delta-rs/Arrow native thread pools can abort the interpreter during teardown
# ("terminate called without an active exception", delta-rs #2184) after every test has
# passed. Leave with pytest's own exit status once its report is written.
@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    status = config.stash.get(_EXIT_STATUS, None)
    if status is not None and os.environ.get("METERWAX_PYTEST_HARD_EXIT", "1") == "1":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


_EXIT_STATUS = pytest.StashKey[int]()
