"""``python -m meterwax`` is the same as the ``meterwax`` command."""

from meterwax.flows.cli import entry

entry()
