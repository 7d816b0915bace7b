"""Temporary names beside a destination: how every file kit writes appears whole or not at all.

A file is written under `.NAME.kit-writing-PID.HOST.RANDOM` beside its destination and renamed onto it when
complete. The name is new for every write, so concurrent writers never share one: two `kit tune` workers,
on one machine or several sharing a folder, write the same report files, and each renames only its own
complete copy (the last rename wins; every reader sees a whole file). The process id and a short hash of
the host name let the next writer on the same machine remove what a killed process left behind; names
from other machines are left alone, as their processes cannot be checked from here.

Example:
    >>> with written_atomically(folder / "summary.md") as scratch:
    ...     scratch.write_text(text)
"""

from __future__ import annotations

import glob
import hashlib
import os
import secrets
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

WRITING = ".kit-writing-"  # a file being written: .<name>.kit-writing-<pid>.<host>.<random>, renamed when complete
HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def scratch_beside(destination: Path, marker: str = WRITING) -> Path:
    """A new temporary name for `destination`, unique to this write; what dead processes left there is removed."""
    prefix = f".{destination.name}{marker}"
    remove_abandoned(destination.parent, prefix)
    return destination.parent / f"{prefix}{os.getpid()}.{HOST}.{secrets.token_hex(4)}"


@contextmanager
def written_atomically(destination: Path) -> Iterator[Path]:
    """A temporary file name beside `destination` for the block to write, then renamed onto it.

    If the block fails or is interrupted, the temporary file is removed and `destination` is left as it was.
    Errors name `destination`, never the temporary name. For files only: a folder is not renamed onto an
    existing one.
    """
    scratch = scratch_beside(destination)
    try:
        yield scratch
        os.replace(scratch, destination)
    except OSError as exc:
        if exc.filename == str(scratch):  # a full or read-only disk: name the file the user knows
            raise OSError(exc.errno, exc.strerror, str(destination)) from exc
        raise
    finally:
        remove(scratch)  # gone after the rename; after a failure, no half-written file stays behind


def remove(path: Path) -> None:
    """Remove a file, link or folder if there is one (a link is removed, never followed)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_abandoned(parent: Path, prefix: str) -> None:
    """Remove what a killed kit process on this machine left half-written in `parent` (`prefix` + its id).

    A leftover that cannot be removed (another user's, in a shared folder) is left: it never fails a write.
    """
    for scratch in parent.glob(f"{glob.escape(prefix)}*"):
        pid, _, rest = scratch.name[len(prefix) :].partition(".")
        host = rest.partition(".")[0]
        if not pid.isdigit() or (rest and host != HOST) or scratch.is_symlink():
            continue
        try:
            if not _process_alive(int(pid)):
                remove(scratch)
        except (OSError, OverflowError):
            continue


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
