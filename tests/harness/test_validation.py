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
    logs = EpochValidation.logs

    def logs_checked_against_keras(self, callbacks, keep=True):
        ours = logs(self, callbacks, keep)
        keras_logs = self.model.evaluate(self.dataset, return_dict=True, verbose=0)  # the same weights
        compared.append((ours, {f"val_{k}": v for k, v in keras_logs.items()}))
        return ours

    monkeypatch.setattr(EpochValidation, "logs", logs_checked_against_keras)
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


def _small_model() -> tuple[keras.Model, tf.data.Dataset]:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x = np.random.default_rng(0).normal(size=(10, 3)).astype("float32")
    y = np.arange(10) % 2
    return model, tf.data.Dataset.from_tensor_slices((x, y)).batch(4)


def test_the_kept_outputs_serve_only_the_weights_they_came_from():
    model, dataset = _small_model()
    checked = EpochValidation(model, dataset, {})
    assert checked.outputs_for(model) is None  # nothing validated yet
    val_logs = checked.logs(keras.callbacks.CallbackList([], model=model))
    assert set(val_logs) == {"val_loss", "val_accuracy"}
    outputs, targets = checked.outputs_for(model)
    np.testing.assert_allclose(outputs, model.predict(dataset.map(lambda x, y: x), verbose=0), rtol=1e-6)
    assert targets.tolist() == (np.arange(10) % 2).tolist()
    # Early stopping puts an earlier epoch's weights back, a callback changes them: the outputs are stale.
    model.layers[0].kernel.assign(model.layers[0].kernel + 1.0)
    assert checked.outputs_for(model) is None


def test_a_callback_that_stops_evaluating_leaves_no_outputs_kept():
    model, dataset = _small_model()

    class StopAtOnce(keras.callbacks.Callback):
        def on_test_batch_end(self, batch, logs=None):
            self.model.stop_evaluating = True

    checked = EpochValidation(model, dataset, {})
    checked.logs(keras.callbacks.CallbackList([StopAtOnce()], model=model))
    assert checked.outputs_for(model) is None  # a part of the split is not the split's outputs


def test_kit_validates_itself_only_where_keras_would_do_the_same():
    model, _ = _small_model()
    assert EpochValidation.suits(model, _bare(Task))

    class WholeModelEvaluation(Task):  # the generation task: outputs too large to keep
        def evaluate_model(self, model, dataset):
            return {}

    assert not EpochValidation.suits(model, _bare(WholeModelEvaluation))

    class OwnTestStep(keras.Model):
        def test_step(self, data):
            return {}

    inputs = keras.Input((3,))
    assert not EpochValidation.suits(OwnTestStep(inputs, keras.layers.Dense(2)(inputs)), _bare(Task))
    model._jit_compile = True  # XLA on, as Keras holds it (`jit_compile=True` is refused under op determinism)
    assert not EpochValidation.suits(model, _bare(Task))


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
