"""Random initial values that loading a model overwrites, not drawn.

Building a Keras model draws every weight's initial value, and loading pretrained or saved weights then
overwrites them all: for MiniLM that is 22.7M truncated-normal values drawn for nothing at every `kit run`,
`kit predict` and `kit eval`, for SmolLM2-135M six times as many.

In a `deferred_random_init()` block, a Keras variable whose initializer is random with a fixed seed (Keras's
random initializers draw their seed when they are made, unless given a `keras.random.SeedGenerator`) starts
filled with NaN instead, and its initializer is kept. Assigning the variable's whole value (as Keras's
`load_weights`, `load_model` and keras-hub's weight converters do) settles it. When the block ends, every
variable nothing assigned gets its initial value then: the same values it would have had, since its
initializer's seed was fixed when the initializer was made. `assign_add` and `assign_sub` draw the initial
value first. NaN, not zeros: code that read a variable's value before it was loaded would be wrong loudly,
and a variable written some other way (through TensorFlow's own `assign`) is told apart and kept.

Only this thread's variables created while executing eagerly are deferred; other threads, and variables
created while tracing a function, are built as usual. Blocks nest (the outermost one settles).

Example:
    >>> with deferred_random_init():
    ...     backbone = keras_hub.models.Backbone.from_preset(folder)  # built, then its weights loaded
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

import keras
import tensorflow as tf
from keras.src.backend import Variable as _VARIABLE_CLASS  # the backend's variable class (TensorFlow's here)

from kit.patches import SharedPatch

_thread = threading.local()  # .pending: {id(variable): (variable, initializer)} of this thread's open block


@contextlib.contextmanager
def deferred_random_init() -> Iterator[None]:
    """While open, this thread's new Keras variables with seeded random initializers wait for their values
    (see the module doc); when the outermost block ends, those not assigned get their initial values."""
    if getattr(_thread, "pending", None) is not None:  # nested: the outer block settles
        yield
        return
    with _VARIABLE_PATCH:
        _thread.pending = {}
        try:
            yield
        finally:
            pending, _thread.pending = _thread.pending, None
            for variable, initializer in pending.values():  # after an exception too: no NaN left behind
                if tf.reduce_all(tf.math.is_nan(variable.value)):  # else written some other way: kept
                    _ORIGINAL_ASSIGN(variable, initializer(variable._shape, dtype=variable._dtype))


def _deferrable(variable: Any, initializer: Any) -> bool:
    from keras.src.initializers.random_initializers import RandomInitializer

    return (
        isinstance(initializer, RandomInitializer)
        and isinstance(initializer.seed, int)  # a SeedGenerator's draws depend on their order
        and keras.backend.is_float_dtype(variable._dtype)
        and tf.executing_eagerly()
    )


def _pending() -> dict[int, tuple[Any, Any]] | None:
    return getattr(_thread, "pending", None)


def _deferring(original: Any) -> Any:
    def _initialize_with_initializer(self: Any, initializer: Any) -> None:
        pending = _pending()
        if pending is None or not _deferrable(self, initializer):
            return original(self, initializer)
        self._initialize(tf.fill(self._shape, tf.constant(float("nan"), dtype=self._dtype)))
        pending[id(self)] = (self, initializer)

    return _initialize_with_initializer


def _settling(original: Any) -> Any:
    def assign(self: Any, value: Any) -> Any:
        assigned = original(self, value)
        pending = _pending()
        if pending:
            pending.pop(id(self), None)
        return assigned

    return assign


def _initialized_first(original: Any) -> Any:
    def update(self: Any, value: Any) -> Any:
        pending = _pending()
        entry = pending.pop(id(self), None) if pending else None
        if entry is not None:
            _ORIGINAL_ASSIGN(self, entry[1](self._shape, dtype=self._dtype))
        return original(self, value)

    return update


_ORIGINAL_ASSIGN = _VARIABLE_CLASS.assign
_VARIABLE_PATCH = SharedPatch(
    [(_VARIABLE_CLASS, name) for name in ("_initialize_with_initializer", "assign", "assign_add", "assign_sub")],
    lambda initialize, assign, assign_add, assign_sub: [
        _deferring(initialize),
        _settling(assign),
        _initialized_first(assign_add),
        _initialized_first(assign_sub),
    ],
    backend="tensorflow",
)
