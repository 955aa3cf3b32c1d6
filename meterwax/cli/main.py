"""The ``meterwax`` command line.

Every setting comes from its flag, else its ``METERWAX_*`` environment variable, else the
default (see ``flows/config.py``). Errors that meterwax raises on purpose are printed as one
line naming the bad value, with exit code 2; a failed check (``reconcile``) exits 1.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Any

import click
from deltalake.exceptions import DeltaError

from meterwax import __version__
from meterwax.cli import secrets
from meterwax.cli.commands.bench import bench
from meterwax.cli.commands.corrections import corrections
from meterwax.cli.commands.demo import demo
from meterwax.cli.commands.heartbeat import heartbeat
from meterwax.cli.commands.maintain import maintain
from meterwax.cli.commands.meters import meters
from meterwax.cli.commands.produce import produce
from meterwax.cli.commands.reconcile import reconcile_command
from meterwax.cli.commands.replay import replay_command
from meterwax.cli.commands.run import run
from meterwax.cli.commands.topics import topics
from meterwax.cli.commands.usage import usage
from meterwax.cli.commands.void import void
from meterwax.cli.options import CONTEXT
from meterwax.errors import LakeRulesError, MeterwaxError
from meterwax.sinks.commit_check import UnsafeStoreError


class _Group(click.Group):
    """Turns deliberate errors into one clear line and exit code 2, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MeterwaxError as error:
            click.echo(secrets.redact(f"error: {error}{_hint(error)}"), err=True)
            sys.exit(2)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as error:
            storage = _storage_failure(error)
            if storage is not None:
                # The lake's store failed (unreachable, refused, an option delta-rs rejects):
                # what it said, in one line; the run can be started again once it is fixed.
                text = " ".join(str(storage).split())
                click.echo(secrets.redact(f"error: the lake's storage failed: {text}"), err=True)
                sys.exit(1)
            if not secrets.any_known():
                raise
            # A failure below, with storage secrets about: the traceback, without them.
            click.echo(secrets.redact(traceback.format_exc()).rstrip(), err=True)
            sys.exit(1)


def _storage_failure(error: BaseException) -> BaseException | None:
    """The delta-rs or object-store error behind ``error`` (Bytewax wraps a flow's), if any."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (DeltaError, OSError)):
            return current
        current = current.__cause__ or current.__context__
    return None


def _hint(error: MeterwaxError) -> str:
    """What to do about a typed error from below the command line, in terms of its flags."""
    if isinstance(error, UnsafeStoreError):
        return (
            f". Point --lake (and --storage-option {error.setting}=..., or "
            "METERWAX_STORAGE_OPTIONS) at a store with conditional writes"
        )
    if isinstance(error, LakeRulesError):
        flags = " ".join(
            "--" + name.removesuffix("_us").replace("_", "-") for name in error.differences
        )
        return f". Leave out {flags} (a run uses the lake's rules), or use a new lake"
    return ""


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="meterwax")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """Billing-grade usage metering: Kafka → Bytewax → Delta Lake, exactly once.

    Every valid event is counted exactly once, in the window of its event time, and every
    number can be explained from the ledger (the `events` table).
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(
        level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s"
    )
    secrets.install_log_filter()
    # botocore's debug log prints request headers, a session token from an AWS profile among
    # them (a value meterwax never sees, so cannot mask): never below INFO.
    for noisy in ("botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(max(level, logging.INFO))


for command in (run, demo, usage, meters, void, corrections, reconcile_command, maintain):
    main.add_command(command)
for command in (produce, heartbeat, topics, replay_command):  # Kafka
    main.add_command(command)
main.add_command(bench)


def entry() -> None:
    """Console-script entry point: run the command, then exit without interpreter teardown.

    delta-rs and Arrow keep native thread pools; tearing them down during interpreter exit
    intermittently aborts the process ("terminate called without an active exception",
    exit 134) after all work is done and committed (delta-rs #2184). Leaving with ``os._exit``
    once output is flushed keeps exit codes truthful.
    """
    try:
        main()
        code = 0
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            code = exit_.code or 0
        else:
            click.echo(exit_.code, err=True)
            code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
