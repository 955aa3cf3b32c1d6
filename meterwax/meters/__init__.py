"""The meter catalog as an operator handles it: read a catalog file, apply it to a lake.

- ``documents``: a YAML (or JSON) file → meter definitions, meterwax's or OpenMeter's form.
- ``apply``: what a new version changes (per meter, per window), and publishing it with the
  affected windows recomputed from the ledger through the one audited correction sequence.
"""
