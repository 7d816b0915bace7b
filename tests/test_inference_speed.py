"""`kit predict` and `kit eval --data` on texts run as `kit run` evaluates: texts of like length batched
together, each batch cut to its longest text. Answers stay those of the padded model, in the file's order.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import keras
import numpy as np
import pytest

from kit import inference as saved
from kit.cli import cli
from kit.evaluation import split_metrics
from tests.conftest import FILLER, NEGATIVE, POSITIVE, project, trained_run, write_csv

TEXT = """task: classification
data:
  train: {data}
  batch_size: 8
model:
  backbone: bert-tiny
  sequence_length: 48
train:
  epochs: 1
  verbose: 0
"""


def uneven_reviews(path: Path, count: int, seed: int) -> Path:
    """Reviews of 1 to 30 words in random order, so file order mixes short and long texts in every batch."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        positive = rng.random() < 0.5
        words = [rng.choice(POSITIVE if positive else NEGATIVE)] + rng.sample(FILLER * 6, rng.randrange(0, 30))
        rng.shuffle(words)
        rows.append([" ".join(words), "pos" if positive else "neg"])
    return write_csv(path, ["text", "label"], rows)


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("text")
    folder = project(root / "p", TEXT.format(data=uneven_reviews(root / "train.csv", 96, seed=1)))
    return trained_run(folder, root / "cache")


def padded_outputs(trained: saved.TrainedModel, source: Path) -> np.ndarray:
    """The model's outputs with every text padded to model.sequence_length, in file order."""
    from kit.data.pipeline import examples
    from kit.data.plan import scan

    plan, fields = trained.plan_for(str(source), with_targets=False)
    rows = scan(plan, fields, "fail", learn=False)["train"].rows
    raw = examples(plan, "train", trained.kind.fields, [], rows)
    batches = raw.map(trained.backbone.preprocess).batch(8)
    return np.concatenate([np.asarray(trained.model.predict_on_batch(batch)) for batch in batches])


def record_widths(trained, monkeypatch) -> list[int]:
    """The text length of every batch the model is given (through its function traced for all lengths)."""
    widths = []
    traced_forward = trained._traced_forward

    def recording(inputs, width):
        forward = traced_forward(inputs, width)
        return lambda batch: widths.append(batch["token_ids"].shape[1]) or forward(batch)

    monkeypatch.setattr(trained, "_traced_forward", recording)
    return widths


def test_predictions_keep_file_order_and_the_padded_answers(text_run, tmp_path, monkeypatch):
    import kit.data.pipeline

    monkeypatch.setattr(kit.data.pipeline, "GROUP_WINDOW", 3)  # chunks of 24 rows: 12 full chunks and 12 rows
    source = uneven_reviews(tmp_path / "new.csv", 300, seed=2)
    trained = saved.TrainedModel(text_run)
    assert trained.trimmed
    expected = padded_outputs(trained, source)
    widths = record_widths(trained, monkeypatch)
    predictions = list(trained.predict_rows(str(source)))
    assert [p["line"] for p in predictions] == list(range(2, 302))
    probabilities = np.array([[p["probabilities"][name] for name in ("neg", "pos")] for p in predictions])
    np.testing.assert_allclose(probabilities, keras.ops.softmax(expected).numpy(), atol=1e-5)
    # Each chunk of 3 batches shortest first, each batch cut to its longest text: never all padded to 48.
    chunks = [widths[i : i + 3] for i in range(0, len(widths), 3)]
    assert len(widths) == 38 and all(chunk == sorted(chunk) for chunk in chunks) and max(widths) < 48
    # One traced function for every length of every chunk (Keras's predict_on_batch traced twice).
    assert len(trained._forwards) == 1
    assert next(iter(trained._forwards.values())).experimental_get_tracing_count() == 1


def test_eval_on_data_gives_the_padded_metrics(text_run, tmp_path, monkeypatch):
    source = uneven_reviews(tmp_path / "labelled.csv", 200, seed=3)
    trained = saved.TrainedModel(text_run)
    labels = np.array([row.split(",")[-1] == "pos" for row in source.read_text().splitlines()[1:]])
    padded = padded_outputs(trained, source)
    widths = []
    monkeypatch.setattr(
        saved, "split_metrics", lambda model, task, batches, *rest: widths.extend(
            int(x["token_ids"].shape[1]) for x, _ in batches) or split_metrics(model, task, batches, *rest)
    )  # fmt: skip
    metrics = trained.evaluate(str(source))["data"]
    assert widths == sorted(widths) and max(widths) < 48  # all examples shortest first, batches cut
    assert metrics["examples"] == 200
    assert metrics["accuracy"] == pytest.approx(float(np.mean((padded.argmax(axis=1) == 1) == labels)))
    log_probabilities = keras.ops.log_softmax(padded).numpy()
    expected_loss = -float(np.mean(log_probabilities[np.arange(200), labels.astype(int)]))
    assert metrics["loss"] == pytest.approx(expected_loss, abs=1e-5)


def test_eval_and_predict_of_texts_have_no_source_rewritten_by_autograph(text_run, tmp_path, runner, monkeypatch):
    """AutoGraph's rewrite of kit's tf.data functions and text preprocessing cost 0.7 s of every command."""
    from tests.data.test_autograph import record_conversions

    conversions = record_conversions(monkeypatch)
    source = uneven_reviews(tmp_path / "labelled.csv", 20, seed=5)
    assert runner.invoke(cli, ["eval", str(text_run), "--data", str(source)]).exit_code == 0
    assert runner.invoke(cli, ["predict", str(text_run), str(source)]).exit_code == 0
    assert conversions == []


def test_eval_command_on_data(text_run, tmp_path, runner):
    source = uneven_reviews(tmp_path / "labelled.csv", 40, seed=4)
    result = runner.invoke(cli, ["eval", str(text_run), "--data", str(source)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.split("\n", 1)[-1])["data"]["examples"] == 40


@pytest.mark.parametrize(
    "outputs",
    ["tokens x classes", "tokens", "tokens of sequence_length", "two heads"],
)
def test_models_whose_outputs_are_not_one_per_example_are_not_cut(text_run, outputs):
    """A per-token output would come out cut too, and several outputs are not put back in order."""
    trained = saved.TrainedModel(text_run)
    tokens = keras.Input((None,), dtype="int32", name="token_ids")
    embedded = keras.layers.Embedding(10, 4)(tokens)
    if outputs == "tokens x classes":
        result = keras.layers.Dense(3)(embedded)  # (batch, None, 3)
    elif outputs == "tokens":
        result = keras.layers.Reshape((-1,))(keras.layers.Dense(1)(embedded))  # (batch, None)
    elif outputs == "tokens of sequence_length":
        fixed = keras.Input((48,), dtype="int32", name="token_ids")
        tokens, result = fixed, keras.layers.Reshape((48,))(keras.layers.Dense(1)(keras.layers.Embedding(10, 4)(fixed)))
    else:
        pooled = keras.layers.GlobalAveragePooling1D()(embedded)
        result = [keras.layers.Dense(2)(pooled), keras.layers.Dense(1)(pooled)]
    trained.model = keras.Model(tokens, result)
    trained.__dict__.pop("trimmed", None)
    assert not trained.trimmed
