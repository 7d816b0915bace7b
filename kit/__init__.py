"""kit: a Keras 3 / TensorFlow training kit with plugin task types.

The public API for plugin authors. Importing `kit` does not import TensorFlow.

Example::

    import kit

    @kit.hookimpl
    def register_tasks(register):
        register(MyTask)
"""

import time

STARTED = time.perf_counter()  # when kit's code first ran in this process: a run's start-up is counted from here

from kit.backbone import Backbone, Built, InputKind  # noqa: E402
from kit.errors import (  # noqa: E402
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
from kit.hookspecs import hookimpl  # noqa: E402
from kit.task import Task  # noqa: E402

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
