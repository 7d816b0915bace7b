"""Validation at epoch ends through kit's evaluation forward (`kit.harness.validation`): the same `val_` logs
as Keras's `model.evaluate`, and the last epoch's outputs reused by the final metrics instead of a second pass
over the validation split."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import kit.evaluation
from kit.harness import validation
from kit.harness.validation import EpochValidation
from kit.task import Task
from tests.conftest import make_tabular, project
from tests.harness.test_run import run_ok


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_a_run_validates_once_per_epoch_as_keras_would_and_reuses_the_last_pass(
    task, runner, tmp_path, monkeypatch, request
):
    compared = []
    validate = EpochValidation.validate

    def validate_checked_against_keras(self, callbacks, keep=True):
        ours = validate(self, callbacks, keep)
        keras_logs = self.model.evaluate(self.dataset, return_dict=True, verbose=0)  # the same weights
        compared.append((ours, {f"val_{k}": v for k, v in keras_logs.items()}))
        return ours

    monkeypatch.setattr(EpochValidation, "validate", validate_checked_against_keras)
    forwards = []
    outputs_and_targets = kit.evaluation.outputs_and_targets
    monkeypatch.setattr(
        kit.evaluation, "outputs_and_targets", lambda *a, **k: forwards.append(1) or outputs_and_targets(*a, **k)
    )
    data = {
        "classification": f"  train: {request.getfixturevalue('text_csv')}\nmodel:\n  sequence_length: 16\n  vocabulary_size: 200\n",
        "regression": f"  train: {make_tabular(tmp_path)}\n  target: y\nmodel:\n  hidden_units: [8]\n",
    }
    folder = project(tmp_path / "p", f"task: {task}\ndata:\n{data[task]}train:\n  epochs: 2\n  verbose: 0\n")
    run_ok(runner, ["run", str(folder)])
    run_dir = folder / "runs" / "run-1"
    assert len(compared) == 2  # one pass per epoch
    for ours, theirs in compared:
        assert ours == theirs  # Keras's own numbers, to the last digit
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert {k: v for k, v in history[-1].items() if k.startswith("val_")} == compared[-1][0]
    assert forwards == [1]  # the final metrics ran the model over the test split only
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["validation"]["loss"] == pytest.approx(history[-1]["val_loss"], rel=1e-5)
    if task == "classification":
        assert (run_dir / "confusion_validation.json").is_file()
    assert "validation" in json.loads((run_dir / "run.json").read_text())["stages"]


def _small_model(head: str = "logits") -> tuple[keras.Model, tf.data.Dataset]:
    keras.utils.set_random_seed(0)
    activation = {"logits": None, "softmax": "softmax"}[head]
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation=activation)])
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=head == "logits"), metrics=["accuracy"])
    x = np.random.default_rng(0).normal(size=(10, 3)).astype("float32") * 4
    y = np.arange(10) % 2
    return model, tf.data.Dataset.from_tensor_slices((x, y)).batch(4)


def _masked_model() -> tuple[keras.Model, tf.data.Dataset]:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,), dtype="int32")
    hidden = keras.layers.Embedding(7, 4, mask_zero=True)(inputs)  # Keras masks the padding's loss
    model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    rng = np.random.default_rng(1)
    x = rng.integers(1, 7, size=(12, 5)) * (rng.random((12, 5)) < 0.6)
    return model, tf.data.Dataset.from_tensor_slices((x.astype("int32"), rng.integers(0, 3, (12, 5)))).batch(5)


def _regularised_model() -> tuple[keras.Model, tf.data.Dataset]:
    model, dataset = _small_model()
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, activity_regularizer="l2")(inputs)  # a loss added inside `call`
    model = keras.Model(inputs, keras.layers.Dense(2)(hidden))
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model, dataset


class LossWithoutTraining(keras.Model):
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None):  # no `training` argument
        return super().compute_loss(x, y, y_pred, sample_weight) * 2.0


def _own_loss_model() -> tuple[keras.Model, tf.data.Dataset]:
    _, dataset = _small_model()
    inputs = keras.Input((3,))
    model = LossWithoutTraining(inputs, keras.layers.Dense(2)(inputs))
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model, dataset


def _vector_metric_model() -> tuple[keras.Model, tf.data.Dataset]:
    model, _ = _small_model()
    x = np.random.default_rng(0).normal(size=(10, 3)).astype("float32")
    y = np.eye(2, dtype="float32")[np.arange(10) % 2]
    model.compile(loss="categorical_crossentropy", metrics=[keras.metrics.F1Score(average=None, threshold=0.5)])
    return model, tf.data.Dataset.from_tensor_slices((x, y)).batch(4)


def _weighted_model() -> tuple[keras.Model, tf.data.Dataset]:
    model, _ = _small_model()
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=["accuracy"],
    )
    x = np.random.default_rng(0).normal(size=(10, 3)).astype("float32")
    weights = np.linspace(0.1, 2.0, 10).astype("float32")
    return model, tf.data.Dataset.from_tensor_slices((x, np.arange(10) % 2, weights)).batch(4)


@pytest.mark.parametrize(
    "build",
    [
        lambda: _small_model("softmax"),  # Keras's crossentropy reads the logits behind a softmax
        _masked_model,
        _regularised_model,
        _own_loss_model,
        _vector_metric_model,
        _weighted_model,
    ],
    ids=["softmax-head", "masked", "activity-regulariser", "own-compute-loss", "vector-metric", "sample-weights"],
)
def test_the_val_logs_are_model_evaluate_s_for_what_keras_attaches_to_outputs(build):
    model, dataset = build()
    ours = EpochValidation(model, dataset).validate(keras.callbacks.CallbackList([], model=model))
    theirs = {f"val_{k}": v for k, v in model.evaluate(dataset, return_dict=True, verbose=0).items()}
    assert ours.keys() == theirs.keys()
    for name, value in theirs.items():
        np.testing.assert_array_equal(ours[name], value, err_msg=name)  # to the last digit


def test_the_kept_outputs_serve_once_and_only_the_weights_they_came_from():
    model, dataset = _small_model()
    checked = EpochValidation(model, dataset)
    assert checked.kept_outputs() is None  # nothing validated yet
    val_logs = checked.validate(keras.callbacks.CallbackList([], model=model))
    assert set(val_logs) == {"val_loss", "val_accuracy"}
    outputs, targets = checked.kept_outputs()
    np.testing.assert_allclose(outputs, model.predict(dataset.map(lambda x, y: x), verbose=0), rtol=1e-6)
    assert targets.tolist() == (np.arange(10) % 2).tolist()
    assert checked.kept_outputs() is None  # handed over: not held through the rest of the run
    checked.validate(keras.callbacks.CallbackList([], model=model), keep=False)  # an epoch before the last
    assert checked.kept_outputs() is None
    # Early stopping puts an earlier epoch's weights back, a callback changes them: the outputs are stale.
    checked.validate(keras.callbacks.CallbackList([], model=model))
    model.layers[0].kernel.assign(model.layers[0].kernel + 1.0)
    assert checked.kept_outputs() is None


def test_a_callback_that_stops_evaluating_leaves_no_outputs_kept():
    model, dataset = _small_model()

    class StopAtOnce(keras.callbacks.Callback):
        def on_test_batch_end(self, batch, logs=None):
            self.model.stop_evaluating = True

    checked = EpochValidation(model, dataset)
    checked.validate(keras.callbacks.CallbackList([StopAtOnce()], model=model))
    assert checked.kept_outputs() is None  # a part of the split is not the split's outputs


def test_kit_validates_itself_only_where_it_computes_what_keras_would():
    model, dataset = _small_model()
    assert EpochValidation.suits(model, _bare(Task), dataset)

    class WholeModelEvaluation(Task):  # the generation task: outputs too large to keep
        def evaluate_model(self, model, dataset):
            return {}

    assert not EpochValidation.suits(model, _bare(WholeModelEvaluation), dataset)

    class OwnTestStep(keras.Model):
        def test_step(self, data):
            return {}

    inputs = keras.Input((3,))
    assert not EpochValidation.suits(OwnTestStep(inputs, keras.layers.Dense(2)(inputs)), _bare(Task), dataset)
    two_targets = dataset.map(lambda x, y: (x, {"a": y, "b": y}))
    assert not EpochValidation.suits(model, _bare(Task), two_targets)
    model._jit_compile = True  # XLA on, as Keras holds it (`jit_compile=True` is refused under op determinism)
    assert not EpochValidation.suits(model, _bare(Task), dataset)


def _bare(task_class: type) -> Task:
    return task_class.__new__(task_class)  # `suits` reads the task's class only


@pytest.mark.parametrize("hashed_at_once", [1 << 22, 8])  # one piece per weight; a row at a time
def test_weights_digest_tells_weights_apart(hashed_at_once, monkeypatch):
    monkeypatch.setattr(validation, "HASHED_AT_ONCE", hashed_at_once)
    model, _ = _small_model()
    before = validation.weights_digest(model)
    assert validation.weights_digest(model) == before
    kernel = model.layers[0].kernel
    kernel.assign(tf.tensor_scatter_nd_add(kernel, [[2, 1]], [1e-3]))  # the last row's last value
    assert validation.weights_digest(model) != before
