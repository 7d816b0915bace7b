"""Backbone families and input kinds end to end: each new pairing trains, predicts, evaluates and exports.

From scratch: RoBERTa (byte-level BPE) and BERT over text pairs. Pretrained
(tiny Hugging Face folders made through keras-hub's converters, see
`tests.hf_folders`): RoBERTa over text pairs, ViT and DINOv2 over images.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from kit.cli import cli
from tests.conftest import FILLER, NEGATIVE, POSITIVE, project, write_csv
from tests.hf_folders import dinov2_folder, roberta_folder, vit_folder

pytestmark = pytest.mark.slow


def sentence(rng: random.Random, positive: bool) -> str:
    words = rng.sample(POSITIVE if positive else NEGATIVE, 2) + rng.sample(FILLER, 4)
    rng.shuffle(words)
    return " ".join(words)


@pytest.fixture
def pairs_csv(tmp_path):
    """Two reviews per row, labelled by the second one's sentiment: the model must read the second segment."""
    rng = random.Random(3)
    rows = []
    for _ in range(240):
        a, b = rng.random() < 0.5, rng.random() < 0.5
        rows.append([sentence(rng, a), sentence(rng, b), "pos" if b else "neg"])
    return write_csv(tmp_path / "pairs.csv", ["first", "second", "label"], rows)


def run_ok(runner, args):
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    return result.output


def json_lines(output):
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def every_verb(runner, run_dir, data, formats=("keras", "saved_model", "preset")):
    """predict and eval --data on `data`, then every export format in one `kit export` (each reloaded and
    compared by kit)."""
    predictions = json_lines(run_ok(runner, ["predict", str(run_dir), str(data)]))
    metrics = json.loads(run_ok(runner, ["eval", str(run_dir), "--data", str(data)]).split("\n", 1)[-1])
    output = run_ok(runner, ["export", str(run_dir), *(arg for fmt in formats for arg in ("--format", fmt))])
    assert output.count("reload check passed") == len(formats)
    assert all((run_dir / "export" / fmt / "export.json").is_file() for fmt in formats)
    return predictions, metrics


PAIRS = """task: classification
data:
  train: {data}
  text_column: [first, second]
model:
  backbone: {backbone}
  sequence_length: 32
  vocabulary_size: 300
train:
  epochs: {epochs}
  learning_rate: {lr}
  verbose: 0
"""


def test_bert_from_scratch_learns_text_pairs(runner, tmp_path, pairs_csv):
    folder = project(tmp_path / "p", PAIRS.format(data=pairs_csv, backbone="bert-tiny", epochs=8, lr=0.003))
    run_ok(runner, ["run", str(folder)])
    run_dir = folder / "runs" / "run-1"
    record = json.loads((run_dir / "run.json").read_text())
    assert record["inputs"] == "text_pair" and record["backbone"]["family"] == "bert"
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["accuracy"] > 0.7
    predictions, metrics = every_verb(runner, run_dir, pairs_csv)
    assert len(predictions) == 240 and {p["label"] for p in predictions} <= {"pos", "neg"}
    assert metrics["data"]["examples"] == 240


def test_segments_are_packed_by_keras_hub(tmp_path, pairs_csv):
    """The second text gets segment id 1: BERT sees two segments, not one glued text."""
    from kit.assembly import assemble
    from kit.config import load_config
    from kit.harness.datasets import training_features

    folder = project(tmp_path / "p", PAIRS.format(data=pairs_csv, backbone="bert-tiny", epochs=1, lr=0.001))
    pieces = assemble(load_config(folder))
    from kit.data.plan import scan

    scan(pieces.plan, pieces.fields, "fail")
    pieces.backbone.adapt(training_features(pieces))
    x = pieces.backbone.preprocess({"first": "wonderful film", "second": "dull [SEP] story"})
    segments, mask = np.asarray(x["segment_ids"]), np.asarray(x["padding_mask"])
    assert segments[mask].tolist().count(1) >= 3 and segments[0] == 0


def test_roberta_from_scratch_trains_and_exports(runner, tmp_path, text_csv):
    config = PAIRS.format(data=text_csv, backbone="roberta-tiny", epochs=6, lr=0.003).replace(
        "  text_column: [first, second]\n", ""
    )
    folder = project(tmp_path / "p", config)
    run_ok(runner, ["run", str(folder)])
    run_dir = folder / "runs" / "run-1"
    assert json.loads((run_dir / "run.json").read_text())["backbone"]["family"] == "roberta"
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["accuracy"] > 0.7
    every_verb(runner, run_dir, text_csv)
    import keras_hub

    preset = keras_hub.models.Backbone.from_preset(str(run_dir / "model" / "preset"))
    assert isinstance(preset, keras_hub.models.RobertaBackbone)


def test_pretrained_roberta_folder_fine_tunes_on_pairs(runner, tmp_path, pairs_csv):
    rng = random.Random(0)
    texts = [sentence(rng, rng.random() < 0.5) for _ in range(200)]
    folder_hf = roberta_folder(tmp_path / "roberta", texts)
    config = PAIRS.format(data=pairs_csv, backbone=folder_hf, epochs=3, lr=0.003)
    folder = project(tmp_path / "p", config)
    run_ok(runner, ["run", str(folder)])
    run_dir = folder / "runs" / "run-1"
    record = json.loads((run_dir / "run.json").read_text())
    assert record["backbone"]["family"] == "pretrained-text" and record["inputs"] == "text_pair"
    every_verb(runner, run_dir, pairs_csv)


def image_folder(root, size):
    """Reddish and bluish noise, one sub-folder per label (colour survives a ViT's layer norms; brightness not)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, colour in (("red", [200, 60, 60]), ("blue", [60, 60, 200])):
        (root / label).mkdir(parents=True)
        for i in range(24):
            pixels = np.clip(rng.normal(colour, 30, (size, size, 3)), 0, 255).astype("uint8")
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    return root


@pytest.mark.parametrize("make, image_size", [(vit_folder, 16), (dinov2_folder, 28)], ids=["vit", "dinov2"])
def test_pretrained_image_backbones_classify_images(runner, tmp_path, make, image_size):
    backbone = make(tmp_path / "hf", image_size)
    images = image_folder(tmp_path / "images", 20)
    config = (
        f"task: classification\ndata:\n  train: {images}\n  batch_size: 8\nmodel:\n  backbone: {backbone}\n"
        f"train:\n  epochs: 12\n  learning_rate: 0.01\n  verbose: 0\n"
    )
    folder = project(tmp_path / "p", config)
    run_ok(runner, ["run", str(folder)])
    run_dir = folder / "runs" / "run-1"
    assert json.loads((run_dir / "run.json").read_text())["backbone"]["family"] == "pretrained-image"
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["accuracy"] >= 0.7
    predictions, _ = every_verb(runner, run_dir, images, formats=("keras", "saved_model"))
    assert len(predictions) == 48


def test_pretrained_image_backbone_for_regression(runner, tmp_path):
    from PIL import Image

    backbone = vit_folder(tmp_path / "hf", 16)
    rng = np.random.default_rng(1)
    rows = []
    for i in range(40):
        level = float(rng.uniform(20, 230))
        path = tmp_path / "img" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.full((16, 16, 3), int(level), "uint8")).save(path)
        rows.append([str(path), f"{level:.1f}"])
    data = write_csv(tmp_path / "brightness.csv", ["image", "target"], rows)
    config = (
        f"task: regression\ndata:\n  train: {data}\n  batch_size: 8\nmodel:\n  backbone: {backbone}\n"
        f"train:\n  epochs: 2\n  verbose: 0\n"
    )
    folder = project(tmp_path / "p", config)
    run_ok(runner, ["run", str(folder)])
    predictions = json_lines(run_ok(runner, ["predict", str(folder / "runs" / "run-1"), str(data)]))
    assert len(predictions) == 40 and all("target" in p for p in predictions)
