"""Where kit keeps what it can rebuild: converted models, the plugin scan, measured answers about this machine."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    """$KIT_CACHE_DIR, else ~/.cache/kit."""
    return Path(os.environ.get("KIT_CACHE_DIR") or Path.home() / ".cache" / "kit")


def read_json(name: str) -> Any:
    """What kit kept in its cache file `name`, or None when nothing readable is there (kit works it out again)."""
    try:
        return json.loads((cache_dir() / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_json(name: str, content: Any) -> None:
    """Keep `content` in the cache file `name`: written to a temporary name and renamed, so a reader never sees
    half a file and a symlink there is replaced, not followed. A cache that cannot be written is skipped."""
    path = cache_dir() / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, scratch = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(content, out)
            os.replace(scratch, path)
        finally:
            if os.path.exists(scratch):
                os.unlink(scratch)
    except OSError:
        pass
