"""The Bytewax dataflows and the command line that starts them.

- ``metering``: the main flow (source → partition processors → lake).
- ``file_source``: JSON Lines files as an ordered source.
- ``config``: settings from flags, ``METERWAX_*`` variables and defaults.
- ``generator``: synthetic usage streams (demo, load generator, tests, benchmark).
- ``cli``: the ``meterwax`` command.
"""
