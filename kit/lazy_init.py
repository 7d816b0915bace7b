"""Random initial values that loading a model overwrites, not drawn.

Building a Keras model draws every weight's initial value, and loading pretrained or saved weights then
overwrites them all: for MiniLM that is 22.7M truncated-normal values drawn for nothing at every `kit run`,
`kit predict` and `kit eval`, for SmolLM2-135M six times as many.

In a `deferred_random_init()` block, a Keras variable this thread creates eagerly whose initializer is random
with a fixed seed (Keras's random initializers draw their seed when they are made, unless given a
`keras.random.SeedGenerator`) waits for its value:

- assigning its whole value eagerly (as Keras's `load_weights`, `load_model` and keras-hub's weight
  converters do) settles it without the draw;
- reading it, in any thread, eagerly or while tracing a function (`assign_add` and `assign_sub` read
  first), draws its initial value then;
- when the block ends, the variables still waiting get their initial values.

Each gets the values it would have had, since its initializer's seed was fixed when the initializer was made.
Until then it holds NaN, so a variable written past Keras (through TensorFlow's own `assign`) is told apart
and kept. An initializer that cannot make its value (an orthogonal one on a vector) raises when the value is
drawn, not when the variable is made; a variable loaded before never draws it. Blocks nest (the outermost one
settles); variables made while tracing a function or in other threads are built as usual.

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
from keras.src.backend.common.stateless_scope import get_stateless_scope, in_stateless_scope
from keras.src.backend.common.symbolic_scope import in_symbolic_scope

from kit.patches import SharedPatch

_thread = threading.local()  # .made: ids of the variables this thread's open block deferred (None: no block)
_lock = threading.RLock()
_waiting: dict[int, tuple[Any, Any]] = {}  # every thread's deferred variables: id -> (variable, initializer)


@contextlib.contextmanager
def deferred_random_init() -> Iterator[None]:
    """While open, this thread's new Keras variables with seeded random initializers wait for their values
    (see the module doc); when the outermost block ends, those still waiting get their initial values."""
    if getattr(_thread, "made", None) is not None:  # nested: the outer block settles
        yield
        return
    with _VARIABLE_PATCH:
        _thread.made = []
        try:
            yield
        except BaseException:
            _draw_all(_thread.made, raise_errors=False)  # no NaN left behind; the block's own error goes on
            raise
        else:
            _draw_all(_thread.made, raise_errors=True)
        finally:
            _thread.made = None


def _draw_all(keys: list[int], raise_errors: bool) -> None:
    first_error: Exception | None = None
    for key in keys:
        try:
            _draw(key)
        except Exception as exc:  # the others are still drawn
            first_error = first_error or exc
    if first_error is not None and raise_errors:
        raise first_error


def _draw(key: int) -> None:
    """Give a waiting variable its initial value, unless something wrote it past Keras meanwhile."""
    with _lock:
        entry = _waiting.pop(key, None)
        if entry is None:
            return
        variable, initializer = entry
        with tf.init_scope():  # eagerly, also when a function being traced reads it first
            if bool(tf.reduce_all(tf.math.is_nan(variable._value))):
                variable._direct_assign(initializer(variable._shape, dtype=variable._dtype))


def _deferrable(variable: Any, initializer: Any) -> bool:
    from keras.src.initializers.random_initializers import RandomInitializer

    return (
        getattr(_thread, "made", None) is not None
        and isinstance(initializer, RandomInitializer)
        and isinstance(initializer.seed, int)  # a SeedGenerator's draws depend on their order
        and keras.backend.is_float_dtype(variable._dtype)
        and tf.executing_eagerly()
    )


def _deferring(original: Any) -> Any:
    def _initialize_with_initializer(self: Any, initializer: Any) -> None:
        if not _deferrable(self, initializer):
            return original(self, initializer)
        self._initialize(tf.fill(self._shape, tf.constant(float("nan"), dtype=self._dtype)))
        with _lock:
            _waiting[id(self)] = (self, initializer)
        _thread.made.append(id(self))

    return _initialize_with_initializer


def _settling(original: Any) -> Any:
    def assign(self: Any, value: Any) -> Any:
        assigned = original(self, value)
        if id(self) in _waiting and tf.executing_eagerly() and not in_stateless_scope():  # written now
            with _lock:
                _waiting.pop(id(self), None)
        return assigned

    return assign


def _drawing_first(original: property) -> property:
    read = original.fget

    def value(self: Any) -> Any:
        if id(self) in _waiting and _reads_the_variable(self):
            _draw(id(self))
        return read(self)

    return property(value, original.fset, original.fdel, original.__doc__)


def _reads_the_variable(variable: Any) -> bool:
    """Whether reading `value` now reads the variable itself: not Keras working out shapes (a symbolic
    scope), nor a stateless scope that holds a value of its own for it."""
    if in_symbolic_scope():
        return False
    return not in_stateless_scope() or get_stateless_scope().get_current_value(variable) is None


_VARIABLE_PATCH = SharedPatch(
    [(_VARIABLE_CLASS, name) for name in ("_initialize_with_initializer", "assign", "value")],
    lambda initialize, assign, value: [_deferring(initialize), _settling(assign), _drawing_first(value)],
    backend="tensorflow",
)
