"""keras-hub's tokenizers traced into graphs without RaggedTensor's run-time checks.

A tokenizer splits text into ragged tensors, and each `tf.RaggedTensor.from_row_splits` (and its
siblings) adds, by default, checks that the row partition is well formed (three for `from_row_splits`),
each an `Assert` inside a `tf.cond`, traced as small functions. keras-hub's byte-pair tokenizer splits
once for each special token, so SmolLM2's tokenizer graph built 75 checked ragged tensors: 477 functions
and 9,284 nodes, 3.9 s to trace and 3.8 s more for TensorFlow's graph optimiser at its first call, against
0.9 s and 0.4 s (13 functions, 1,747 nodes) without them (MiniLM's WordPiece tokenizer: 0.55 s -> 0.25 s).
kit traces a tokenizer for every data pipeline, `kit predict`, `kit eval`, export, server and prompt
batch, so every command paid this before its first example.

The partitions checked there are made by the tokenizer's own operations (regex splits, masks, row
lengths it computes), never read from a user's data, so the checks cannot fail; the tokens are the same
with and without them (`tests/test_tokenizer_graphs.py`). While a thread traces a keras-hub
preprocessing function into a graph (inside keras-hub's own `no_convert_scope`, which every tokenizer,
packer and preprocessor enters, a subclass's `@preprocessing_function` methods included), the
RaggedTensors that thread builds get `validate=False` unless the caller passes `validate`. Eager calls,
other graphs, and every other thread keep TensorFlow's checks.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
from typing import Any, Callable, Iterator

import tensorflow as tf

from kit.patches import SharedPatch

# tf.RaggedTensor's factories that take `validate` (default True).
_FACTORIES = (
    "from_row_splits",
    "from_row_lengths",
    "from_row_starts",
    "from_row_limits",
    "from_value_rowids",
    "from_uniform_row_length",
    "from_nested_row_splits",
    "from_nested_row_lengths",
    "from_nested_value_rowids",
)


def _unchecked(factory: Any) -> classmethod:
    """The classmethod `factory` (as bound to its class), building without checks while this thread is in
    an `unchecked_ragged_tensors` block and its caller did not pass `validate`."""
    function = factory.__func__
    position = list(inspect.signature(function).parameters).index("validate") - 1  # after `cls`

    @functools.wraps(function)
    def build(cls: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(_thread, "unchecked", 0) and len(args) <= position and "validate" not in kwargs:
            kwargs["validate"] = False
        return function(cls, *args, **kwargs)

    return classmethod(build)


@contextlib.contextmanager
def unchecked_ragged_tensors() -> Iterator[None]:
    """While open: the ragged tensors this thread builds skip TensorFlow's run-time checks of their row
    partitions, unless a caller passes `validate`. Other threads keep the checks. Blocks nest."""
    with _FACTORIES_PATCH:  # TensorFlow's own factories again once no block is open in any thread
        _thread.unchecked = getattr(_thread, "unchecked", 0) + 1
        try:
            yield
        finally:
            _thread.unchecked -= 1


def _scope_that_skips_checks(keras_scope: Callable[[], Any]) -> Callable[[], Any]:
    """keras-hub's `no_convert_scope`, which also opens `unchecked_ragged_tensors` when tracing a graph."""

    @contextlib.contextmanager
    def no_convert_scope() -> Iterator[None]:
        with keras_scope():
            if tf.executing_eagerly():
                yield
            else:
                with unchecked_ragged_tensors():
                    yield

    no_convert_scope.keras_scope = keras_scope  # type: ignore[attr-defined]  # also marks it as kit's
    return no_convert_scope


def lean_tokenizer_graphs() -> None:
    """Trace keras-hub's preprocessing without RaggedTensor checks from now on (idempotent, thread-safe).

    If keras-hub stops entering `no_convert_scope`, this changes nothing: its graphs keep their checks.
    """
    from keras_hub.src.utils import tensor_utils

    with _install_lock:
        scope = getattr(tensor_utils, "no_convert_scope", None)
        if callable(scope) and not hasattr(scope, "keras_scope"):
            tensor_utils.no_convert_scope = _scope_that_skips_checks(scope)


_install_lock = threading.Lock()
_thread = threading.local()  # .unchecked: how many `unchecked_ragged_tensors` blocks this thread has open
_FACTORIES_PATCH = SharedPatch(
    [(tf.RaggedTensor, name) for name in _FACTORIES if hasattr(tf.RaggedTensor, name)],
    lambda *factories: [_unchecked(factory) for factory in factories],
)
