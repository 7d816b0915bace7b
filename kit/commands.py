"""Helpers for `kit` commands, built-in or added by plugins through `register_commands`. Public API.

Example, a plugin's command::

    import click
    import kit
    from kit.commands import handle_errors, quiet_tensorflow

    @click.command()
    @click.argument("run_dir")
    @handle_errors
    def summarise(run_dir):
        "Summarise a trained run."
        quiet_tensorflow()
        from kit.inference import TrainedModel
        click.echo(TrainedModel(run_dir).model.summary())

    @kit.hookimpl
    def register_commands(cli):
        cli.add_command(summarise)
"""

from __future__ import annotations

import errno
import functools
import gc
import os
import sys
from typing import Any, Callable

import click

from kit.errors import KitError


def quiet_tensorflow() -> None:
    """Import TensorFlow and Keras without their start-up log lines (CUDA probing, oneDNN notices).

    Its C++ logging ignores some environment settings, so the import runs with
    file descriptor 2 pointed at a temporary file, which is replayed if the
    import fails. KIT_TF_LOGS=1 shows everything. Keras is imported without its
    scikit-learn and pandas integrations unless KIT_KERAS_EXTRAS=1 (see
    `_KERAS_EXTRAS`).
    """
    if os.environ.get("KIT_TF_LOGS"):
        _import_frameworks()
        return
    # Level 3 also hides C++ "errors" such as tensorflow-text's op-definition
    # notices; real failures still surface as Python exceptions.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        _import_frameworks()  # imported already: only kit's fixes to them
        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            _import_frameworks()
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


# Keras imports these whenever they are installed (mlflow and many data-science environments install both):
# scikit-learn for `keras.wrappers`' estimators, pandas to slice DataFrames given to `fit`. kit's commands use
# neither, and together they cost 2.0-2.4 s and 120 MB of every command's start-up
# (`benchmarks/framework_import.py`). Keras is imported as if they were absent: both stay importable
# afterwards, and a DataFrame still reaches Keras, through NumPy. What is lost in a kit command's process is
# `keras.wrappers`' scikit-learn estimators (they say scikit-learn is not installed); KIT_KERAS_EXTRAS=1
# imports Keras with both.
_KERAS_EXTRAS = {"sklearn": "scikit-learn", "pandas": "pandas"}


def _import_frameworks() -> None:
    """Import TensorFlow and Keras (with `_KERAS_EXTRAS` hidden) unless a process did already, freeze what they
    built out of the garbage collector, and apply kit's fix to Keras's saving (`kit.compat`) in any case."""
    from kit.compat import fix_keras_saving

    if "tensorflow" not in sys.modules:
        _import_tensorflow_and_keras()
        # What the imports built (modules, classes, functions: alive until the process ends) is kept out
        # of the garbage collector's full passes from now on: a MiniLM run's took 0.78 s in all, 0.55 s after.
        gc.freeze()
    fix_keras_saving()  # after the freeze: the objects its check builds can be collected


def _import_tensorflow_and_keras() -> None:
    keep_extras = os.environ.get("KIT_KERAS_EXTRAS") == "1"
    hidden = [] if keep_extras else [name for name in _KERAS_EXTRAS if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # the import system's own "not found" marker: `import` raises ImportError
    try:
        import tensorflow

        tensorflow.config.list_physical_devices()  # device probing logs too
        import keras  # noqa: F401 - every command that imports TensorFlow uses Keras
    except ImportError as exc:
        if exc.name not in hidden:
            raise
        raise KitError(
            f"Something imported while TensorFlow loaded needs {_KERAS_EXTRAS[exc.name]} ({exc}). kit imports "
            f"Keras without scikit-learn and pandas to start faster; set KIT_KERAS_EXTRAS=1 to import them."
        ) from exc
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Show a `KitError` as a one-line message with its exit status, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except KitError as exc:
            if exc.exit_code == 2:
                raise click.UsageError(str(exc)) from None
            if exc.exit_code != 1:
                click.echo(f"Error: {exc}", err=True)
                sys.exit(exc.exit_code)
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo(f"\nkit: interrupted{_after_interrupt()}", err=True)
            sys.exit(130)
        except OSError as exc:
            message = _storage_problem(exc)
            if message is None:
                raise
            raise click.ClickException(message) from None

    return wrapper


def _after_interrupt() -> str:
    """What an interrupted command leaves: training resumes; outputs are written whole or not at all."""
    command = getattr(click.get_current_context(silent=True), "info_name", None)
    if command == "run":
        return "; run the same command again to resume."
    if command in ("predict", "export"):
        return "; no partial output was saved."
    return "."


def _storage_problem(exc: OSError) -> str | None:
    """A message for a full, read-only or forbidden disk; None for other OS errors (real bugs)."""
    where = f" writing {exc.filename}" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"The disk is full{where}. Free some space and run the same command again: what was saved before "
            f"(a run's training state in backup/, earlier runs) is kept, and `kit run` resumes from it."
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"Permission denied{where} ({exc.strerror}). Make the folder writable or choose another one."
    return None
