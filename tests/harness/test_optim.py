"""The backbone learning-rate group: a second learning rate for some weights of one Keras optimizer."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from kit.harness.callbacks import BackboneSchedule
from kit.harness.optim import FusedAdam, FusedAdamW, backbone_rate


def two_part_model(seed=3):
    """A 'backbone' Dense and a 'head' Dense, built with seeded weights."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    backbone = keras.layers.Dense(8, name="backbone")
    head = keras.layers.Dense(1, name="head")
    model = keras.Model(inputs, head(backbone(inputs)))
    return model, backbone, head


def one_step(model, optimizer, seed=0):
    x = np.random.default_rng(seed).normal(size=(16, 4)).astype("float32")
    y = np.random.default_rng(seed + 1).normal(size=(16, 1)).astype("float32")
    model.compile(optimizer=optimizer, loss="mse")
    model.train_on_batch(x, y)


@pytest.mark.parametrize("base", [keras.optimizers.AdamW, keras.optimizers.Adam, keras.optimizers.SGD])
def test_backbone_weights_step_as_with_their_own_learning_rate(base):
    """One step with rate 1e-2 and backbone scale 0.1 moves the backbone exactly as rate 1e-3 would."""
    grouped, backbone, head = two_part_model()
    one_step(grouped, backbone_rate(base)(learning_rate=1e-2, backbone_variables=backbone.weights, backbone_scale=0.1))
    slow, slow_backbone, _ = two_part_model()
    one_step(slow, base(learning_rate=1e-3))
    fast, _, fast_head = two_part_model()
    one_step(fast, base(learning_rate=1e-2))
    for mine, reference in zip(backbone.get_weights(), slow_backbone.get_weights()):
        np.testing.assert_allclose(mine, reference, rtol=1e-6, atol=1e-7)
    for mine, reference in zip(head.get_weights(), fast_head.get_weights()):
        np.testing.assert_allclose(mine, reference, rtol=1e-6, atol=1e-7)


def test_scale_zero_holds_the_backbone_still_and_decay_too():
    model, backbone, head = two_part_model()
    before_backbone, before_head = backbone.get_weights(), head.get_weights()
    optimizer = backbone_rate(keras.optimizers.AdamW)(
        learning_rate=1e-2, weight_decay=0.5, backbone_variables=backbone.weights, backbone_scale=0.0
    )
    one_step(model, optimizer)
    assert all(np.array_equal(a, b) for a, b in zip(backbone.get_weights(), before_backbone))
    assert not np.allclose(head.get_weights()[0], before_head[0])


def test_backbone_schedule_freezes_then_restores_the_scale():
    model, backbone, _ = two_part_model()
    model.optimizer = backbone_rate(keras.optimizers.Adam)(backbone_variables=backbone.weights, backbone_scale=0.25)
    schedule = BackboneSchedule(frozen_epochs=2)
    schedule.set_model(model)
    seen = []
    for epoch in range(4):
        schedule.on_epoch_begin(epoch)
        seen.append(float(model.optimizer.backbone_scale.numpy()))
    assert seen == [0.0, 0.0, 0.25, 0.25]
    resumed = BackboneSchedule(frozen_epochs=2)  # a resumed run starts mid-way and still lands right
    model.optimizer.backbone_scale.assign(0.25)
    resumed.set_model(model)
    resumed.on_epoch_begin(1)
    assert float(model.optimizer.backbone_scale.numpy()) == 0.0


def traced_fit(model: keras.Model) -> int:
    """Fit two epochs of two batches; return how often Keras traced the train step (one call per trace)."""
    traces = []
    train_step = model.train_step

    def counting(data):
        traces.append(1)
        return train_step(data)

    model.train_step = counting
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    model.fit(x, x[:, :1], batch_size=8, epochs=2, verbose=0)
    return len(traces)


@pytest.mark.parametrize("built_first", [False, True])
def test_slots_built_before_training_mean_one_trace(built_first):
    from kit.harness.trainer import build_optimizer

    model, _, _ = two_part_model()
    model.compile(optimizer=keras.optimizers.AdamW(), loss="mse")
    if built_first:
        build_optimizer(model)
        assert model.optimizer.built and len(model.optimizer.variables) > 1
    # Keras alone creates the slots inside the first trace, and TensorFlow then traces the step again.
    assert traced_fit(model) == (1 if built_first else 2)


def test_a_model_built_on_first_call_keeps_the_lazy_path():
    from kit.harness.trainer import build_optimizer

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1)

        def call(self, x):
            return self.dense(x)

    model = Subclassed()
    model.compile(optimizer=keras.optimizers.AdamW(), loss="mse")
    build_optimizer(model)
    assert not model.optimizer.built
    traced_fit(model)
    assert model.optimizer.built and model.dense.built


def embedding_model(seed=5):
    """Token ids -> an embedding (its gradient comes sparse, as IndexedSlices) -> a pooled dense head."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,), dtype="int32")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(50, 8, name="embedding")(inputs))
    return keras.Model(inputs, keras.layers.Dense(1, name="head")(pooled))


def train_steps(model, optimizer, steps=4):
    rng = np.random.default_rng(0)
    model.compile(optimizer=optimizer, loss="mse")
    for _ in range(steps):
        model.train_on_batch(rng.integers(0, 50, (16, 6)).astype("int32"), rng.normal(size=(16, 1)).astype("float32"))
    return model.get_weights()


def dense_gradients(base):
    """`base` (a Keras optimizer class) given each gradient dense: textbook Adam, as PyTorch computes it.

    Keras squares a sparse embedding gradient's rows one occurrence at a time, so a token seen twice in a
    batch adds g1^2 + g2^2 to Adam's second moment, and to the global norm it clips by, instead of
    (g1 + g2)^2; kit's fused update (like PyTorch) takes the summed gradient for both.
    """

    class Dense(base):
        def apply(self, grads, trainable_variables=None):
            return super().apply([tf.convert_to_tensor(g) for g in grads], trainable_variables)

    return Dense


@pytest.mark.parametrize(
    "fused, keras_class, settings",
    [
        (FusedAdamW, keras.optimizers.AdamW, {"weight_decay": 0.1, "epsilon": 1e-8}),
        (FusedAdam, keras.optimizers.Adam, {"global_clipnorm": 0.5}),
        (FusedAdamW, keras.optimizers.AdamW, {"weight_decay": 0.1, "global_clipnorm": 0.05}),
    ],
)
def test_fused_adam_takes_the_steps_keras_takes(fused, keras_class, settings):
    """TensorFlow's fused Adam kernel against Keras's own update: the same weights after one step of a dense
    model, and after four steps of a model with a (sparse) embedding gradient, decay exclusions and the
    backbone rate group included."""
    fused_model, _, _ = two_part_model()
    one_step(fused_model, fused(learning_rate=1e-2, **settings))
    keras_model, _, _ = two_part_model()
    one_step(keras_model, keras_class(learning_rate=1e-2, **settings))
    for a, b in zip(fused_model.get_weights(), keras_model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)

    def make(cls, model=None):
        if model is None:
            optimizer = cls(learning_rate=1e-2, **settings)
        else:
            backbone = model.get_layer("embedding").weights
            optimizer = backbone_rate(cls)(
                learning_rate=1e-2, backbone_variables=backbone, backbone_scale=0.5, **settings
            )
        if hasattr(optimizer, "exclude_from_weight_decay"):
            optimizer.exclude_from_weight_decay(var_names=["bias"])
        return optimizer

    reference_class = dense_gradients(keras_class)
    mine, reference = train_steps(embedding_model(), make(fused)), train_steps(embedding_model(), make(reference_class))
    for a, b in zip(mine, reference):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # float rounding, amplified where v is tiny
    assert not np.allclose(mine[0], embedding_model().get_weights()[0])  # the steps moved the weights
    first, second = embedding_model(), embedding_model()
    mine, reference = train_steps(first, make(fused, first)), train_steps(second, make(reference_class, second))
    for a, b in zip(mine, reference):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # float rounding, amplified where v is tiny


def test_amsgrad_keeps_keras_update():
    mine = train_steps(embedding_model(), FusedAdam(learning_rate=1e-2, amsgrad=True))
    reference = train_steps(embedding_model(), keras.optimizers.Adam(learning_rate=1e-2, amsgrad=True))
    for a, b in zip(mine, reference):
        np.testing.assert_array_equal(a, b)


def test_weight_decay_at_fine_tuning_rates_is_not_rounded_away():
    """lr 5e-5 times decay 0.01 is 5e-7 a step, under float32's spacing below 1 (6e-8) by only 8x: decaying by
    multiplying with 1 - 5e-7 would apply 4.77e-7 (float32's nearest), 5% short, every step. Keras's and kit's
    decay lose nothing on average."""
    weights = tf.Variable(np.random.default_rng(0).uniform(0.5, 1.0, 4096).astype("float32"))
    start = weights.numpy().astype("float64")
    optimizer = FusedAdamW(learning_rate=5e-5, weight_decay=0.01)
    zero = tf.zeros_like(weights)  # Adam's own step is then zero: only the decay moves the weights

    @tf.function
    def steps():
        for _ in tf.range(200):
            optimizer.apply_gradients([(zero, weights)])

    steps()
    expected = start.sum() * (1 - (1 - 5e-7) ** 200)
    applied = start.sum() - weights.numpy().astype("float64").sum()
    assert abs(applied / expected - 1) < 0.01


def test_one_device_updates_each_weight_directly_with_the_strategys_result(monkeypatch):
    """Without a strategy the fused optimizers skip the strategy's per-weight update machinery (0.1-0.4 s of
    tracing MiniLM's first step); under one they keep it. The weights come out the same."""
    routed_calls = []
    update = tf.distribute.StrategyExtended.update
    monkeypatch.setattr(
        tf.distribute.StrategyExtended, "update", lambda self, *a, **k: routed_calls.append(1) or update(self, *a, **k)
    )

    def make():
        optimizer = backbone_rate(FusedAdamW)(
            learning_rate=1e-2, weight_decay=0.1, global_clipnorm=0.5, backbone_scale=0.5
        )
        optimizer.exclude_from_weight_decay(var_names=["bias"])
        return optimizer

    direct = train_steps(embedding_model(), make())
    assert routed_calls == []
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        routed = train_steps(embedding_model(), make())
    assert routed_calls  # every weight (and its decay) through the strategy
    for a, b in zip(direct, routed):
        np.testing.assert_array_equal(a, b)


def test_a_traced_step_makes_adams_scalars_once_for_all_weights():
    """Beta powers and constants are shared by every weight of a dtype (per weight they were about 1,100 of
    MiniLM's 6,000 traced operations): one pair of powers for a model of three weights."""
    model = embedding_model()
    optimizer = FusedAdamW(learning_rate=1e-2, weight_decay=0.1, global_clipnorm=0.5)
    optimizer.build(model.trainable_variables)

    @tf.function
    def step():
        optimizer.apply_gradients([(tf.ones_like(v), v) for v in model.trainable_variables])

    graph = step.get_concrete_function().graph
    operations = [op.type for op in graph.get_operations()]
    assert len(model.trainable_variables) == 3
    assert operations.count("ResourceApplyAdam") == 3
    assert operations.count("Pow") == 2
