"""Random initial values deferred while a model is loaded (`kit.lazy_init`): the same weights, fewer draws."""

from __future__ import annotations

import threading

import keras
import numpy as np
import pytest
import tensorflow as tf

from kit.lazy_init import deferred_random_init


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


def test_a_model_nothing_loads_into_gets_the_initial_values_it_would_have_had():
    expected = weights_of(small_model())
    with deferred_random_init():
        model = small_model()
        kernel = model.layers[2].kernel
        assert np.isnan(kernel.numpy()).all()  # not drawn yet: NaN, so an early read would show
    assert_same(weights_of(model), expected)


def test_loaded_weights_stay_and_the_rest_get_their_initial_values(tmp_path):
    trained = small_model(seed=1)
    path = tmp_path / "model.weights.h5"
    trained.save_weights(path)
    expected = weights_of(small_model())
    with deferred_random_init():
        model = small_model()
        model.layers[1].embeddings.assign(trained.layers[1].embeddings)  # loaded: only the embedding
    weights = weights_of(model)
    np.testing.assert_array_equal(weights[0], trained.layers[1].embeddings.numpy())
    assert_same(weights[1:], expected[1:])
    with deferred_random_init():
        model = small_model()
        model.load_weights(path)  # Keras's loader assigns every weight
    assert_same(weights_of(model), weights_of(trained))


def test_keras_load_model_gives_the_saved_weights(tmp_path):
    trained = small_model(seed=2)
    trained.save(tmp_path / "model.keras")
    with deferred_random_init():
        loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert_same(weights_of(loaded), weights_of(trained))


def test_updates_start_from_the_initial_value():
    expected = small_model().layers[2].kernel.numpy() + 1.0
    with deferred_random_init():
        kernel = small_model().layers[2].kernel
        kernel.assign_add(np.ones(kernel.shape, "float32"))
        np.testing.assert_array_equal(kernel.numpy(), expected)
    np.testing.assert_array_equal(kernel.numpy(), expected)


def test_an_error_in_the_block_leaves_no_variable_undrawn():
    expected = weights_of(small_model())
    made = []
    with pytest.raises(RuntimeError), deferred_random_init():
        made.append(small_model())
        raise RuntimeError("loading failed")
    assert_same(weights_of(made[0]), expected)


def test_nested_blocks_settle_when_the_outer_one_ends():
    expected = weights_of(small_model())
    with deferred_random_init():
        with deferred_random_init():
            model = small_model()
        assert np.isnan(model.layers[2].kernel.numpy()).all()
    assert_same(weights_of(model), expected)


def test_seed_generators_other_threads_and_traced_functions_are_left_alone():
    generator = keras.random.SeedGenerator(3)
    with deferred_random_init():
        drawn = keras.Variable(initializer=keras.initializers.RandomNormal(seed=generator), shape=(4,))
        assert not np.isnan(drawn.numpy()).any()  # a generator's draws depend on their order: drawn now

        other: list[keras.Variable] = []
        worker = threading.Thread(
            target=lambda: other.append(keras.Variable(initializer=keras.initializers.RandomNormal(), shape=(4,)))
        )
        worker.start()
        worker.join()
        assert not np.isnan(other[0].numpy()).any()

        created: list[keras.Variable] = []

        @tf.function
        def make() -> None:
            if not created:
                created.append(keras.Variable(initializer=keras.initializers.RandomNormal(), shape=(4,)))

        make()
        assert not np.isnan(created[0].numpy()).any()


def test_variables_are_built_as_usual_once_no_block_is_open():
    with deferred_random_init():
        pass
    variable = keras.Variable(initializer=keras.initializers.RandomNormal(), shape=(3,))
    assert not np.isnan(variable.numpy()).any()
    assert "assign" not in type(variable).__dict__  # Keras's own method again, inherited


def test_a_variable_written_past_keras_is_kept():
    with deferred_random_init():
        kernel = small_model().layers[2].kernel
        kernel.value.assign(tf.ones(kernel.shape))  # TensorFlow's own assign: kit does not see it
    np.testing.assert_array_equal(kernel.numpy(), np.ones(kernel.shape, "float32"))


def test_a_hugging_face_folder_loads_the_same_weights_through_kit(tmp_path):
    """`kit.text.load_preset` (which defers) against keras-hub's `from_preset` alone, on a RoBERTa folder."""
    import keras_hub

    from kit.text import load_preset
    from tests.hf_folders import roberta_folder

    folder = roberta_folder(tmp_path / "roberta", ["a small test text", "another text to learn merges from"])
    plain = keras_hub.models.Backbone.from_preset(str(folder))
    through_kit = load_preset(str(folder), keras_hub.models.Backbone)
    assert_same(weights_of(through_kit), weights_of(plain))
    assert not any(np.isnan(w).any() for w in weights_of(through_kit))
