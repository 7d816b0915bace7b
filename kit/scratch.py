"""Temporary names beside a destination: how every file kit writes appears whole or not at all.

A file or folder is written under `.NAME.kit-writing-PID` beside its destination and renamed onto it when
complete. The process id in the name keeps concurrent writers apart: two `kit tune` workers sharing one
study write the same report files, and each renames only its own complete copy (the last rename wins, and
every reader sees a whole file). It also lets the next writer remove what a killed process left behind.

Example:
    >>> with written_atomically(folder / "summary.md") as scratch:
    ...     scratch.write_text(text)
"""

from __future__ import annotations

import glob
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

WRITING = ".kit-writing-"  # a file being written: .<name>.kit-writing-<pid>, renamed when complete


def scratch_beside(destination: Path, marker: str = WRITING) -> Path:
    """This process's temporary name for `destination` (emptied); what dead processes left there is removed."""
    prefix = f".{destination.name}{marker}"
    remove_abandoned(destination.parent, prefix)
    scratch = destination.parent / f"{prefix}{os.getpid()}"
    remove(scratch)  # an earlier leftover of this process id, or something planted there, is never followed
    return scratch


@contextmanager
def written_atomically(destination: Path) -> Iterator[Path]:
    """A temporary path beside `destination` for the block to write (a file or a folder), then renamed onto it.

    If the block fails or is interrupted, the temporary path is removed and `destination` is left as it was.
    """
    scratch = scratch_beside(destination)
    try:
        yield scratch
        os.replace(scratch, destination)
    finally:
        remove(scratch)  # gone after the rename; after a failure, no half-written file stays behind


def remove(path: Path) -> None:
    """Remove a file, link or folder if there is one (a link is removed, never followed)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_abandoned(parent: Path, prefix: str) -> None:
    """Remove what a killed kit process left half-written in `parent` (`prefix` + the dead process's id)."""
    for scratch in parent.glob(f"{glob.escape(prefix)}*"):
        pid = scratch.name[len(prefix) :]
        if not pid.isdigit() or _process_alive(int(pid)) or scratch.is_symlink():
            continue
        remove(scratch)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
