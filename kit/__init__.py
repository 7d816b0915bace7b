"""kit: a Keras 3 / TensorFlow training kit with plugin task types.

The public API for plugin authors. Importing `kit` does not import TensorFlow.

Example::

    import kit

    @kit.hookimpl
    def register_tasks(register):
        register(MyTask)
"""

from kit.backbone import Backbone, Built, InputKind
from kit.errors import (
    ConfigError,
    DataError,
    Interrupted,
    KitError,
    ModelError,
    PluginError,
    RunDirError,
    TrainingError,
    UsageError,
)
from kit.hookspecs import hookimpl
from kit.task import Task

__version__ = "0.1.0"

__all__ = [
    "Backbone",
    "Built",
    "ConfigError",
    "DataError",
    "InputKind",
    "Interrupted",
    "KitError",
    "ModelError",
    "PluginError",
    "RunDirError",
    "Task",
    "TrainingError",
    "UsageError",
    "__version__",
    "hookimpl",
]
