"""Keep storage secrets out of everything the command line prints.

Commands register the storage options they open a lake with; the error handler of the
command group, the log handlers and the summaries then replace every secret value (and the
secrets of the AWS_*/AZURE_*/GOOGLE_* variables delta-rs reads itself) with ``***``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from meterwax.sinks.storage import redact as _redact
from meterwax.sinks.storage import secret_values

_known: set[str] = set()


def remember(options: Mapping[str, str] | None) -> None:
    """Hide the secret values of ``options`` from now on."""
    _known.update(secret_values(options))


def any_known() -> bool:
    """True if there is a secret to hide (from the options or the environment)."""
    return bool(_known) or bool(secret_values(None))


def redact(text: str) -> str:
    """``text`` without any known secret (environment secrets included)."""
    secrets = sorted(_known | set(secret_values(None)), key=len, reverse=True)
    return _redact(text, secrets)


class RedactingFilter(logging.Filter):
    """Rewrites each log record's message with the secrets replaced (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace the secrets in the record's message; keep the record."""
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install_log_filter() -> None:
    """Put the redacting filter on every handler of the root logger."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
