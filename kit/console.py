"""Progress messages for people."""

from __future__ import annotations

import sys


def say(message: str) -> None:
    """Progress messages go to stderr so stdout stays machine-readable."""
    print(message, file=sys.stderr, flush=True)
