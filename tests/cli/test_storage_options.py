"""Storage options: every lake command takes them, and no output ever shows a secret."""

from __future__ import annotations

import json
import logging
import socket

import pytest
from click.testing import CliRunner

from meterwax.cli import config, secrets
from meterwax.cli.main import main
from meterwax.sinks.commit_check import s3_target
from meterwax.sinks.storage import is_secret, masked, redact

SECRET = "s3cr3t-never-printed"
LAKE_COMMANDS = [
    ["run"],
    ["demo"],
    ["usage"],
    ["corrections"],
    ["reconcile"],
    ["maintain"],
    ["replay"],
    ["void"],
    ["meters", "apply"],
    ["meters", "show"],
    ["meters", "history"],
]


def invoke(*args: str, **env: str):
    result = CliRunner().invoke(main, list(args), env=env or None)
    return result.exit_code, result.output + (result.stderr or "")


@pytest.mark.parametrize("command", LAKE_COMMANDS, ids=" ".join)
def test_every_lake_command_takes_storage_options_and_its_help_shows_no_secret(command):
    env = {"METERWAX_STORAGE_OPTIONS": json.dumps({"AWS_SECRET_ACCESS_KEY": SECRET})}
    code, out = invoke(*command, "--help", **env)
    assert code == 0, out
    assert "--storage-option" in out
    assert SECRET not in out


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("AWS_SECRET_ACCESS_KEY", True),
        ("aws_session_token", True),
        ("azure_storage_account_key", True),
        ("AZURE_STORAGE_SAS_TOKEN", True),
        ("azure_client_secret", True),
        ("google_service_account_key", True),
        ("sasl.password", True),
        ("AWS_ACCESS_KEY_ID", False),
        ("AWS_ENDPOINT_URL", False),
        ("AWS_REGION", False),
        ("aws_conditional_put", False),
        ("azure_storage_account_name", False),
    ],
)
def test_secret_settings_are_recognised_by_name(key, secret):
    assert is_secret(key) is secret


def test_masked_options_keep_what_a_reader_needs():
    options = {"AWS_ENDPOINT_URL": "http://minio:9000", "AWS_SECRET_ACCESS_KEY": SECRET}
    assert masked(options) == {
        "AWS_ENDPOINT_URL": "http://minio:9000",
        "AWS_SECRET_ACCESS_KEY": "***",
    }


def test_redact_hides_secrets_and_passwords_in_uris():
    text = f"failed: key {SECRET} at https://user:{SECRET[:6]}xyz@host/path"
    assert redact(text, [SECRET]) == "failed: key *** at https://***@host/path"
    # Whatever the user part holds, and a SAS in the query string.
    for uri in ("s3://AKIA:ab/c+d@bucket/lake", "s3://TOKEN@bucket/lake"):
        assert (
            redact(f"cannot open {uri}: denied", []) == "cannot open s3://***@bucket/lake: denied"
        )
    assert redact("az://acct/c?sv=1&sig=abc%2F denied", []) == "az://acct/c?*** denied"


def test_the_flag_and_the_variable_give_the_options(monkeypatch):
    monkeypatch.setenv("METERWAX_STORAGE_OPTIONS", json.dumps({"AWS_REGION": "eu-west-1", "x": 1}))
    from_env = config.load(config.LakeSettings)
    assert from_env.storage_options == {"AWS_REGION": "eu-west-1", "x": "1"}
    given = config.load(config.LakeSettings, storage_options={"AWS_REGION": "us-east-2"})
    # The flag's pairs are laid over the variable's: one key replaced, the others kept.
    assert given.storage_options == {"AWS_REGION": "us-east-2", "x": "1"}


@pytest.mark.parametrize(
    "variable",
    [
        json.dumps({"AWS_SECRET_ACCESS_KEY": [SECRET]}),  # a list where a string belongs
        f'{{"AWS_SECRET_ACCESS_KEY": "{SECRET}"',  # broken JSON
        f'"{SECRET}"',  # JSON, but not a map
    ],
)
def test_a_bad_options_variable_is_one_error_without_the_secret(variable):
    code, out = invoke("usage", "--lake", "s3://bucket/lake", METERWAX_STORAGE_OPTIONS=variable)
    assert code == 2, out
    assert out.startswith("error:"), out
    assert "storage" in out.lower()
    assert SECRET not in out


def test_a_flag_without_a_value_is_not_echoed():
    code, out = invoke("usage", "--storage-option", SECRET)
    assert code == 2
    assert "--storage-option '***': expected KEY=VALUE" in out
    assert SECRET not in out


def test_an_unreachable_store_is_one_error_without_the_secret():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    options = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ALLOW_HTTP": "true",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "id",
        "AWS_SECRET_ACCESS_KEY": SECRET,
    }
    flags = [a for k, v in options.items() for a in ("--storage-option", f"{k}={v}")]
    code, out = invoke("maintain", "--lake", "s3://bucket/lake", *flags)
    assert code == 2, out
    assert f"cannot reach http://127.0.0.1:{port} bucket bucket" in out
    assert SECRET not in out


def test_log_records_are_redacted(caplog):
    secrets.remember({"AWS_SECRET_ACCESS_KEY": SECRET})
    handler = logging.StreamHandler()
    handler.addFilter(secrets.RedactingFilter())
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "key is %s", (SECRET,), None)
    handler.filter(record)
    assert record.getMessage() == "key is ***"


def test_verbose_output_shows_the_options_in_effect_without_the_secret(tmp_path, caplog):
    options = json.dumps({"AWS_REGION": "eu-central-1", "AWS_SECRET_ACCESS_KEY": SECRET})
    with caplog.at_level(logging.INFO, logger="meterwax.cli.config"):
        _, out = invoke("-v", "usage", "--lake", str(tmp_path), METERWAX_STORAGE_OPTIONS=options)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert (
        "storage options {'AWS_REGION': 'eu-central-1', 'AWS_SECRET_ACCESS_KEY': '***'}" in logged
    )
    assert SECRET not in logged + out


def test_the_commit_check_reads_delta_rs_option_names_in_any_case_and_alias():
    target = s3_target(
        "s3://bucket/some/lake/",
        {
            "aws_endpoint": "http://minio:9000",
            "REGION": "eu-west-1",
            "Access_Key_Id": "id",
            "secret_access_key": SECRET,
            "AWS_PROFILE": "ops",
            "aws_virtual_hosted_style_request": "TRUE",
        },
    )
    assert (target.bucket, target.prefix) == ("bucket", "some/lake")
    assert (target.endpoint, target.region, target.profile) == (
        "http://minio:9000",
        "eu-west-1",
        "ops",
    )
    assert (target.access_key_id, target.secret_access_key) == ("id", SECRET)
    assert target.virtual_hosted is True
    assert SECRET not in target.store


def test_a_map_nested_in_the_options_variable_is_never_shown():
    nested = json.dumps({"google_service_account": {"private_key": "PRIVATE-KEY-VALUE"}})
    code, out = invoke("usage", "--lake", "gs://b/lake", METERWAX_STORAGE_OPTIONS=nested)
    assert code == 2, out
    assert "METERWAX_STORAGE_OPTIONS" in out and "PRIVATE-KEY-VALUE" not in out


def test_one_setting_in_two_spellings_with_two_values_is_refused():
    code, out = invoke(
        "usage",
        "--lake",
        "s3://b/lake",
        "--storage-option",
        "AWS_ENDPOINT_URL=http://127.0.0.1:1",
        "--storage-option",
        "aws_endpoint_url=http://127.0.0.1:2",
    )
    assert code == 2, out
    assert "AWS_ENDPOINT_URL and aws_endpoint_url" in out and "give it once" in out


def test_a_failure_of_the_lakes_storage_is_one_line_without_secrets():
    code, out = invoke(
        "usage",
        "--lake",
        "s3://lake//doubled",
        "--storage-option",
        "AWS_ENDPOINT_URL=http://127.0.0.1:9",
        "--storage-option",
        f"AWS_SECRET_ACCESS_KEY={SECRET}",
    )
    assert code == 1, out
    assert out.startswith("error: the lake's storage failed: ") and "empty path segment" in out
    assert "Traceback" not in out and SECRET not in out
