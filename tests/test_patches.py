"""SharedPatch: attributes replaced while any block is open, the originals back when the last one ends."""

from __future__ import annotations

import threading
import types

import pytest

from kit.patches import SharedPatch


def original(x):
    return x


def test_replaced_from_the_originals_while_a_block_is_open_and_put_back_after():
    owner = types.SimpleNamespace(f=original, g=len)
    patch = SharedPatch([(owner, "f"), (owner, "g")], lambda f, g: [lambda x: f(x) + 1, lambda x: g(x) * 2])
    with patch:
        assert owner.f(1) == 2 and owner.g("ab") == 4
        with patch:  # nested: the same replacement, made once
            assert owner.f(1) == 2
        assert owner.f(1) == 2  # the outer block is still open
    assert owner.f is original and owner.g is len


def test_the_last_block_to_end_puts_the_originals_back_across_threads_and_exceptions():
    owner = types.SimpleNamespace(f=original)
    patch = SharedPatch([(owner, "f")], lambda f: [abs])
    entered, release = threading.Event(), threading.Event()

    def hold():
        with patch:
            entered.set()
            release.wait(10)

    worker = threading.Thread(target=hold)
    worker.start()
    entered.wait(10)
    with pytest.raises(RuntimeError), patch:
        assert owner.f is abs
        raise RuntimeError("inside")
    assert owner.f is abs  # the other thread's block is open
    release.set()
    worker.join()
    assert owner.f is original


def test_an_inherited_method_is_inherited_again_after_the_block():
    class Base:
        def f(self):
            return "base"

    class Child(Base):
        pass

    patch = SharedPatch([(Child, "f")], lambda f: [lambda self: "patched " + f(self)])
    with patch:
        assert Child().f() == "patched base" and Base().f() == "base"
    assert "f" not in vars(Child)
    Base.f = lambda self: "changed"  # a later change to the base class shows in the subclass
    assert Child().f() == "changed"


def test_slotted_objects_properties_and_others_changes_are_handled():
    class Slotted:
        __slots__ = ("f",)

    slotted = Slotted()
    slotted.f = original
    with SharedPatch([(slotted, "f")], lambda f: [abs]):
        assert slotted.f is abs
    assert slotted.f is original

    class Held:
        def __init__(self):
            self._f = original

        f = property(lambda self: self._f, lambda self, value: setattr(self, "_f", value))

    held = Held()
    with SharedPatch([(held, "f")], lambda f: [abs]):
        assert held.f is abs
    assert held.f is original  # through the property's setter: it has no deleter

    owner = types.SimpleNamespace(f=original, g=len)
    patch = SharedPatch([(owner, "f"), (owner, "g")], lambda f, g: [abs, abs])
    with patch:
        owner.f = repr  # someone else's, set while the block is open
        del owner.g
    assert owner.f is repr and not hasattr(owner, "g")  # theirs stays, and nothing fails


def test_a_patch_for_another_backend_changes_nothing():
    import keras

    owner = types.SimpleNamespace(f=original)
    other = "jax" if keras.backend.backend() != "jax" else "tensorflow"
    with SharedPatch([(owner, "f")], lambda f: [abs], backend=other):
        assert owner.f is original
    with SharedPatch([(owner, "f")], lambda f: [abs], backend=keras.backend.backend()):
        assert owner.f is abs
    assert owner.f is original


def test_the_documented_example_traces_through_the_replacement_and_puts_kerass_back():
    """docs/hooks.md's `kit.patches` example, run as written."""
    import keras
    import numpy as np

    from tests.docs_examples import run_example

    keras_softmax = keras.ops.softmax
    namespace = run_example("## Switching a library function while tracing")
    assert namespace["traced_shapes"] == [(1, 3)]  # traced once, inside the block
    assert keras.ops.softmax is keras_softmax
    expected = np.exp([1.0, 2.0, 3.0]) / np.exp([1.0, 2.0, 3.0]).sum()
    np.testing.assert_allclose(namespace["probabilities"], [expected], rtol=1e-6)
    namespace["scores"](namespace["tf"].constant([[0.0, 0.0]]))  # a new shape traces again, outside the block
    assert namespace["traced_shapes"] == [(1, 3)]
