"""Choosing the run directory a `kit run` writes: a new one, the unfinished one to resume, or a refusal.

The layout inside is `kit.rundir.RunDir`'s. Its `.lock` is locked (flock) by
the `kit run` writing the folder; the OS drops it when that process ends.

Two `kit run` on one project never share a folder: a new run's number is
taken by creating its folder (an atomic `mkdir`; whoever loses tries the
next number), and a run is resumed only by the process that holds its lock.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit.console import say
from kit.errors import KitError, RunDirError
from kit.rundir import RunDir, write_json_atomic

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not protected from each other there
    fcntl = None  # type: ignore[assignment]

RUN_FILE, CONFIG_COPY, LOCK_FILE, BACKUP = RunDir.RECORD, RunDir.CONFIG, RunDir.LOCK, RunDir.BACKUP


def read_run(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def write_run(run_dir: Path, record: dict[str, Any]) -> None:
    write_json_atomic(Path(run_dir) / RUN_FILE, record)


def _saved_config(run_dir: Path) -> dict[str, Any] | None:
    """The run's resolved config, or None when it is missing or damaged (not a mapping, not YAML)."""
    from kit.config import parse_yaml  # bounded: a run folder's config.yaml may be hostile (alias bombs)

    path = run_dir / CONFIG_COPY
    if not path.is_file():
        return None
    try:
        saved, _ = parse_yaml(path.read_text(encoding="utf-8"), path)
    except (OSError, UnicodeDecodeError, KitError):
        return None
    return saved if isinstance(saved, dict) else None


def _differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(a) | set(b)):
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            keys += _differences(left, right, f"{prefix}{key}.")
        elif left != right:
            keys.append(f"{prefix}{key}")
    return keys


class RunLock:
    """An OS lock on a run folder, held by the one `kit run` that writes it.

    `fcntl.flock` on the folder's `.lock` file: the OS releases it when the
    process ends, however it ends (`kill -9` included), so a lock never
    outlives its run. The file holds the holder's pid and host, for messages.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._handle: int | None = None

    def acquire(self) -> bool:
        """Take the lock if no other process holds it; True when taken."""
        handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(handle)
                return False
            except OSError:  # a file system without locks: carry on unprotected rather than refuse to train
                pass
        os.ftruncate(handle, 0)
        os.write(handle, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._handle = handle
        return True

    def holder(self) -> str:
        """Who holds the lock, as "pid N on HOST" (as well as the lock file says)."""
        try:
            pid, _, host = self.path.read_text(encoding="utf-8").strip().partition(" ")
        except OSError:
            return "pid unknown"
        if not pid:
            return "pid unknown"
        return f"pid {pid}" + (f" on {host}" if host and host != socket.gethostname() else "")

    def still_held(self) -> bool:
        """Whether the lock file is still the one locked: False once the run folder was deleted or replaced."""
        if self._handle is None:
            return False
        try:
            now, held = os.stat(self.path), os.fstat(self._handle)
        except OSError:
            return False
        return (now.st_ino, now.st_dev) == (held.st_ino, held.st_dev)

    def release(self) -> None:
        if self._handle is not None:
            os.close(self._handle)  # closing drops the flock
            self._handle = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def run_in_progress(run_dir: Path) -> str | None:
    """Who is writing `run_dir` right now ("pid N"), or None when no `kit run` holds it."""
    lock = RunLock(run_dir)
    if fcntl is None or not lock.path.is_file():
        return None
    try:
        with open(lock.path, "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return lock.holder()
    except OSError:
        return None
    return None


@dataclass
class ChosenRun:
    """The run directory a `kit run` writes, whether it resumes one, and the lock it holds on it."""

    path: Path
    resumed: bool
    lock: RunLock


def choose_run_dir(
    resolved: dict[str, Any], runs_root: Path, requested: Path | None, data: dict[str, str] | None = None
) -> ChosenRun:
    """Pick and lock the run directory: resume an unfinished run of the same config and data, else a new one.

    `data` is the data fingerprint (split -> hash); a run on other data is not resumed.

    Raises:
        RunDirError: when `requested` holds a complete run, a run of another
            config, task or data, a run another `kit run` is writing,
            something that is not a run, or is not writable.
    """
    if requested is not None:
        return _check_requested(Path(requested), resolved, data)
    latest = _latest_run(runs_root)
    if latest is not None:
        resumed = _resume_latest(latest, resolved, data)
        if resumed is not None:
            return resumed
    return _new_run(runs_root)


def _latest_run(runs_root: Path) -> Path | None:
    try:
        runs = [p for p in runs_root.glob("run-*") if re.fullmatch(r"run-\d+", p.name) and p.is_dir()]
    except OSError:
        return None
    return max(runs, key=lambda p: int(p.name.split("-")[1]), default=None)


def _resume_latest(latest: Path, resolved: dict[str, Any], data: dict[str, str] | None) -> ChosenRun | None:
    """Lock and resume the latest run when it is unfinished, of this config and data; else say why not."""
    record = read_run(latest)
    if record is None:
        return None
    if record.get("status") == "complete":
        shutil.rmtree(latest / BACKUP, ignore_errors=True)  # left by a run killed just as it completed
        return None
    saved = _saved_config(latest)
    if saved is None:
        say(f"kit: {latest.name} is unfinished but its {CONFIG_COPY} is missing or damaged; starting a new run.")
        return None
    changed = _differences(saved, resolved)
    if changed:
        say(
            f"kit: {latest.name} is unfinished but was started with another config (changed: "
            f"{', '.join(changed[:5])}); starting a new run. To finish {latest.name} instead: "
            f"kit run {latest / CONFIG_COPY} --run-dir {latest}"
        )
        return None
    moved = _changed_data(record, data)
    if moved:
        say(f"kit: {latest.name} is unfinished but its data changed since it started ({moved}); starting a new run.")
        return None
    lock = RunLock(latest)
    try:
        taken = lock.acquire()
    except OSError as exc:  # its .lock is a folder, or unwritable
        raise _lock_problem(lock, exc) from None
    if not taken:
        say(f"kit: {latest.name} is being trained by another kit run ({lock.holder()}); starting a new run.")
        return None
    return ChosenRun(_checked_writable(latest), True, lock)


def _changed_data(record: dict[str, Any], data: dict[str, str] | None) -> str:
    """The splits whose data differs from what the run recorded, as "data.train, ..." ("" when none or unknown)."""
    before = (record.get("data") or {}).get("fingerprint") if isinstance(record.get("data"), dict) else None
    if not isinstance(before, dict) or not data:
        return ""
    return ", ".join(
        f"data.{split}" for split in sorted(set(before) | set(data)) if before.get(split) != data.get(split)
    )


def _new_run(runs_root: Path) -> ChosenRun:
    """Create and lock the next `run-N`. Creating the folder claims the number: two processes cannot both get it."""
    _make_folder(runs_root)
    latest = _latest_run(runs_root)
    first = int(latest.name.split("-")[1]) + 1 if latest is not None else 1
    for number in range(first, first + 10_000):
        run_dir = runs_root / f"run-{number}"
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue  # taken (by another kit run a moment ago, or a file of that name)
        except OSError as exc:
            raise _not_writable(run_dir, exc) from None
        lock = RunLock(run_dir)
        try:
            taken = lock.acquire()
        except OSError as exc:
            raise _lock_problem(lock, exc) from None
        if taken:  # else someone's --run-dir took the empty folder first
            return ChosenRun(_checked_writable(run_dir), False, lock)
    raise RunDirError(f"Could not create a new run folder in {runs_root}: every run-N name is taken.")


def _check_requested(run_dir: Path, resolved: dict[str, Any], data: dict[str, str] | None) -> ChosenRun:
    if run_dir.exists() and not run_dir.is_dir():
        what = "a file" if run_dir.is_file() else "a special file (a pipe, a socket or a device)"
        raise RunDirError(
            f"--run-dir {run_dir} is {what}, not a folder. Give a folder (a new one, or an unfinished "
            f"run to resume), e.g. --run-dir runs/run-9."
        )
    if not run_dir.is_dir() or _is_empty(run_dir):
        _make_folder(run_dir)
        return ChosenRun(_checked_writable(run_dir), False, _locked(run_dir))
    record = read_run(run_dir)
    if record is None:
        damaged = " (its run.json is damaged)" if (run_dir / RUN_FILE).exists() else ""
        raise RunDirError(
            f"{run_dir} exists and is not a kit run directory{damaged}; kit will not write into it. "
            f"Choose another --run-dir."
        )
    saved = _saved_config(run_dir)
    if saved is None and record.get("status") != "complete":
        raise RunDirError(
            f"{run_dir} holds an unfinished run whose {CONFIG_COPY} is missing or damaged, so kit cannot tell "
            f"whether it is this config's run. Choose another --run-dir (none: a new run)."
        )
    if saved is not None and saved.get("task") != resolved.get("task"):
        raise RunDirError(
            f"{run_dir} holds a run of task '{saved.get('task')}', not '{resolved.get('task')}'. Choose another --run-dir."
        )
    if record.get("status") == "complete":
        raise RunDirError(
            f"{run_dir} already holds a complete run; kit never overwrites one. "
            f"Choose another --run-dir, or evaluate it with `kit eval {run_dir}`."
        )
    lock = _locked(run_dir)
    try:
        _check_same_run(run_dir, resolved, data)
    except RunDirError:
        lock.release()
        raise
    return ChosenRun(_checked_writable(run_dir), True, lock)


def _check_same_run(run_dir: Path, resolved: dict[str, Any], data: dict[str, str] | None) -> None:
    changed = _differences(_saved_config(run_dir) or {}, resolved)
    if changed:
        raise RunDirError(
            f"{run_dir} holds an unfinished run of a different config (changed: {', '.join(changed[:5])}). "
            f"Resume it with its own config (`kit run {run_dir / CONFIG_COPY} --run-dir {run_dir}`) or choose another --run-dir."
        )
    moved = _changed_data(read_run(run_dir) or {}, data)
    if moved:
        raise RunDirError(
            f"{run_dir} holds an unfinished run whose data changed since it started ({moved}): resuming would "
            f"mix the two. Put the data back as it was, or choose another --run-dir (none: a new run)."
        )


def _locked(run_dir: Path) -> RunLock:
    lock = RunLock(run_dir)
    try:
        taken = lock.acquire()
    except OSError as exc:
        raise _lock_problem(lock, exc) from None
    if not taken:
        raise RunDirError(
            f"{run_dir} is being written by another kit run ({lock.holder()}). Wait for it to finish (or stop it), "
            f"or choose another --run-dir."
        )
    return lock


def _lock_problem(lock: RunLock, exc: OSError) -> RunDirError:
    return RunDirError(
        f"Cannot lock the run folder {lock.run_dir}: {lock.path} {exc.strerror or exc}. kit creates that file to "
        f"keep two runs out of one folder; remove whatever is there in its place (or make the folder writable)."
    )


def _is_empty(run_dir: Path) -> bool:
    """Empty, or holding only the lock of a run that never got further (killed as it started)."""
    try:
        return all(p.name == LOCK_FILE for p in run_dir.iterdir())
    except OSError as exc:
        raise _not_writable(run_dir, exc) from None


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _not_writable(folder, exc) from None


def _checked_writable(run_dir: Path) -> Path:
    try:
        probe = run_dir / ".kit-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise _not_writable(run_dir, exc) from None
    return run_dir


def _not_writable(run_dir: Path, exc: OSError) -> RunDirError:
    return RunDirError(
        f"Cannot write to run directory {run_dir}: {exc.strerror or exc}. Choose a writable --run-dir "
        f"(or runs_dir in kit.yaml)."
    )


def require_run_dir(run_dir: Path) -> dict[str, Any]:
    """The run record of a finished run, or a RunDirError saying what is wrong."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"No run directory at {run_dir}. Pass a folder written by `kit run` (e.g. runs/run-1).")
    record = read_run(run_dir)
    if record is None:
        raise RunDirError(f"{run_dir} is not a kit run directory (no {RUN_FILE}).")
    if not RunDir(run_dir).bundle_file.is_file():
        raise RunDirError(
            f"{run_dir} has no trained model yet (status: {record.get('status')}). Finish it with `kit run` first."
        )
    return record
