"""Where kit keeps what it can rebuild: converted models, the plugin scan."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$KIT_CACHE_DIR, else ~/.cache/kit."""
    return Path(os.environ.get("KIT_CACHE_DIR") or Path.home() / ".cache" / "kit")
