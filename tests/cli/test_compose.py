"""docker-compose.yml and the Dockerfile stay in step with the command line.

No Docker engine is needed: every service command in the compose file is parsed by the real
``meterwax`` CLI (a renamed flag would otherwise only show up when a user runs compose).
Checking the whole file's syntax is `docker-compose config` (see the README).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import click

from meterwax.cli.main import main

REPO = Path(__file__).resolve().parents[2]
COMPOSE = (REPO / "docker-compose.yml").read_text()


def service_commands() -> dict[str, list[str]]:
    """``service name → command`` for every service whose command is a one-line JSON list."""
    commands: dict[str, list[str]] = {}
    service = None
    for line in COMPOSE.splitlines():
        header = re.match(r"^  ([a-z][a-z0-9-]*):\s*$", line)
        if header:
            service = header.group(1)
        command = re.match(r"^    command: (\[.*\])\s*$", line)
        if command and service is not None:
            commands[service] = json.loads(command.group(1))
    return commands


def parse(args: list[str]) -> click.Context:
    """Parse a command line down to its leaf command, without running it."""
    command: click.Command = main
    context = click.Context(main, info_name="meterwax")
    rest = list(args)
    while isinstance(command, click.Group):
        name, rest = rest[0], rest[1:]
        sub = command.get_command(context, name)
        assert sub is not None, f"unknown command {name!r} in {args}"
        command = sub
        context = click.Context(sub, info_name=name, parent=context)
    return command.make_context(context.info_name, rest, parent=context.parent)


def test_every_compose_command_is_a_valid_meterwax_command_line():
    commands = service_commands()
    assert {"topics", "meterwax", "heartbeat", "produce"} <= set(commands)
    for service, args in commands.items():
        context = parse(args)
        assert context.command.name, service
    assert parse(commands["meterwax"]).params["lake"] == "/lake"
    assert "lake:/lake" in COMPOSE


def test_compose_runs_apache_kafka_4_in_kraft_mode():
    image = re.search(r"image: apache/kafka:(\d+)\.", COMPOSE)
    assert image and int(image.group(1)) == 4
    assert "KAFKA_PROCESS_ROLES: broker,controller" in COMPOSE


def test_the_image_runs_meterwax_on_a_python_bytewax_supports():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.(8|9|10|11|12)-slim$", dockerfile, re.MULTILINE)
    assert 'ENTRYPOINT ["meterwax"]' in dockerfile


def test_every_volume_a_meterwax_service_mounts_belongs_to_the_image_user():
    # A named volume takes its owner from the image's directory: one missing from the
    # Dockerfile is root-owned, and the unprivileged flow cannot write its lake or store.
    dockerfile = (REPO / "Dockerfile").read_text()
    owned = re.search(r"mkdir ([^&\n]+) && chown meterwax ([^\n]+)", dockerfile)
    assert owned, "the Dockerfile must create and chown the mount points"
    created, chowned = set(owned.group(1).split()), set(owned.group(2).split())
    mounts = set(re.findall(r"^      - [a-z-]+:(/[a-z/]+)$", COMPOSE, re.MULTILINE))
    mounts.discard("/var/lib/kafka/data")  # the Kafka image's own
    mounts.discard("/data")  # the MinIO image's own
    assert mounts == {"/lake", "/state"}
    assert mounts <= created & chowned


def test_the_s3_profile_runs_both_flows_on_one_object_store_lake(monkeypatch):
    import yaml

    from meterwax.cli import config

    services = yaml.safe_load(COMPOSE)["services"]
    s3 = {name for name, service in services.items() if "s3" in service.get("profiles", [])}
    assert s3 == {"minio", "meterwax-s3", "corrections-s3"}
    commands = service_commands()
    lakes = {parse(commands[name]).params["lake"] for name in ("meterwax-s3", "corrections-s3")}
    assert lakes == {"s3://meterwax/lake"}
    # The bucket the flows write is the one MinIO creates at start.
    assert "mkdir -p /data/meterwax" in " ".join(services["minio"]["entrypoint"])
    for name in ("meterwax-s3", "corrections-s3"):
        environment = services[name]["environment"]
        variable = environment["METERWAX_STORAGE_OPTIONS"]
        # The secret comes from the MinIO password variable, never a literal of its own.
        assert '"AWS_SECRET_ACCESS_KEY": "${MINIO_ROOT_PASSWORD:-' in variable
        monkeypatch.setenv("METERWAX_STORAGE_OPTIONS", variable)
        options = config.load(config.LakeSettings).storage_options
        assert options["AWS_ENDPOINT_URL"] == "http://minio:9000"
        assert options["AWS_ALLOW_HTTP"] == "true"
        assert environment["METERWAX_BROKERS"] == "kafka:9092"
        assert services[name]["depends_on"]  # started after MinIO / the main flow
    assert services["meterwax-s3"]["depends_on"]["minio"]["condition"] == "service_healthy"
