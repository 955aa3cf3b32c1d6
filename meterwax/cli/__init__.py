"""The ``meterwax`` command line: commands, settings, rendering, progress and stop handling.

It is the only place that knows flags, ``METERWAX_*`` variables and exit codes; everything
below it raises typed errors (``meterwax.errors``) that the commands phrase for the operator.

- ``main``: the ``meterwax`` group and its console-script entry point.
- ``config``: settings from flags, then ``METERWAX_*`` variables, then defaults.
- ``options``: click options shared by several commands.
- ``arguments``: turning option text (times, offsets, versions) into values.
- ``render``, ``summary``, ``progress``: what the commands print.
- ``stopping``: SIGTERM and Ctrl-C as a recorded, clean stop.
- ``commands``: one module per verb.
"""
