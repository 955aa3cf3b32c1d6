"""Refuse an S3 store on which two writers could both commit the same table version.

delta-rs 1.6 commits version N of a table by writing ``_delta_log/N.json`` with one PUT that
carries ``If-None-Match: *``: the store must refuse (HTTP 412) when the object exists, and
that refusal is the only thing that stops two writers (two processes of a cluster, the
correction flow, ``maintain``) from both believing they committed N, one silently erasing
the other's commit. Amazon S3, MinIO and Cloudflare R2 honour the header; a store that
ignores it corrupts a lake without any error. The check here writes a probe object twice
with the header, exactly as a commit does, and expects the second write to be refused.

Every S3 lake is probed, whatever its options say. ``aws_copy_if_not_exists`` looks like the
way out for stores without conditional writes, but delta-rs 1.6.6 still commits with the
conditional PUT when it is set (measured: with it, on a store ignoring the header, 2 of 10
racing commits vanished): it is no protection, so it does not skip the probe.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from meterwax.errors import LakeError

PROBE_PREFIX = "_meterwax/commit-check"


class UnsafeStoreError(LakeError):
    """The lake's object store lets a second writer overwrite a committed table version.

    ``setting`` names the storage option that selects a safe commit mechanism, ``store`` the
    endpoint that was probed.
    """

    def __init__(self, message: str, *, store: str, setting: str) -> None:
        super().__init__(message)
        self.store = store
        self.setting = setting


@dataclass(frozen=True)
class S3Target:
    """Where and how to reach an S3 lake, from delta-rs storage options (and AWS_* vars)."""

    bucket: str
    prefix: str
    endpoint: str | None
    region: str | None
    access_key_id: str | None
    secret_access_key: str | None
    session_token: str | None
    profile: str | None
    virtual_hosted: bool

    @property
    def store(self) -> str:
        """A name for messages: the endpoint and bucket (never a credential)."""
        return f"{self.endpoint or 'AWS S3'} bucket {self.bucket}"


def _lookup(options: Mapping[str, str], *names: str) -> str | None:
    lowered = {key.lower(): value for key, value in options.items()}
    for name in names:
        value = lowered.get(name.lower())
        if value is not None:
            return value
    return None


def s3_target(root: str, options: Mapping[str, str]) -> S3Target:
    """The bucket, key prefix and connection settings of an ``s3://bucket/prefix`` root.

    Options use delta-rs' names, with or without the ``aws_`` prefix, in any case; settings
    not given fall back to the AWS_* environment and the AWS credential chain (botocore's).
    """
    parts = urlsplit(root)
    hosted = _lookup(options, "aws_virtual_hosted_style_request", "virtual_hosted_style_request")
    return S3Target(
        bucket=parts.netloc,
        prefix=parts.path.strip("/"),
        endpoint=_lookup(options, "aws_endpoint_url", "aws_endpoint", "endpoint_url", "endpoint"),
        region=_lookup(options, "aws_region", "region", "aws_default_region", "default_region"),
        access_key_id=_lookup(options, "aws_access_key_id", "access_key_id"),
        secret_access_key=_lookup(options, "aws_secret_access_key", "secret_access_key"),
        session_token=_lookup(options, "aws_session_token", "session_token", "aws_token", "token"),
        profile=_lookup(options, "aws_profile", "profile"),
        virtual_hosted=(hosted or "").strip().lower() in {"true", "1", "yes"},
    )


def check_conditional_put(root: str, options: Mapping[str, str]) -> None:
    """Raise UnsafeStoreError unless the S3 store at ``root`` refuses a second create of a key.

    Writes and then deletes one small object under ``<root>/_meterwax/commit-check/``.
    Failures to reach the store at all are LakeErrors naming the store.
    """
    target = s3_target(root, options)
    client = _client(target)
    key = "/".join(p for p in (target.prefix, PROBE_PREFIX, f"{uuid.uuid4().hex}.json") if p)
    try:
        client.put_object(Bucket=target.bucket, Key=key, Body=b"{}", IfNoneMatch="*")
        try:
            client.put_object(Bucket=target.bucket, Key=key, Body=b"{}", IfNoneMatch="*")
            refused = False
        except client.exceptions.ClientError as error:
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = error.response.get("Error", {}).get("Code")
            if status != 412 and code != "PreconditionFailed":
                raise
            refused = True
        finally:
            client.delete_object(Bucket=target.bucket, Key=key)
    except client.exceptions.ClientError as error:
        msg = f"cannot check commits on {target.store}: {error}"
        raise LakeError(msg) from None
    except Exception as error:  # connection refused, DNS, TLS: the store cannot be used at all
        msg = f"cannot reach {target.store}: {type(error).__name__}: {error}"
        raise LakeError(msg) from None
    if not refused:
        msg = (
            f"the object store at {target.store} overwrote an existing object on a PUT with "
            "'If-None-Match: *': it does not honour conditional writes, so two writers could "
            "both commit the same table version and one commit would be lost. Use a store "
            "that honours them (Amazon S3, MinIO, Cloudflare R2 do) in the lake's endpoint "
            "(storage option AWS_ENDPOINT_URL): delta-rs 1.6 has no safe alternative "
            "(aws_copy_if_not_exists still commits with the conditional PUT)"
        )
        raise UnsafeStoreError(msg, store=target.store, setting="AWS_ENDPOINT_URL")


def _client(target: S3Target) -> Any:  # botocore has no type stubs
    """A botocore S3 client for the target (path-style unless virtual-hosted is asked for)."""
    import botocore.config
    import botocore.session

    session = botocore.session.get_session()
    if target.profile:
        session.set_config_variable("profile", target.profile)
    config = botocore.config.Config(
        s3={"addressing_style": "virtual" if target.virtual_hosted else "path"},
        retries={"max_attempts": 3, "mode": "standard"},
        # Plain PUTs with a Content-MD5, as S3-compatible stores expect (no chunked trailers).
        request_checksum_calculation="when_required",
        connect_timeout=10,
        read_timeout=30,
    )
    return session.create_client(
        "s3",
        region_name=target.region or session.get_config_variable("region") or "us-east-1",
        endpoint_url=target.endpoint,
        aws_access_key_id=target.access_key_id,
        aws_secret_access_key=target.secret_access_key,
        aws_session_token=target.session_token,
        config=config,
    )
