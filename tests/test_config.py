"""Config loading: strict validation with file/key/line in every message, overrides, round trips."""

from __future__ import annotations

import re

import pytest

from kit.config import build_config, load_config, parse_override, resolved_dict
from kit.errors import ConfigError
from tests.conftest import project

GOOD = "task: regression\ndata:\n  train: data.csv\n  target: y\ntrain:\n  epochs: 3\n"


def test_loads_defaults_and_values(tmp_path):
    config = load_config(project(tmp_path, GOOD))
    assert config.task == "regression"
    assert config.data.target == ["y"]  # a single column becomes a list
    assert config.train.epochs == 3
    assert config.train.optimizer == "adamw"
    assert config.project_dir == tmp_path.resolve()


def test_unknown_key_names_file_line_and_suggestion(tmp_path):
    project(tmp_path, GOOD + "  epochz: 4\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    message = str(err.value)
    assert "kit.yaml, line 7, key 'train.epochz'" in message
    assert "Did you mean 'epochs'?" in message


def test_wrong_type_says_expected_and_got(tmp_path):
    project(tmp_path, GOOD.replace("epochs: 3", "epochs: three"))
    with pytest.raises(
        ConfigError, match=r"line 6, key 'train.epochs': expected an integer or 'auto', got str 'three'"
    ):
        load_config(tmp_path)


def test_missing_required_key(tmp_path):
    project(tmp_path, "data:\n  train: x.csv\n")
    with pytest.raises(ConfigError, match="key 'task': required key is missing"):
        load_config(tmp_path)


def test_bad_choice_lists_allowed_values(tmp_path):
    project(tmp_path, GOOD + "  optimizer: adagrad\n")
    with pytest.raises(ConfigError, match="expected one of 'adam', 'adamw', 'sgd'"):
        load_config(tmp_path)


def test_invalid_yaml_names_line(tmp_path):
    project(tmp_path, "task: regression\ndata:\n  train: [unclosed\n")
    with pytest.raises(ConfigError, match=r"kit.yaml, line \d+, column \d+: invalid YAML"):
        load_config(tmp_path)


def test_missing_project(tmp_path):
    with pytest.raises(ConfigError, match="No kit.yaml in"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match="No such project or config file"):
        load_config(tmp_path / "nope.yaml")


def test_top_level_not_a_mapping(tmp_path):
    project(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(tmp_path)


@pytest.mark.parametrize(
    "item, key, value",
    [
        ("train.epochs=5", "train.epochs", 5),
        ("train.learning_rate=1e-4", "train.learning_rate", "1e-4"),
        ("data.cache=false", "data.cache", False),
        ("model.hidden_units=[32, 16]", "model.hidden_units", [32, 16]),
        ("train.clip_norm=null", "train.clip_norm", None),
        ("data.train=a=b.csv", "data.train", "a=b.csv"),
    ],
)
def test_parse_override(item, key, value):
    assert parse_override(item) == (key, value)


def test_overrides_are_typed_and_validated(tmp_path):
    project(tmp_path, GOOD)
    config = load_config(tmp_path, ["train.learning_rate=1e-4", "model.hidden_units=[8]", "train.jit_compile=true"])
    assert config.train.learning_rate == pytest.approx(1e-4)
    assert config.model.hidden_units == [8]
    assert config.train.jit_compile is True
    with pytest.raises(ConfigError, match="key 'train.epoch'.*Did you mean 'epochs'"):
        load_config(tmp_path, ["train.epoch=2"])
    with pytest.raises(ConfigError, match="Bad override 'train.epochs'"):
        load_config(tmp_path, ["train.epochs"])


def test_resolved_config_round_trips(tmp_path):
    config = load_config(project(tmp_path, GOOD))
    resolved = resolved_dict(config)
    assert resolved["data"]["train"] == str((tmp_path / "data.csv").resolve())
    assert resolved["name"] == tmp_path.name
    again = build_config(resolved)
    assert again.to_dict() == resolved


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epochs=0", "key 'train.epochs': must be at least 1, got 0"),
        ("data.batch_size=-4", "key 'data.batch_size': must be at least 1, got -4"),
        ("data.test_fraction=1.5", "key 'data.test_fraction': must be between 0 and 0.99, got 1.5"),
        ("model.hidden_units=[64, 0]", "key 'model.hidden_units': must be at least 1, got 0"),
        ("train.learning_rate=-1e-3", "key 'train.learning_rate': must be at least 1e-12"),
    ],
)
def test_out_of_range_values(tmp_path, override, message):
    project(tmp_path, GOOD)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(tmp_path, [override])


def test_non_finite_numbers_are_refused(tmp_path):
    project(tmp_path, GOOD)
    with pytest.raises(
        ConfigError, match="key 'train.learning_rate': expected a finite number or 'auto', got float nan"
    ):
        load_config(tmp_path, ["train.learning_rate=.nan"])


@pytest.mark.parametrize(
    "backbone, expected",
    [
        ("auto", {"epochs": 10, "learning_rate": 1e-3, "warmup_fraction": 0.0}),
        ("bert-small", {"epochs": 10, "learning_rate": 1e-3, "warmup_fraction": 0.0}),
        ("models/minilm", {"epochs": 2, "learning_rate": 5e-5, "warmup_fraction": 0.1}),
    ],
)
def test_auto_training_defaults_depend_on_a_pretrained_backbone(tmp_path, backbone, expected):
    project(tmp_path, f"task: classification\ndata:\n  train: d.csv\nmodel:\n  backbone: {backbone}\n")
    train = load_config(tmp_path).train
    assert {name: getattr(train, name) for name in expected} == expected


def test_explicit_training_values_beat_auto(tmp_path):
    project(tmp_path, "task: classification\ndata:\n  train: d.csv\nmodel:\n  backbone: models/minilm\n")
    config = load_config(tmp_path, ["train.learning_rate=2e-5", "train.epochs=3", "train.warmup_fraction=0"])
    assert (config.train.learning_rate, config.train.epochs, config.train.warmup_fraction) == (2e-5, 3, 0)
    auto = load_config(tmp_path, ["train.epochs=auto"]).train.epochs
    assert auto == 2
