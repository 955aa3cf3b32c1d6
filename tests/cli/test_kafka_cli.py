"""The Kafka commands' help, settings and error messages, and their pure parts (no broker)."""

from __future__ import annotations

import io
import logging
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from meterwax.cli import config
from meterwax.cli.arguments import parse_brokers
from meterwax.cli.main import main
from meterwax.cli.progress import Progress
from meterwax.cli.stopping import stop_on_signals
from meterwax.errors import ConfigError
from meterwax.kafka.clients import Cluster, _Throttle
from meterwax.kafka.heartbeat import heartbeat_payload
from meterwax.kafka.topics import topic_settings
from meterwax.operators.decode import Heartbeat, decode
from meterwax.synthetic.generator import Workload, generate


def invoke(*args: str, **env: str):
    return CliRunner().invoke(main, list(args), env=env or None)


@pytest.mark.parametrize(
    "command", [["produce"], ["heartbeat"], ["topics"], ["topics", "create"], ["run"]]
)
def test_kafka_commands_have_help_with_examples(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    assert "Examples:" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--brokers", "localhost:9092"], "--input and --brokers are mutually exclusive"),
        (["--topic", "usage"], "--topic is for Kafka input (--brokers), not for --input files"),
        (["--stop-at-end"], "--stop-at-end is for Kafka input"),
    ],
)
def test_run_refuses_kafka_flags_with_file_input(tmp_path, args, message):
    source = tmp_path / "events.jsonl"
    source.write_text("")
    result = invoke("run", "--input", str(source), *args)
    assert result.exit_code == 2
    assert message in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "nothing to read: give --input FILE or --brokers HOST:PORT"),
        (["--brokers", "kafka"], "--brokers (flag) = 'kafka'"),
        (["--brokers", "kafka:port"], "'kafka:port' is not HOST:PORT"),
        (["--brokers", "k:9092", "--topic", "no spaces"], "--topic (flag) = 'no spaces'"),
        (["--brokers", "k:9092", "-i", "0"], "--process-id and --addresses go together"),
        (["--brokers", "k:9092", "-i", "2", "-a", "h:1;h:2"], "--process-id 2 is not an index"),
        (["--brokers", "k:9092", "-i", "0", "-a", "h:1;h:1"], "names h:1 more than once"),
        (["--brokers", "k:9092", "-i", "0", "-a", "h:1;h"], "'h' is not HOST:PORT"),
        (["--brokers", "k:9092", "--kafka-config", "acks"], "--kafka-config 'acks': expected"),
        (
            ["--brokers", "k:9092", "--kafka-config", "enable.auto.commit=true"],
            "meterwax sets enable.auto.commit itself",
        ),
        (
            ["--brokers", "k:9092", "--kafka-config", "isolation.level=read_uncommitted"],
            "meterwax sets isolation.level itself (only committed",
        ),
        (
            ["--brokers", "k:9092", "--kafka-config", "no.such.setting=1"],
            'No such configuration property: "no.such.setting"',
        ),
    ],
)
def test_run_names_the_bad_kafka_setting(tmp_path, args, message):
    result = invoke("run", "--lake", str(tmp_path / "lake"), *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_kafka_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("METERWAX_BROKERS", "k1:9092, k2:9092")
    monkeypatch.setenv("METERWAX_TOPIC", "metering")
    monkeypatch.setenv("METERWAX_KAFKA_CONFIG", '{"security.protocol": "SSL", "retries": 5}')
    monkeypatch.setenv("METERWAX_STOP_AT_END", "true")
    settings = config.load(config.RunSettings)
    assert settings.cluster() == Cluster(
        "k1:9092,k2:9092", {"security.protocol": "SSL", "retries": "5"}
    )
    assert settings.topic == "metering"
    assert settings.stop_at_end is True
    assert config.load(config.RunSettings, topic="flag-wins").topic == "flag-wins"


def test_a_kafka_config_variable_that_is_not_json_is_one_clear_error(tmp_path):
    result = invoke(
        "run", "--brokers", "k:9092", "--lake", str(tmp_path), METERWAX_KAFKA_CONFIG="ssl"
    )
    assert result.exit_code == 2
    assert "kafka_config" in result.output and "hold JSON" in result.output


def test_produce_output_writes_the_generator_stream_as_jsonl(tmp_path):
    target = tmp_path / "events.jsonl"
    result = invoke(
        "produce",
        "--events",
        "500",
        "--tenants",
        "3",
        "--seed",
        "8",
        "--start",
        "2026-02-01T00:00:00Z",
        "--output",
        str(target),
    )
    assert result.exit_code == 0, result.output
    assert "wrote 500 messages" in result.output
    expected = generate(
        Workload(events=500, tenants=3, seed=8, start=datetime(2026, 2, 1, tzinfo=UTC))
    )
    assert target.read_bytes() == b"".join(m.payload + b"\n" for m in expected)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--output", "x.jsonl", "--brokers", "k:9092"], "--output writes a file"),
        (["--output", "x.jsonl", "--rate", "10"], "drop --rate"),
        (["--output", "x.jsonl", "--late", "0.5", "--invalid", "0.5"], "must stay below 1"),
        (["--output", "x.jsonl", "--start", "yesterday"], "--start 'yesterday'"),
        (["--events", "-1", "--output", "x.jsonl"], "--events (flag) = -1"),
        (["--brokers", "k:9092", "--rate", "0"], "--rate (flag) = 0.0"),
        ([], "no Kafka brokers: give --brokers HOST:PORT"),
    ],
)
def test_produce_names_the_bad_value(tmp_path, args, message):
    args = [str(tmp_path / arg) if arg.endswith(".jsonl") else arg for arg in args]
    result = invoke("produce", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["heartbeat", "--brokers", "k:9092", "--every", "0s"], "--every (flag)"),
        (["heartbeat", "--brokers", "k:9092", "--every", "often"], "not a duration: 'often'"),
        (["heartbeat"], "no Kafka brokers"),
        (["topics", "create", "--brokers", "k:9092"], "give --partitions N"),
        (
            [
                *("replay", "--brokers", "k:9092", "--lake", "l"),
                *("--from-time", "2026-01-02", "--to-time", "2026-01-02"),
            ],
            "--from-time 2026-01-02T00:00:00+00:00 is not before --to-time",
        ),
        (
            ["topics", "create", "--brokers", "k:9092", "--partitions", "0"],
            "--partitions (flag) = 0",
        ),
    ],
)
def test_heartbeat_and_topics_name_the_bad_value(args, message):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_parse_brokers():
    assert parse_brokers(" a:9092 , b:9093") == "a:9092,b:9093"
    assert parse_brokers("SSL://kafka.example:9093") == "SSL://kafka.example:9093"
    for bad in ("a", "a:0", "a:65536", ":9092", "a:9092,", "a:x"):
        with pytest.raises(ConfigError, match="is not HOST:PORT"):
            parse_brokers(bad)


def test_a_heartbeat_is_a_control_record_with_its_exact_time():
    moment = datetime(2026, 3, 1, 12, 0, 5, 123456, tzinfo=timezone(timedelta(hours=2)))
    decoded = decode(heartbeat_payload(moment))
    assert decoded == Heartbeat(int(moment.timestamp()) * 1_000_000 + 123456)
    with pytest.raises(ValueError, match="timezone-aware"):
        heartbeat_payload(datetime(2026, 3, 1))


def test_topic_settings_keep_every_event_replayable():
    settings = topic_settings(40 * 86_400_000, replication_factor=3)
    assert settings["cleanup.policy"] == "delete"
    assert settings["retention.bytes"] == "-1"
    assert int(settings["retention.ms"]) >= 35 * 86_400_000
    assert settings["min.insync.replicas"] == "2"
    assert topic_settings(1, replication_factor=1)["min.insync.replicas"] == "1"


def test_stop_on_signals_turns_sigterm_into_a_recorded_interrupt():
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals() as stop, pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGTERM)
    assert stop.requested and stop.name == "SIGTERM" and stop.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_second_stop_signal_exits_at_once():
    # In a child process: the second signal ends the process without unwinding.
    script = (
        "import signal\n"
        "from meterwax.cli.stopping import stop_on_signals\n"
        "with stop_on_signals():\n"
        "    try:\n"
        "        signal.raise_signal(signal.SIGINT)\n"
        "    except KeyboardInterrupt:\n"
        "        signal.raise_signal(signal.SIGTERM)\n"
        "        print('still running')\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert child.returncode == 128 + signal.SIGTERM, child.stderr
    assert child.stdout == ""
    assert child.stderr == "meterwax: SIGTERM again: exiting now\n"


def test_progress_off_a_terminal_prints_one_line_per_tenth():
    stream = io.StringIO()
    progress = Progress(1000, "topic", stream)
    for done in range(1, 1001):
        progress.update(done, lambda: "note")
    progress.finish(1000)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 11
    assert lines[0].startswith("topic [###") and "10% 100/1,000" in lines[0]
    assert "100% 1,000/1,000" in lines[-1]


def test_repeated_librdkafka_log_lines_are_throttled():
    throttle = _Throttle(interval_s=3600)

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("x", logging.ERROR, __file__, 1, message, None, None)

    assert throttle.filter(record("Connect to ipv4#127.0.0.1:9092 failed (after 0ms)"))
    assert not throttle.filter(record("Connect to ipv4#127.0.0.1:9092 failed (after 3ms)"))
    assert throttle.filter(record("a different problem"))
