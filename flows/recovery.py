"""The Bytewax recovery store of a main-flow run: create it, or check it before resuming.

Bytewax keeps operator state and source offsets in SQLite partitions under one directory and
resumes from the newest complete epoch there. Resuming a store that was made for another input
(another topic, another partition count, another window length) would silently mix states,
so meterwax writes what the store was made for next to it and refuses a mismatch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from bytewax._bytewax import init_db_dir
from bytewax.recovery import RecoveryConfig

from meterwax.errors import ConfigError

IDENTITY_FILE = "meterwax-recovery.json"


@dataclass(frozen=True)
class StoreIdentity:
    """What a recovery store belongs to."""

    flow: str
    source: str
    """``kafka:<topic>`` or the file origins, comma-separated."""
    partitions: int
    window_us: int


def prepare_store(
    directory: Path, identity: StoreIdentity, *, store_partitions: int = 1
) -> RecoveryConfig:
    """Create and initialise the store if it is new; otherwise check it matches ``identity``."""
    identity_path = directory / IDENTITY_FILE
    has_state = directory.is_dir() and any(directory.glob("part-*.sqlite3"))
    if not has_state:
        directory.mkdir(parents=True, exist_ok=True)
        init_db_dir(directory, store_partitions)
        identity_path.write_text(json.dumps(asdict(identity), indent=2) + "\n")
        return RecoveryConfig(str(directory))
    if not identity_path.exists():
        msg = (
            f"recovery store {directory} has state but no {IDENTITY_FILE}: it was not made by "
            "meterwax; use an empty directory"
        )
        raise ConfigError(msg)
    recorded = StoreIdentity(**json.loads(identity_path.read_text()))
    differences = [
        f"{name} {getattr(recorded, name)!r} (this run: {getattr(identity, name)!r})"
        for name in ("flow", "source", "partitions", "window_us")
        if getattr(recorded, name) != getattr(identity, name)
    ]
    if differences:
        msg = (
            f"recovery store {directory} was made for another input: "
            + "; ".join(differences)
            + ". Resuming it would mix states. Use a new --recovery-dir (the lake's Delta "
            "transaction log keeps the run exactly once), or the original settings."
        )
        raise ConfigError(msg)
    return RecoveryConfig(str(directory))
