"""The quix contestant's own virtual environment, ``.venv-quix`` beside ``.venv``.

Quix Streams 3.28.1 (the newest) requires confluent-kafka < 2.13 and pydantic < 2.14, while
meterwax's dependencies resolve to newer ones (2.16 and 2.14 when this was written).
Installing it into ``.venv`` would downgrade the libraries meterwax is tested with, so the
harness builds a second environment holding meterwax (editable, for the contract model and
the Delta writer) plus the ``quix`` extra, and runs the quix contestant with its Python. It is
built once, and again when ``pyproject.toml`` changes.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUIX_VENV = REPO / ".venv-quix"
_STAMP = ".meterwax-stamp"


def _fingerprint() -> str:
    return hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()


def quix_python(*, echo: bool = True) -> Path:
    """The Python of ``.venv-quix``, creating or updating the environment when needed."""
    python = QUIX_VENV / "bin" / "python"
    stamp = QUIX_VENV / _STAMP
    if python.exists() and stamp.exists() and stamp.read_text() == _fingerprint():
        return python
    if echo:
        print(f"bench: installing Quix Streams into {QUIX_VENV} (once)", file=sys.stderr)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(QUIX_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "-e", f"{REPO}[quix]"], check=True
    )
    stamp.write_text(_fingerprint())
    return python


def quix_versions(python: Path) -> dict[str, str]:
    """Versions of what the quix contestant runs on (for the benchmark's JSON)."""
    code = (
        "import json, confluent_kafka, pydantic, quixstreams; print(json.dumps({"
        "'quixstreams': quixstreams.__version__, 'confluent_kafka': confluent_kafka.__version__,"
        " 'librdkafka': confluent_kafka.libversion()[0], 'pydantic': pydantic.VERSION}))"
    )
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout))
