"""Reading a catalog file: YAML (JSON is YAML too), in meterwax's form or OpenMeter's."""

from __future__ import annotations

from pathlib import Path

import yaml

from meterwax.operators.catalog import CatalogError, MeterDefinition, parse_catalog

MAX_CATALOG_BYTES = 4 * 1024 * 1024
"""A catalog is a few meters; a file larger than this is a mistake, not a catalog."""


def read_catalog_file(path: Path) -> tuple[list[MeterDefinition], str]:
    """The meters of a catalog file and its form (``meterwax`` or ``openmeter``).

    Raises CatalogError naming the file and what is wrong (a YAML error with its line, or
    every problem of every meter, each naming the meter and the key).
    """
    try:
        size = path.stat().st_size
        if size > MAX_CATALOG_BYTES:
            raise CatalogError([f"{path}: {size:,} bytes is not a meter catalog (limit 4 MiB)"])
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CatalogError([f"{path}: cannot read it: {error}"]) from None
    try:
        document = yaml.safe_load(text)
    except ValueError as error:  # e.g. an integer too long for Python to read
        raise CatalogError([f"{path}: not valid YAML: {str(error)[:200]}"]) from None
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(error, "problem", None) or str(error)
        raise CatalogError([f"{path}: not valid YAML{line}: {problem}"]) from None
    try:
        meters = parse_catalog(document)
    except CatalogError as error:
        raise CatalogError([f"{path}: {problem}" for problem in error.problems]) from None
    entries = document["meters"]
    openmeter = any(isinstance(e, dict) and ("slug" in e or "eventType" in e) for e in entries)
    return meters, "openmeter" if openmeter else "meterwax"


def catalog_yaml(meters: list[MeterDefinition]) -> str:
    """A catalog as meterwax's YAML form (what ``meters show`` prints)."""
    return yaml.safe_dump(
        {"meters": [m.as_dict() for m in sorted(meters, key=lambda m: m.name)]},
        sort_keys=False,
        allow_unicode=True,
    )
