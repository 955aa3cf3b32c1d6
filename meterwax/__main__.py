"""``python -m meterwax`` is the same as the ``meterwax`` command."""

from meterwax.cli.main import entry

entry()
