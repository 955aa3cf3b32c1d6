"""Progress of bounded runs: the backlog a source reports, and the line drawn while it runs."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterwax.cli.progress import Progress, counting, watch_progress
from meterwax.flows.file_source import FilePosition, FileSource
from tests.processes import run_meterwax

lines = st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=40)


@settings(max_examples=200, deadline=None)
@given(lines=lines, final_newline=st.booleans(), resume_at=st.integers(0, 40))
def test_a_file_backlog_counts_the_lines_left_after_the_resume_position(
    tmp_path_factory, lines, final_newline, resume_at
):
    path = Path(tmp_path_factory.mktemp("backlog")) / "events.jsonl"
    content = b"\n".join(lines) + (b"\n" if final_newline else b"")
    path.write_bytes(content)
    # What a line reader sees: text between newlines, the last one only if it is not empty.
    seen = content.split(b"\n")
    if seen[-1] == b"":
        seen.pop()
    resume_at = min(resume_at, len(seen))
    byte = sum(len(line) + 1 for line in seen[:resume_at])  # where that line starts
    source = FileSource([path])
    (key,) = source.list_parts()
    assert source.backlog({}) == len(seen)
    assert source.backlog({key: FilePosition(min(byte, len(content)), resume_at)}) == (
        len(seen) - resume_at
    )


def test_the_progress_line_shows_each_tenth_and_ends_at_what_was_done():
    stream = io.StringIO()
    done = [0]

    def drawn_until(text: str) -> list[str]:
        deadline = time.monotonic() + 10
        while text not in stream.getvalue():  # the helper thread draws each new tenth
            assert time.monotonic() < deadline, stream.getvalue()
            time.sleep(0.001)
        return stream.getvalue().splitlines()

    with watch_progress(lambda: done[0], 1000, "reading x", stream=stream, every_s=0.001):
        done[0] = 400
        (line,) = drawn_until("40%")
        assert line.startswith(f"reading x [{'#' * 12}{'.' * 18}]  40% 400/1,000 ")
        done[0] = 1200  # a total can be an estimate: more can come
        drawn_until("120%")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3  # 40%, 120%, and the final line
    assert lines[-1].startswith(f"reading x [{'#' * 30}] 120% 1,200/1,000 ")


def test_counting_passes_every_item_through_and_ends_with_the_count():
    stream = io.StringIO()
    assert list(counting(iter("abcde"), Progress(5, "replaying t", stream))) == list("abcde")
    lines = stream.getvalue().splitlines()
    assert [line.split("]")[1].split()[:2] for line in lines] == [
        ["20%", "1/5"],
        ["40%", "2/5"],
        ["60%", "3/5"],
        ["80%", "4/5"],
        ["100%", "5/5"],
        ["100%", "5/5"],  # the final line
    ]


def test_no_final_line_when_the_work_fails():
    stream = io.StringIO()
    with (
        pytest.raises(RuntimeError),
        watch_progress(lambda: 0, 1000, "reading x", stream=stream, every_s=0.01),
    ):
        raise RuntimeError("broken")
    assert stream.getvalue() == ""


def test_a_file_run_reports_progress_on_stderr_and_its_summary_on_stdout(tmp_path):
    from meterwax.synthetic.generator import Workload, generate
    from tests.helpers import write

    source = write(tmp_path / "events.jsonl", list(generate(Workload(events=3000, tenants=3))))
    completed = run_meterwax(
        "run", "--input", str(source), "--lake", str(tmp_path / "lake"), "--format", "json"
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr.splitlines()[-1].startswith("reading events.jsonl [")
    assert "100% 3,000/3,000" in completed.stderr
    assert completed.stdout.lstrip().startswith("{")
