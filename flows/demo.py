"""``meterwax demo``: a realistic synthetic stream through the real flow, into a local lake."""

from __future__ import annotations

from pathlib import Path

from meterwax.flows.generator import Workload, generate


def write_jsonl(path: Path, workload: Workload) -> dict[str, int]:
    """Write the workload's messages to ``path`` (one JSON document a line); count intents."""
    path.parent.mkdir(parents=True, exist_ok=True)
    intents: dict[str, int] = {}
    with path.open("wb") as handle:
        for message in generate(workload):
            handle.write(message.payload + b"\n")
            intents[message.intent] = intents.get(message.intent, 0) + 1
    return intents
