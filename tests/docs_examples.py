"""Running a documented example as written: the first Python block under a heading of a docs page."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[1] / "docs"


def run_example(heading: str, namespace: dict[str, Any] | None = None, page: str = "hooks.md") -> dict[str, Any]:
    """Execute the first ```python block after `heading` in docs/`page` in `namespace`; return the namespace."""
    section = (DOCS / page).read_text(encoding="utf-8").split(heading)[1]
    example = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    namespace = {} if namespace is None else namespace
    exec(compile(example, f"docs/{page}", "exec"), namespace)
    return namespace
