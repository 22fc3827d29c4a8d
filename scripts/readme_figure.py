"""Draw docs/images/library_range_test.png: the README's library listing, run as written, and
the figure its `result.plot()` returns.

    python scripts/readme_figure.py
"""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = REPO / "docs" / "images" / "library_range_test.png"


def main() -> None:
    listing = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)[0]
    namespace: dict = {}
    exec(compile(listing, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    namespace["figure"].savefig(TARGET, dpi=100, metadata={"Software": None})
    print(TARGET)


if __name__ == "__main__":
    main()
