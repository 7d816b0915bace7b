"""Library attributes replaced while a block is open: how kit switches Keras's own functions for its faster ones.

Functions traced by TensorFlow while a block is open keep what they traced, so kit opens a block around the
call that traces (`model.fit`, `model.predict`). The attributes are the library's own (a class's method, a
module's function), so the replacement holds for the whole process while any block is open, in any thread;
blocks may nest or overlap, and the originals come back when the last one ends, after an exception too.

Example:
    >>> lean = SharedPatch([(keras_nn, "gelu")], lambda gelu: [functools.partial(my_gelu, gelu)])
    >>> with lean:
    ...     model.fit(dataset)  # the training step is traced with my_gelu
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

_INHERITED = object()  # what `_own` gives for an attribute the owner only inherits (or has not at all)


class SharedPatch:
    """Replace `targets` ((object, attribute name) pairs) with `replace(*originals)` while a block is open.

    When the last block ends, each attribute is put back as it was: its own value (a staticmethod stays one),
    or deleted again where the owner only inherited it, so a later change to the base class shows through.
    An attribute someone else replaced or removed while the block was open is left as they left it.

    `backend`: replace only while Keras runs on this backend (e.g. "tensorflow" for a replacement written
    with TensorFlow operations); on another, a block changes nothing.
    """

    def __init__(
        self, targets: Sequence[tuple[Any, str]], replace: Callable[..., Sequence[Any]], backend: str | None = None
    ):
        self.targets, self.replace, self.backend = list(targets), replace, backend
        self._lock = threading.Lock()
        self._kept: list[tuple[Any, Any, Any]] = []  # per target: its own value (or _INHERITED), original, replacement
        self._users = 0

    def __enter__(self) -> SharedPatch:
        if not self._applies():
            return self
        with self._lock:
            if not self._users:
                originals = [getattr(owner, name) for owner, name in self.targets]
                own = [_own(owner, name) for owner, name in self.targets]
                replacements = list(self.replace(*originals))
                for (owner, name), new in zip(self.targets, replacements):
                    setattr(owner, name, new)
                self._kept = list(zip(own, originals, replacements))
            self._users += 1
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if not self._applies():
            return
        with self._lock:
            self._users -= 1
            if not self._users:
                for (owner, name), kept in zip(self.targets, self._kept):
                    _put_back(owner, name, *kept)
                self._kept = []

    def _applies(self) -> bool:
        if self.backend is None:
            return True
        import keras

        return keras.backend.backend() == self.backend


def _own(owner: Any, name: str) -> Any:
    """The value `owner` itself holds for `name` (not bound, not inherited), else `_INHERITED`."""
    namespace = getattr(owner, "__dict__", None)
    if namespace is None:  # a slotted object: its attribute is its own
        return getattr(owner, name)
    return namespace.get(name, _INHERITED)


def _put_back(owner: Any, name: str, own: Any, original: Any, replacement: Any) -> None:
    if _own(owner, name) is not replacement and getattr(owner, name, _INHERITED) is not replacement:
        return  # replaced or removed by someone else meanwhile: theirs stays
    if own is not _INHERITED:
        setattr(owner, name, own)
        return
    try:
        delattr(owner, name)
    except AttributeError:  # a property of its class took the value: it takes the original back
        setattr(owner, name, original)
