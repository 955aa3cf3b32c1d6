"""The README's example of running meterwax's operators on ``bytewax.testing`` inputs."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_example_of_testing_with_bytewax_inputs_runs():
    text = README.read_text()
    section = text[text.index("## Testing your own flows with Bytewax inputs") :]
    [code] = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)[:1]
    # The example's own assertions are the test.
    exec(compile("from collections import Counter\n" + code, "README.md", "exec"), {})
