"""Object-store settings of a lake: which are secret, and how to show them without leaking.

A lake on S3, Azure or GCS is opened with delta-rs ``storage_options`` (credentials, endpoint,
path style…). Access keys, tokens, passwords and SAS signatures must never reach a log line,
a run summary or an error message, so everything meterwax prints about them goes through
:func:`masked` (for the options) or :func:`redact` (for free text such as an error from below).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

MASK = "***"

_SECRET_WORDS = (
    "secret",
    "key",
    "token",
    "password",
    "passwd",
    "sas",
    "credential",
    "signature",
    "session",
)
_NOT_SECRET = {
    # Names that contain a secret word but hold no secret: what a reader needs to see.
    "aws_access_key_id",
    "access_key_id",
    "key_id",
    "google_service_account_path",
    "azure_storage_account_name",
    "account_name",
    "azure_storage_account_key_id",
}


def is_secret(key: str) -> bool:
    """True if a setting of this name holds (or may hold) a secret.

    Errs on the side of hiding: any name with a secret-sounding word is secret, except the
    few identifiers listed as public (an access key *id* is not a secret, its key is).
    """
    name = key.strip().lower()
    if name in _NOT_SECRET:
        return False
    return any(word in name for word in _SECRET_WORDS)


def masked(options: Mapping[str, str] | None) -> dict[str, str]:
    """The options with every secret value replaced by ``***`` (for display)."""
    return {key: MASK if is_secret(key) else value for key, value in (options or {}).items()}


def secret_values(options: Mapping[str, str] | None) -> list[str]:
    """The secret values among ``options`` and the cloud variables of the environment.

    delta-rs also reads ``AWS_*``, ``AZURE_*`` and ``GOOGLE_*`` variables itself, so their
    secrets are hidden too. Very short values are left out: hiding ``1`` would garble text.
    """
    found = [value for key, value in (options or {}).items() if is_secret(key)]
    for key, value in os.environ.items():
        if key.startswith(("AWS_", "AZURE_", "GOOGLE_", "METERWAX_")) and is_secret(key):
            found.append(value)
    return sorted({v for v in found if len(v) >= 4}, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of a secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return _redact_userinfo(text)


_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^\s@'\"]+@", re.IGNORECASE)
_QUERY = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^\s?'\"]*\?)[^\s'\"]+", re.IGNORECASE)


def _redact_userinfo(text: str) -> str:
    """Hide credentials inside URIs: the user part, and the query string.

    ``scheme://user:pass@host`` and ``scheme://TOKEN@host`` become ``scheme://***@host``; a
    query string (an Azure ``?sig=`` SAS) becomes ``?***``. The whole user part goes,
    whatever it holds (a secret with ``/`` or ``+`` in it).
    """
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    return _QUERY.sub(lambda m: f"{m['head']}{MASK}", text)


def scheme(root: str) -> str | None:
    """The object-store scheme of a lake root (``s3``, ``gs``…), None for a local path."""
    head, sep, _ = root.partition("://")
    if not sep:
        return None
    name = head.lower()
    return None if name == "file" else name


def is_object_store(root: str) -> bool:
    """True if the lake root is on an object store (not a local directory)."""
    return scheme(root) is not None


def is_s3(root: str) -> bool:
    """True for ``s3://`` and ``s3a://`` roots: stores whose commit safety must be checked."""
    return scheme(root) in {"s3", "s3a"}
