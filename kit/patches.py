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


class SharedPatch:
    """Replace `targets` ((object, attribute name) pairs) with `replace(*originals)` while a block is open."""

    def __init__(self, targets: Sequence[tuple[Any, str]], replace: Callable[..., Sequence[Any]]):
        self.targets, self.replace = list(targets), replace
        self._lock = threading.Lock()
        self._originals: list[Any] = []
        self._owned: list[bool] = []  # whether each attribute was the owner's own, not inherited from a base class
        self._users = 0

    def __enter__(self) -> SharedPatch:
        with self._lock:
            if not self._users:
                self._originals = [getattr(owner, name) for owner, name in self.targets]
                self._owned = [name in vars(owner) for owner, name in self.targets]
                for (owner, name), new in zip(self.targets, self.replace(*self._originals)):
                    setattr(owner, name, new)
            self._users += 1
        return self

    def __exit__(self, *exc_info: Any) -> None:
        with self._lock:
            self._users -= 1
            if not self._users:
                for (owner, name), original, owned in zip(self.targets, self._originals, self._owned):
                    if owned:
                        setattr(owner, name, original)
                    else:  # a subclass's inherited method: inherited again, so a later change to the base shows
                        delattr(owner, name)
                self._originals, self._owned = [], []
