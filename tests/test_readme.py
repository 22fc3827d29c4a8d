"""The README's library example runs as written."""

import re

from conftest import REPO


def test_readme_python_example_runs():
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "the README lost its library example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["base_lr"] < namespace["max_lr"]
    assert namespace["optimizer"].param_groups[0]["lr"] == namespace["schedule"].lr(0)
