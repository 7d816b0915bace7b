"""Where kit keeps what it can rebuild: converted models, the plugin scan, measured answers about this machine."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    """$KIT_CACHE_DIR, else ~/.cache/kit."""
    return Path(os.environ.get("KIT_CACHE_DIR") or Path.home() / ".cache" / "kit")


def read_json(name: str) -> Any:
    """What kit kept in its cache file `name`, or None when nothing readable is there (kit works it out again)."""
    try:
        return json.loads((cache_dir() / name).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # missing, unreadable, damaged, or nested past Python's limit
        return None


def write_json(name: str, content: Any) -> None:
    """Keep `content` in the cache file `name`, written through a temporary name and renamed
    (`kit.scratch.written_atomically`: a reader never sees half a file, a symlink there is replaced, not
    followed, and what a killed process left half-written is removed by the next write). A cache that
    cannot be written is skipped: kit works the answer out again next time."""
    from kit.scratch import written_atomically

    path = cache_dir() / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with written_atomically(path) as scratch:
            scratch.write_text(json.dumps(content), encoding="utf-8")
    except OSError:
        pass
