"""Where a run's time goes (run.json "stages"), its model FLOPs utilisation, and the fixed-cost savings
(checkpoints without optimizer slots, the best checkpoint linked to its epoch's file)."""

from __future__ import annotations

import json
import os
from typing import Any

import h5py
import numpy as np
import pytest

from kit.harness import flops
from kit.harness.stages import Stages
from tests.conftest import make_tabular, project
from tests.harness.test_run import run_ok

STAGES = ["start-up", "scan", "adapt", "datasets", "model", "restore", "first step", "training", "saving"]


def test_stages_add_up_and_summarise():
    stages = Stages()
    stages.add("training", 10.0)
    stages.add("first step", 2.0)
    stages.add("training", 5.0)
    stages.add("validation", 1.0)
    stages.add("outputs", 0.04)
    assert stages.record() == {"training": 15.0, "first step": 2.0, "validation": 1.0, "outputs": 0.04}
    assert stages.outside_training() == pytest.approx(2.04)
    line = stages.summary()
    assert line.startswith("kit: 18 s (2 s outside training): ") and "training 15.0" in line
    assert "outputs" not in line  # under a tenth of a second


@pytest.fixture(scope="module")
def timed_run(tmp_path_factory):
    from click.testing import CliRunner

    root = tmp_path_factory.mktemp("timed")
    config = (
        f"task: regression\ndata:\n  train: {make_tabular(root)}\n  target: y\nmodel:\n  hidden_units: [16]\n"
        "train:\n  epochs: 3\n  learning_rate: 0.01\n  verbose: 0\n"
    )
    folder = project(root / "proj", config)
    result = run_ok(CliRunner(), ["run", str(folder)])
    return folder / "runs" / "run-1", result.output


@pytest.mark.slow
def test_run_records_its_stages_and_utilisation(timed_run):
    run_dir, output = timed_run
    record = json.loads((run_dir / "run.json").read_text())
    assert set(STAGES + ["evaluation", "outputs", "callbacks", "validation"]) <= set(record["stages"])
    assert all(seconds >= 0 for seconds in record["stages"].values())
    # Every stage but start-up (before the run's clock starts) happens inside the run's wall time.
    inside = sum(s for name, s in record["stages"].items() if name != "start-up")
    assert inside <= record["wall_seconds"] + 0.5
    figures = record["utilisation"]
    assert figures["peak_flops_per_second"] == 1e11  # KIT_PEAK_FLOPS (tests/conftest.py)
    assert figures["useful_flops_per_epoch"] > 0 and 0 < figures["mfu"] < 1
    assert figures["mfu"] == pytest.approx(figures["achieved_flops_per_second"] / 1e11)
    assert "outside training):" in output and "(model FLOPs utilisation)" in output


@pytest.mark.slow
def test_checkpoints_hold_weights_only_and_the_best_is_a_link(timed_run):
    run_dir, _ = timed_run
    checkpoints = run_dir / "checkpoints"
    newest = sorted(checkpoints.glob("epoch-*.weights.h5"))[-1]
    best = checkpoints / "best.weights.h5"
    with h5py.File(newest) as handle:
        assert "optimizer" not in handle  # Adam's slots would triple the file; resuming reads backup/
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    best_epoch = min(history, key=lambda h: h["val_loss"])["epoch"]
    if best_epoch == len(history):  # the newest epoch is the best: one file on disk, two names
        assert best.stat().st_ino == newest.stat().st_ino
    # Either way the best checkpoint loads into the trained model's architecture.
    import keras

    model = keras.saving.load_model(run_dir / "model" / "model.keras", compile=False)
    model.load_weights(best)


def test_transformer_flops_counts_non_embedding_parameters_per_token():
    import keras_hub

    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=32
    )
    embeddings = sum(int(np.prod(w.shape)) for w in backbone.weights if "embedding" in w.path)
    assert embeddings >= 100 * 8 + 32 * 8  # tokens, positions (and segments)
    lengths = np.array([10.0, 20.0])
    dense = backbone.count_params() - embeddings
    expected = 6 * dense * 30 + 12 * 2 * 8 * (100 + 400)
    assert flops.transformer_flops(backbone, lengths) == pytest.approx(expected)


def test_forward_flops_of_a_dense_layer():
    import keras
    import tensorflow as tf

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    counted = flops.forward_flops(model, tf.zeros((5, 8)))
    assert 2 * 8 * 4 <= counted <= 2 * 8 * 4 + 8  # the multiply-adds, and the bias


def test_forward_flops_is_none_for_what_the_profiler_cannot_read():
    def broken(*args, **kwargs):
        raise ValueError("not a model")

    assert flops.forward_flops(broken, np.zeros((2, 3), np.float32)) is None


def test_peak_is_measured_once_then_read_from_the_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("KIT_PEAK_FLOPS")
    monkeypatch.setenv("KIT_CACHE_DIR", str(tmp_path))
    measured = []
    monkeypatch.setattr(flops, "_measure_peak", lambda: measured.append(1) or 4e10)
    assert flops.peak_flops() == 4e10 and flops.peak_flops() == 4e10
    assert measured == [1]
    assert json.loads((tmp_path / "machine.json").read_text())["peak_flops"] == 4e10
    (tmp_path / "machine.json").write_text("{not json")  # a damaged cache is measured again, never an error
    assert flops.peak_flops() == 4e10 and measured == [1, 1]


def test_a_ceiling_measured_on_a_busy_machine_is_measured_again_when_a_run_beats_it(monkeypatch, tmp_path):
    """A ceiling kept from a busy moment made every later run read past 100%: a run faster than the kept
    ceiling measures it again, and the higher measurement is kept (a busy machine only measures lower)."""
    monkeypatch.delenv("KIT_PEAK_FLOPS")
    monkeypatch.setenv("KIT_CACHE_DIR", str(tmp_path))
    readings = iter([1e11, 2e11, 1.5e11, 1.6e11])
    monkeypatch.setattr(flops, "_measure_peak", lambda seconds=1.0: next(readings))
    assert flops.peak_flops() == 1e11  # measured while the machine was busy
    assert flops.utilisation(6e11, 1.0, 5.0)["mfu"] == 0.6  # a slower run: the kept ceiling, nothing measured
    figures = flops.utilisation(1.2e12, 1.0, 10.0)  # 1.2e11 FLOP/s: past the kept ceiling, measured again
    assert figures["peak_flops_per_second"] == 2e11 and figures["mfu"] == 0.6
    assert json.loads((tmp_path / "machine.json").read_text())["peak_flops"] == 2e11
    # A rate past even a fresh measurement (mixed precision, several devices): the higher ceiling is kept, and
    # the rate too, so that runs reaching it again measure nothing.
    assert flops.peak_flops(at_least=2.5e11) == 2e11  # measured again, twice: 1.5e11 then 1.6e11, lower
    kept = json.loads((tmp_path / "machine.json").read_text())
    assert kept["peak_flops"] == 2e11 and kept["passed_by"] == 2.5e11
    assert flops.peak_flops(at_least=2.4e11) == 2e11  # nothing left to measure: next(readings) would fail
    assert list(tmp_path.iterdir()) == [tmp_path / "machine.json"]  # no temporary file left behind
    for damaged in ('{"key": 1}', '{"key": "x", "peak_flops": "nan"}', "[]", '{"key": "x", "peak_flops": 1e999}',
                    '{"key": "x", "peak_flops": ' + "9" * 500 + "}", "[" * 100_000):  # fmt: skip
        (tmp_path / "machine.json").write_text(damaged)
        assert flops._cached_peak("x") == (0.0, 0.0)


def test_a_run_past_a_fresh_measurement_measures_again_for_longer(monkeypatch, tmp_path):
    """One second of other work reads the ceiling low: a run faster than it measures once more, for longer."""
    monkeypatch.delenv("KIT_PEAK_FLOPS")
    monkeypatch.setenv("KIT_CACHE_DIR", str(tmp_path))
    asked = []
    readings = iter([1.0e11, 2.1e11])

    def measure(seconds=1.0):
        asked.append(seconds)
        return next(readings)

    monkeypatch.setattr(flops, "_measure_peak", measure)
    figures = flops.utilisation(1.1e12, 1.0, 10.0)  # 1.1e11 FLOP/s, past the first reading
    assert asked == [1.0, 3.0] and figures["peak_flops_per_second"] == 2.1e11
    assert json.loads((tmp_path / "machine.json").read_text())["passed_by"] == 0.0


def test_the_ceiling_is_kept_per_thread_count_with_the_default_as_one_per_cpu(monkeypatch):
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    default = flops.machine_key()
    for same in (str(os.cpu_count()), "0", " "):
        monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", same)
        assert flops.machine_key() == default
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", str(os.cpu_count() + 1))
    assert flops.machine_key() != default


def test_a_rate_above_the_ceiling_is_explained_not_shown_past_100_percent(monkeypatch):
    from kit.harness.run import _utilisation_line

    above = {"achieved_flops_per_second": 1.1e11, "peak_flops_per_second": 1.08e11, "mfu": 1.1e11 / 1.08e11}
    line = _utilisation_line(above)  # KIT_PEAK_FLOPS is set in tests: the user's own ceiling
    assert "above KIT_PEAK_FLOPS (108 GFLOP/s)" in line and "measured" not in line and "%" not in line
    monkeypatch.delenv("KIT_PEAK_FLOPS")
    line = _utilisation_line(above)
    assert "above this machine's measured 108 GFLOP/s" in line and "KIT_PEAK_FLOPS" in line and "%" not in line
    below = {"achieved_flops_per_second": 1.1e11, "peak_flops_per_second": 2e11, "mfu": 0.55}
    assert "55% of this machine's measured 200 GFLOP/s" in _utilisation_line(below)


def test_a_ceiling_kept_meanwhile_by_another_run_is_not_lowered(monkeypatch, tmp_path):
    monkeypatch.delenv("KIT_PEAK_FLOPS")
    monkeypatch.setenv("KIT_CACHE_DIR", str(tmp_path))
    key = flops.platform.processor() or flops.platform.machine()
    monkeypatch.setattr(flops, "_cached_peak", _FirstThenOther((1e11, 0.0), (3e11, 0.0)))
    monkeypatch.setattr(flops, "_measure_peak", lambda: 2e11)
    assert flops.peak_flops(at_least=1.5e11) == 3e11  # measured 2e11, but another run kept 3e11 meanwhile
    assert json.loads((tmp_path / "machine.json").read_text())["peak_flops"] == 3e11
    assert key in json.loads((tmp_path / "machine.json").read_text())["key"]


class _FirstThenOther:
    """`_cached_peak` answering `first`, then `then` (another run's write landing during the measurement)."""

    def __init__(self, first, then):
        self.answers = [first, then]

    def __call__(self, key):
        return self.answers.pop(0)


def test_utilisation_needs_work_and_time():
    assert flops.utilisation(None, 1.0, 10.0) is None
    assert flops.utilisation(1e9, 1.0, 0.0) is None
    figures = flops.utilisation(2e12, 0.5, 10.0)  # KIT_PEAK_FLOPS=1e11 in tests
    assert figures["achieved_flops_per_second"] == 1e11 and figures["mfu"] == 1.0


def _trained_bert_classifier(lora: bool, functional: bool = False) -> tuple[Any, dict]:
    """A small BERT classifier after three steps: keras-hub's task class, or (`functional`) a plain functional
    model over the backbone, as kit's own tasks build, trained with kit's optimizer."""
    import keras
    import keras_hub

    from kit.harness.optim import FusedAdamW

    keras.utils.set_random_seed(1)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=20, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=8
    )
    if functional:
        inputs = {name: keras.Input((None,), dtype="int32", name=name) for name in backbone.input}
        model = keras.Model(inputs, keras.layers.Dense(2)(backbone(inputs)["pooled_output"]))
        optimizer = FusedAdamW(keras.optimizers.schedules.CosineDecay(0.05, 10), weight_decay=0.01)
    else:
        model = keras_hub.models.BertTextClassifier(backbone, num_classes=2, preprocessor=None, dropout=0.0)
        optimizer = keras.optimizers.Adam(0.05)
    if lora:
        backbone.enable_lora(2)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])  # fmt: skip
    x = {
        "token_ids": np.array([[2, 5, 6, 3, 0], [2, 7, 3, 0, 0]]),
        "segment_ids": np.zeros((2, 5), "int32"),
        "padding_mask": np.array([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]]),
    }
    model.fit(x, np.array([0, 1]), epochs=3, verbose=0)  # the adapters (or all weights) move away from the start
    return model, x


@pytest.mark.parametrize("functional, lora", [(True, False), (True, True), (False, False)])
def test_model_keras_holds_the_trained_model_as_keras_writes_it_uncompiled(functional, lora, tmp_path):
    """A plain functional model (kit's own tasks) is written itself, as Keras writes it uncompiled: no optimizer
    state, nothing to compile on loading; LoRA models and keras-hub's task classes go through a plain copy.
    Either way the file loads without a warning and answers as the trained model, which saving leaves as it was."""
    import warnings
    import zipfile

    import keras

    from kit.harness.artifacts import model_for_file, write_model_file

    model, x = _trained_bert_classifier(lora, functional)
    steps = int(model.optimizer.iterations.numpy())
    saved = model_for_file(model)
    assert (saved is model) is (functional and not lora)
    path = tmp_path / "model.keras"
    write_model_file(saved, path, trained=saved is model)
    with zipfile.ZipFile(path) as archive:
        compile_config = json.loads(archive.read("config.json"))["compile_config"]
        archive.extract("model.weights.h5", tmp_path)
    with h5py.File(tmp_path / "model.weights.h5") as weights:
        optimizer_group = "optimizer" in weights
    if functional:
        assert compile_config == {} and not optimizer_group
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = keras.saving.load_model(path)
    # keras-hub tasks compile themselves when built: the file must hold the fresh optimizer they expect
    assert not [w for w in caught if "Skipping variable loading" in str(w.message)]
    optimizer = getattr(loaded, "optimizer", None)
    assert optimizer is None or not optimizer.built  # no training state restored
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    assert model.compiled and int(model.optimizer.iterations.numpy()) == steps
    model.fit(x, np.array([0, 1]), epochs=1, verbose=0)  # the trained model goes on as before


@pytest.mark.parametrize("lora", [False, True])
def test_the_copy_saved_as_model_keras_answers_as_the_trained_model(lora):
    """`without_optimizer` copies variable to variable, or through a weights file when LoRA adapters are to be
    merged into the kernels: either way the copy, uncompiled, gives the trained model's answers."""
    from kit.harness.artifacts import without_optimizer

    model, x = _trained_bert_classifier(lora)
    copy = without_optimizer(model)
    assert copy.optimizer is None or not copy.optimizer.built  # no slots to save
    assert not any(getattr(layer, "lora_enabled", False) for layer in copy._flatten_layers())
    np.testing.assert_allclose(copy.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
