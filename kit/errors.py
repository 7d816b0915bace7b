"""Errors a user can act on.

Every mistake a user can make (a bad config key, a missing file, a malformed
row, an unknown task, a broken plugin) is raised as a `KitError` subclass whose
message says what was wrong, where, and what to do. The CLI prints the message
and exits with `exit_code`; it never shows a traceback for these.
"""

from __future__ import annotations


class KitError(Exception):
    """Base class for mistakes a user can fix. The message is shown as is."""

    exit_code = 1


class ConfigError(KitError):
    """A `kit.yaml` file or a `--set` override is wrong."""


class DataError(KitError):
    """A data source is missing, unreadable or holds malformed rows."""


class PluginError(KitError):
    """A plugin failed to load, or registered something that clashes."""


class RunDirError(KitError):
    """A run directory cannot be used (complete, foreign, not writable...)."""


class ModelError(KitError):
    """A model or backbone cannot be built, loaded or exported."""


class TrainingError(KitError):
    """Training stopped for a reason the user must address (e.g. NaN loss)."""


class Interrupted(KitError):
    """Training was stopped by SIGINT or SIGTERM after saving its state (exit status 130, like Ctrl-C)."""

    exit_code = 130


class UsageError(KitError):
    """The command line itself is wrong (exit status 2, like click)."""

    exit_code = 2
