"""Where `kit predict` and `kit export` may write, and writing there without ever leaving half a file.

An output is written under a temporary name beside its destination and renamed
when complete, so an interrupted or failed command leaves the destination as it
was. Destinations that would overwrite the command's own input, land inside a
run directory (anything below a folder holding `run.json`, where kit keeps what
training saved), or are not a plain file or folder, are refused before any work.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from kit.errors import KitError, UsageError
from kit.rundir import RunDir
from kit.scratch import remove_abandoned, scratch_beside


class OutputError(KitError):
    """An output path cannot be used: it would overwrite an input or a run's file, or its folder is missing.

    Exit status 1, like a `--run-dir` that cannot be used (a wrong format is a `UsageError`, 2).
    """


RUN_FILE = RunDir.RECORD  # what marks a run directory
PREDICTION_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
EXPORT_TMP = ".kit-export-"  # an export being written: .<name>.kit-export-<pid>


def shown(path: Path | str) -> str:
    """A path as messages show it: quoted when it holds line breaks or other control characters."""
    text = str(path)
    return repr(text) if any(ord(c) < 32 or ord(c) == 127 for c in text) else text


def enclosing_run(path: Path) -> Path | None:
    """The run directory `path` is in or is (a folder with run.json, walking up), or None."""
    for folder in [path, *path.parents]:
        if (folder / RUN_FILE).is_file():
            return folder
    return None


def _absolute(path: Path) -> Path:
    """`path` with its folder's symlinks resolved but the last part kept (it may be a link we replace)."""
    path = Path(os.path.abspath(path))
    return path.parent.resolve() / path.name


def _is_inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


# ------------------------------------------------------------------ predictions


def prediction_format(output: Path) -> str:
    """The format the file name asks for ("csv" or "jsonl"); a UsageError for any other suffix."""
    fmt = PREDICTION_SUFFIXES.get(output.suffix.lower())
    if fmt is None:
        raise UsageError(
            f"-o {shown(output)}: kit writes predictions as CSV (.csv) or JSON lines (.jsonl); "
            f"'{output.suffix or 'no suffix'}' is neither. Name the file predictions.csv or predictions.jsonl."
        )
    return fmt


def check_prediction_output(output: Path, inputs: list[Path]) -> Path:
    """Refuse an `-o` that is not a new or replaceable file, or that would overwrite an input or a run's file.

    Returns the absolute destination. Checked before the model is loaded, so a
    mistake costs nothing and changes nothing.
    """
    target = _absolute(output)
    if target.is_dir():
        raise OutputError(
            f"-o {shown(output)} is a folder. Give a file name, e.g. -o {shown(output / 'predictions.csv')}."
        )
    prediction_format(output)
    _check_folder_exists(target.parent, output)
    _check_not_an_input(target, inputs, output)
    run = enclosing_run(target.parent)
    if run is not None:
        raise OutputError(
            f"-o {shown(output)} is inside the run directory {shown(run)}; kit never writes into a run's files. "
            f"Write the predictions elsewhere, e.g. -o predictions.csv."
        )
    if target.exists() or target.is_symlink():
        _check_replaceable(target, output)
    return target


def _check_folder_exists(folder: Path, output: Path) -> None:
    if not folder.exists():
        raise OutputError(
            f"-o {shown(output)}: the folder {shown(output.parent)} does not exist. Create it first (mkdir -p), "
            f"or write somewhere else."
        )
    if not folder.is_dir():
        raise OutputError(f"-o {shown(output)}: {shown(output.parent)} is a file, not a folder. Choose another path.")


def _check_not_an_input(target: Path, inputs: list[Path], output: Path) -> None:
    for source in inputs:
        if not source.exists():
            continue
        real = source.resolve()
        same = target.exists() and os.path.samefile(target, source)
        if same or target.resolve() == real or (real.is_dir() and _is_inside(target.resolve(), real)):
            raise OutputError(
                f"-o {shown(output)} would overwrite the input {shown(source)}"
                f"{' (it is inside that folder)' if real.is_dir() and not same else ''}; kit reads the input while "
                f"it writes. Write the predictions to another file."
            )


def _check_replaceable(target: Path, output: Path) -> None:
    """An existing `-o` may be replaced only when it is an earlier predictions file (or empty)."""
    if target.is_symlink() or not stat.S_ISREG(target.stat().st_mode):
        raise OutputError(
            f"-o {shown(output)} is not a plain file (a link, device or pipe). Give the name of a new file, "
            f"or leave -o out to print the predictions."
        )
    if not _looks_like_predictions(target):
        raise OutputError(
            f"-o {shown(output)} already exists and is not a predictions file kit wrote; kit will not overwrite it. "
            f"Choose another name, or move the file away first."
        )


def _looks_like_predictions(path: Path) -> bool:
    """Empty, or first line is a predictions header ("line,...") or JSON object with a "line" key."""
    with open(path, "rb") as handle:
        first = handle.readline(65536).decode("utf-8", "replace").strip()
    if not first:
        return True
    if first == "line" or first.startswith("line,"):
        return True
    try:
        row = json.loads(first)
    except ValueError:
        return False
    return isinstance(row, dict) and "line" in row


@contextmanager
def replaced_when_complete(destination: Path) -> Iterator[IO[str]]:
    """A text handle on a temporary file beside `destination`, renamed onto it when the block succeeds.

    If the block fails or is interrupted, the temporary file is removed and
    `destination` is left as it was.
    """
    scratch = scratch_beside(destination)
    try:
        handle = _create(scratch)
    except OSError as exc:  # a read-only or full disk: name the file the user asked for, not our temporary one
        raise OSError(exc.errno, exc.strerror, str(destination)) from None
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(scratch, destination)
    except BaseException as exc:
        scratch.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename in (None, str(scratch)):
            raise OSError(exc.errno, exc.strerror, str(destination)) from None
        raise


def _create(path: Path) -> IO[str]:
    """A new text file at `path` with the usual mode; whatever was there (a leftover, a planted link) is not followed."""
    path.unlink(missing_ok=True)
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "w", encoding="utf-8", newline="")


# ------------------------------------------------------------------ export


def check_export_destination(destination: Path, run_dir: Path) -> Path:
    """Refuse an export folder that exists with content, is a file, or lies among a run's own files.

    Inside a run directory only its `export/` folder may receive exports (the
    default is RUN_DIR/export/FORMAT). Returns the absolute destination.
    """
    target = _absolute(destination)
    if target.exists() or target.is_symlink():
        _check_empty_folder(target, destination, run_dir)
    elif not target.parent.is_dir() and target.parent != run_dir.resolve() / "export":
        raise OutputError(
            f"--output {shown(destination)}: the folder {shown(destination.parent)} does not exist. "
            f"Create it first (mkdir -p), or export somewhere else."
        )
    run = enclosing_run(target)
    if run is not None and not _is_inside(target, run / "export"):
        where = "the run directory itself" if target == run else f"inside the run directory {shown(run)}"
        raise OutputError(
            f"--output {shown(destination)} is {where}; kit keeps a run's files as training wrote them. "
            f"Export to a new folder elsewhere, or leave --output out (default: RUN_DIR/export/FORMAT)."
        )
    return target


def _check_empty_folder(target: Path, destination: Path, run_dir: Path) -> None:
    if target.resolve() == run_dir.resolve():
        raise OutputError(
            f"--output {shown(destination)} is the run directory itself; kit never writes over a run. "
            f"Export to a new folder, or leave --output out (default: RUN_DIR/export/FORMAT)."
        )
    if target.is_symlink() or not target.is_dir():
        raise OutputError(
            f"--output {shown(destination)} exists and is not a folder; kit exports into a new folder. "
            f"Choose a name that does not exist yet."
        )
    if any(target.iterdir()):
        raise OutputError(
            f"--output {shown(destination)} already exists and is not empty; kit will not overwrite it. "
            f"Choose a new folder name, or move the old export away first."
        )


@contextmanager
def folder_replaced_when_complete(destination: Path) -> Iterator[Path]:
    """A temporary folder beside `destination`, renamed onto it when the block succeeds; removed if it fails.

    Temporary folders left by a killed export (their process is gone) are removed first.
    """
    parent = destination.parent
    remove_abandoned(parent, f".{destination.name}{EXPORT_TMP}")
    scratch = parent / f".{destination.name}{EXPORT_TMP}{os.getpid()}"
    if scratch.is_symlink():
        scratch.unlink()
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()  # fails rather than follow anything planted there since
    try:
        yield scratch
        _move_into_place(scratch, destination)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def _move_into_place(scratch: Path, destination: Path) -> None:
    try:
        if destination.is_dir():
            destination.rmdir()  # checked empty before the export started
        scratch.rename(destination)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EBUSY):
            raise
        raise OutputError(
            f"{shown(destination)} was filled while kit exported (another export at the same time?); kit will not "
            f"overwrite it. Nothing was written: run the export again with another --output."
        ) from None
