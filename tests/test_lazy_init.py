"""Random initial values deferred while a model is loaded (`kit.lazy_init`): the same weights, fewer draws."""

from __future__ import annotations

import threading

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.backend.common.stateless_scope import StatelessScope
from keras.src.initializers.random_initializers import RandomInitializer

from kit.lazy_init import deferred_random_init


@pytest.fixture
def draws(monkeypatch) -> list[str]:
    """The random initial values drawn (one entry per call of a Keras random initializer)."""
    drawn: list[str] = []
    for cls in {c for c in _subclasses(RandomInitializer) if "__call__" in c.__dict__}:
        original = cls.__call__

        def call(self, shape, dtype=None, _original=original, **kwargs):
            drawn.append(type(self).__name__)
            return _original(self, shape, dtype=dtype, **kwargs)

        monkeypatch.setattr(cls, "__call__", call)
    return drawn


def _subclasses(cls: type) -> set[type]:
    found = {cls}
    for sub in cls.__subclasses__():
        found |= _subclasses(sub)
    return found


def small_model(seed: int = 7) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((5,), dtype="int32")
    hidden = keras.layers.Embedding(40, 8, embeddings_initializer=keras.initializers.TruncatedNormal(stddev=0.02))(
        inputs
    )
    hidden = keras.layers.LayerNormalization()(keras.layers.Dense(6)(hidden))
    return keras.Model(inputs, keras.layers.Dense(2, kernel_initializer="orthogonal")(hidden))


def weights_of(model: keras.Model) -> list[np.ndarray]:
    return [np.asarray(w) for w in model.get_weights()]


def assert_same(first: list[np.ndarray], second: list[np.ndarray]) -> None:
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def random_variable(seed: int = 5, shape: tuple = (3,)) -> keras.Variable:
    return keras.Variable(initializer=keras.initializers.RandomNormal(seed=seed), shape=shape)


def test_a_model_nothing_loads_into_gets_its_initial_values_when_the_block_ends(draws):
    expected = weights_of(small_model())
    draws.clear()
    with deferred_random_init():
        model = small_model()
        assert draws == []  # embedding, two kernels: none drawn yet
    assert sorted(draws) == ["GlorotUniform", "Orthogonal", "TruncatedNormal"]
    assert_same(weights_of(model), expected)


def test_loaded_weights_are_never_drawn_and_the_rest_get_their_initial_values(tmp_path, draws):
    trained = small_model(seed=1)
    trained.save_weights(tmp_path / "model.weights.h5")
    expected = weights_of(small_model())
    draws.clear()
    with deferred_random_init():
        model = small_model()
        model.layers[1].embeddings.assign(trained.layers[1].embeddings)  # loaded: only the embedding
    assert sorted(draws) == ["GlorotUniform", "Orthogonal"]
    weights = weights_of(model)
    np.testing.assert_array_equal(weights[0], trained.layers[1].embeddings.numpy())
    assert_same(weights[1:], expected[1:])
    draws.clear()
    with deferred_random_init():
        model = small_model()
        model.load_weights(tmp_path / "model.weights.h5")  # Keras's loader assigns every weight
    assert draws == []
    assert_same(weights_of(model), weights_of(trained))


def test_keras_load_model_gives_the_saved_weights(tmp_path, draws):
    trained = small_model(seed=2)
    trained.save(tmp_path / "model.keras")
    draws.clear()
    with deferred_random_init():
        loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert draws == []
    assert_same(weights_of(loaded), weights_of(trained))


def test_reading_a_waiting_variable_draws_it_first():
    """Eagerly, while tracing, in another thread, through a copy, an update or a slice."""
    initial = random_variable().numpy()
    with deferred_random_init():
        read = random_variable()
        np.testing.assert_array_equal(read.numpy(), initial)

        updated = random_variable()

        @tf.function
        def bump() -> None:
            updated.assign_add(tf.ones(3))

        bump()
        bump()
        np.testing.assert_array_equal(updated.numpy(), initial + 2)

        copied, source = random_variable(seed=6), random_variable()
        copied.assign(source)  # a copy of a waiting variable copies its initial value

        elsewhere = random_variable()
        worker = threading.Thread(target=lambda: elsewhere.assign_add(tf.ones(3)))
        worker.start()
        worker.join()

        sliced = random_variable()
        sliced.value[:1].assign([7.0])
    bump()
    np.testing.assert_array_equal(updated.numpy(), initial + 3)
    np.testing.assert_array_equal(copied.numpy(), initial)
    np.testing.assert_array_equal(elsewhere.numpy(), initial + 1)
    np.testing.assert_array_equal(sliced.numpy(), [7.0, *initial[1:]])


def test_writes_that_do_not_happen_now_do_not_settle_a_variable():
    initial = random_variable().numpy()
    with deferred_random_init():
        traced_only = random_variable()

        @tf.function
        def zero() -> None:
            traced_only.assign(tf.zeros(3))

        zero.get_concrete_function()  # traced, never run
        recorded = random_variable()
        with StatelessScope():
            recorded.assign(tf.zeros(3))  # recorded in the scope, not written
    np.testing.assert_array_equal(traced_only.numpy(), initial)
    np.testing.assert_array_equal(recorded.numpy(), initial)


def test_a_weight_built_from_another_is_built_from_its_initial_value():
    """keras-hub's DINOv2 embeddings set a weight from the position table as they build."""
    import keras_hub

    def make() -> keras.Model:
        keras.utils.set_random_seed(3)
        return keras_hub.models.DINOV2Backbone(
            patch_size=14, num_layers=1, hidden_dim=8, num_heads=2, intermediate_dim=16,
            image_shape=(28, 28, 3), position_embedding_shape=(42, 42, 3),
        )  # fmt: skip

    expected = weights_of(make())
    with deferred_random_init():
        model = make()
    assert_same(weights_of(model), expected)


def test_an_error_in_the_block_leaves_no_variable_undrawn():
    expected = weights_of(small_model())
    made = []
    with pytest.raises(RuntimeError, match="loading failed"), deferred_random_init():
        made.append(small_model())
        raise RuntimeError("loading failed")
    assert_same(weights_of(made[0]), expected)


def test_an_initializer_that_fails_raises_when_its_value_is_drawn():
    initial = random_variable().numpy()
    with pytest.raises(ValueError), deferred_random_init():
        keras.Variable(initializer=keras.initializers.Orthogonal(), shape=(4,))  # orthogonal needs a matrix
        other = random_variable()
    np.testing.assert_array_equal(other.numpy(), initial)  # the others are still drawn
    with deferred_random_init():
        loaded = keras.Variable(initializer=keras.initializers.Orthogonal(), shape=(4,))
        loaded.assign(np.ones(4, "float32"))  # loaded: never drawn, no error
    np.testing.assert_array_equal(loaded.numpy(), np.ones(4))


def test_nested_blocks_settle_when_the_outer_one_ends(draws):
    expected = weights_of(small_model())
    draws.clear()
    with deferred_random_init():
        with deferred_random_init():
            model = small_model()
        assert draws == []
    assert_same(weights_of(model), expected)


def test_seed_generators_other_threads_and_traced_functions_make_their_own(draws):
    generator = keras.random.SeedGenerator(3)
    with deferred_random_init():
        draws.clear()
        keras.Variable(initializer=keras.initializers.RandomNormal(seed=generator), shape=(4,))
        assert draws == ["RandomNormal"]  # a generator's draws depend on their order: drawn now

        worker = threading.Thread(target=random_variable)
        worker.start()
        worker.join()
        assert draws == ["RandomNormal"] * 2

        created: list[keras.Variable] = []

        @tf.function
        def make() -> None:
            if not created:
                created.append(random_variable())

        make()
        assert draws == ["RandomNormal"] * 3


def test_a_variable_written_past_keras_is_kept():
    with deferred_random_init():
        variable = random_variable()
        variable._value.assign(tf.ones(3))  # TensorFlow's own variable, behind Keras's back
    np.testing.assert_array_equal(variable.numpy(), np.ones(3))


def test_variables_are_built_as_usual_once_no_block_is_open(draws):
    with deferred_random_init():
        pass
    draws.clear()
    random_variable()
    assert draws == ["RandomNormal"]
    assert "value" not in keras.src.backend.Variable.__dict__  # Keras's own property again, inherited


def test_kit_loads_models_without_drawing_initial_values(tmp_path, draws):
    """`kit.text.load_preset` (a Hugging Face folder) and `kit.runfiles.load_keras_model`: the same weights
    as keras-hub's and Keras's own loaders, with no initial value drawn."""
    import keras_hub

    from kit.runfiles import load_keras_model
    from kit.text import load_preset
    from tests.hf_folders import roberta_folder

    folder = roberta_folder(tmp_path / "roberta", ["a small test text", "another text to learn merges from"])
    plain = keras_hub.models.Backbone.from_preset(str(folder))
    draws.clear()
    through_kit = load_preset(str(folder), keras_hub.models.Backbone)
    assert draws == []
    assert_same(weights_of(through_kit), weights_of(plain))

    small_model(seed=4).save(tmp_path / "model.keras")
    plain = keras.saving.load_model(tmp_path / "model.keras")
    draws.clear()
    through_kit = load_keras_model(tmp_path / "model.keras")
    assert draws == []
    assert_same(weights_of(through_kit), weights_of(plain))


def test_the_documented_example_runs_as_written(capsys):
    from tests.docs_examples import run_example

    run_example("## Loading weights without drawing initial values")
    assert capsys.readouterr().out.strip() == "True"
