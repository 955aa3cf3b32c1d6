"""100,000 messages derived from valid events by byte and field mutations, through the flows.

Over a file and over Kafka: the main flow exits 0, the correction flow and ``reconcile`` agree
with the ledger, and every message ends in exactly one place (G4), checked line by line.
"""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from meterwax.cli.main import main
from meterwax.kafka.producer import Record
from meterwax.sinks.lake import Lake
from tests.guarantees import check_g4_line_by_line
from tests.helpers import run_cli
from tests.kafka_helpers import produce, read_topic
from tests.mutations import Line, mutated_stream
from tests.processes import run_meterwax

LINES = int(os.environ.get("METERWAX_MUTATION_LINES", "100000"))
SEED = int(os.environ.get("METERWAX_MUTATION_SEED", "2026"))
MAX_BYTES = 64 * 1024


def corrections_and_reconcile(lake: Lake) -> None:
    done = CliRunner().invoke(main, ["corrections", "--lake", lake.root, "--once"])
    assert done.exit_code == 0, done.output
    check = CliRunner().invoke(main, ["reconcile", "--lake", lake.root])
    assert check.exit_code == 0, check.output


def tenant_key(line: Line) -> bytes:
    """The Kafka key a correct producer gives a message: its tenant (else the original's).

    A tenant's events must be in one partition (README, Producers); duplicates of one key
    across partitions are reconcile's to find, not the main flow's.
    """
    try:
        document = json.loads(line.payload)
        tenant = document.get("subject" if "specversion" in document else "tenant_id")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return line.key
    return tenant.encode("utf-8", "surrogatepass") if isinstance(tenant, str) else line.key


def file_messages(content: bytes) -> list[tuple[int, int, bytes]]:
    """A JSON Lines file's messages as the file source reads them: (0, line index, bytes)."""
    segments = content.split(b"\n")
    if content.endswith(b"\n"):
        segments = segments[:-1]
    found = []
    for index, segment in enumerate(segments):
        payload = segment.rstrip(b"\r\n")
        if payload.strip():
            found.append((0, index, payload))
    return found


@pytest.mark.slow
@pytest.mark.fault
def test_mutated_lines_through_a_file_are_each_accounted_for_once(tmp_path):
    print(f"mutation seed {SEED} (METERWAX_MUTATION_SEED), {LINES:,} lines")
    content = b"\n".join(line.payload for line in mutated_stream(LINES, SEED)) + b"\n"
    source = tmp_path / "events.jsonl"
    source.write_bytes(content)
    lake = Lake(tmp_path / "lake")
    summary = run_cli("--input", str(source), "--lake", lake.root)
    assert summary["accounted"]
    corrections_and_reconcile(lake)
    [origin] = {key.rpartition("#")[0] for key in summary["partitions"]}
    messages = file_messages(content)
    assert len(messages) >= LINES
    seen = check_g4_line_by_line(lake, messages, origin=origin, max_bytes=MAX_BYTES)
    assert seen["ledger"] > LINES // 3 and seen["quarantine"] > LINES // 5, seen


@pytest.mark.slow
@pytest.mark.fault
def test_mutated_messages_through_kafka_are_each_accounted_for_once(
    tmp_path, bootstrap, cluster, new_topic
):
    topic = new_topic(4)
    lines = mutated_stream(LINES, SEED)
    produce(cluster, topic, (Record(tenant_key(line), line.payload) for line in lines))
    lake = Lake(tmp_path / "lake")
    done = run_meterwax(
        "run", "--brokers", bootstrap, "--topic", topic, "--lake", lake.root,
        "--stop-at-end", "--no-recovery", timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    corrections_and_reconcile(lake)
    stored = read_topic(bootstrap, topic)
    assert len(stored) == LINES
    messages = [(m.partition, m.offset, m.value) for m in stored]
    seen = check_g4_line_by_line(lake, messages, origin=f"kafka:{topic}", max_bytes=MAX_BYTES)
    assert seen["ledger"] > LINES // 3 and seen["quarantine"] > LINES // 5, seen
