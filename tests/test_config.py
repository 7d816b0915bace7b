"""Config loading: strict validation with file/key/line in every message, overrides, round trips."""

from __future__ import annotations

import dataclasses
import os
import re
import time
import typing

import pytest

import kit
from kit.config import (
    RANGES,
    Config,
    DataConfig,
    ModelConfig,
    TrainConfig,
    build_config,
    check_inputs,
    check_monitor,
    load_config,
    parse_override,
    resolved_dict,
)
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
        ("train.epochs=0", "key 'train.epochs': must be between 1 and 1,000,000, got 0"),
        ("data.batch_size=-4", "key 'data.batch_size': must be between 1 and 1,048,576, got -4"),
        ("data.test_fraction=1.5", "key 'data.test_fraction': must be between 0 and 0.99, got 1.5"),
        ("model.hidden_units=[64, 0]", "key 'model.hidden_units': must be between 1 and 65,536, got 0"),
        ("train.learning_rate=-1e-3", "key 'train.learning_rate': must be between 1e-12 and 10"),
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
    (tmp_path / "models" / "minilm").mkdir(parents=True)  # a pretrained folder (its contents are read later)
    project(tmp_path, f"task: classification\ndata:\n  train: d.csv\nmodel:\n  backbone: {backbone}\n")
    train = load_config(tmp_path).train
    assert {name: getattr(train, name) for name in expected} == expected


def test_explicit_training_values_beat_auto(tmp_path):
    (tmp_path / "models" / "minilm").mkdir(parents=True)
    project(tmp_path, "task: classification\ndata:\n  train: d.csv\nmodel:\n  backbone: models/minilm\n")
    config = load_config(tmp_path, ["train.learning_rate=2e-5", "train.epochs=3", "train.warmup_fraction=0"])
    assert (config.train.learning_rate, config.train.epochs, config.train.warmup_fraction) == (2e-5, 3, 0)
    auto = load_config(tmp_path, ["train.epochs=auto"]).train.epochs
    assert auto == 2


# ---------------------------------------------------------------- YAML: aliases, keys, the file


def test_small_anchors_and_merge_keys_still_work(tmp_path):
    text = (
        "task: regression\ndata:\n  <<: {train: a.csv, batch_size: 8}\n  target: &t y\n  batch_size: 16\n"
        "options: {again: *t}\n"
    )
    config = load_config(project(tmp_path, text))
    assert (config.data.train, config.data.batch_size, config.options) == ("a.csv", 16, {"again": "y"})


def test_billion_laughs_is_refused_before_it_is_expanded(tmp_path):
    levels = "".join(f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 30))
    project(tmp_path, GOOD + "options:\n  l0: &l0 [lol]\n" + levels)
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"kit.yaml, line \d+: YAML aliases \(such as \*l\d+\) expand this config"):
        load_config(tmp_path)
    assert time.perf_counter() - started < 2  # 10**29 values are never built


@pytest.mark.parametrize(
    "text, message",
    [
        ("options: &a {b: *a}\n", r"line 7: alias \*a is used inside the value it names"),
        ("options: &a [1, [2, *a]]\n", r"line 7: alias \*a is used inside the value it names"),
        ("model:\n  dropout: 0.1\n  dropout: 0.2\n", r"line 9: key 'model.dropout' is given twice \(lines 8 and 9\)"),
        ("options:\n  a: [{x: 1, x: 2}]\n", r"line 8: key 'x' is given twice"),
        ("2: x\n", r"line 7: key '2' is read by YAML as a number"),
        ("? [a, b]\n: c\n", r"line 7: a key must be text"),
        ("options: {2024-01-01: x}\n", r"key '2024-01-01' is read by YAML as a date"),
    ],
)
def test_yaml_shape_mistakes_name_the_line(tmp_path, text, message):
    project(tmp_path, GOOD + text)
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path)


def test_a_byte_order_mark_is_allowed(tmp_path):
    (tmp_path / "kit.yaml").write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert load_config(tmp_path).task == "regression"


def test_a_config_that_is_not_a_file_is_never_opened(tmp_path):
    os.mkfifo(tmp_path / "kit.yaml")  # opening it would block forever
    with pytest.raises(ConfigError, match="is not a regular file"):
        load_config(tmp_path)


# ---------------------------------------------------------------- where a mistake came from


def test_a_set_mistake_names_the_set_not_the_file(tmp_path):
    project(tmp_path, GOOD)
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, ["train.epochs=three"])
    assert str(err.value).startswith("--set train.epochs=three, key 'train.epochs': expected an integer")
    with pytest.raises(ConfigError, match=r"^--set data=\{train: a, bogus: 1\}, key 'data.bogus': unknown key"):
        load_config(tmp_path, ["data={train: a, bogus: 1}"])


def test_set_below_a_value_is_refused_not_replaced(tmp_path):
    project(tmp_path, GOOD)
    with pytest.raises(ConfigError, match="'data' is int 3, not a section"):
        load_config(tmp_path, ["data=3", "data.train=x"])
    assert load_config(tmp_path, ["model.dropout=0.2"]).model.dropout == 0.2  # a missing section is created


# ---------------------------------------------------------------- values


def test_every_integer_key_has_an_upper_bound():
    for key, hint in _schema_hints():
        if int in _scalars(hint):
            assert key in RANGES and RANGES[key][1] is not None, f"{key} needs an upper bound in RANGES"


def _schema_hints():
    for prefix, cls in (("", Config), ("data.", DataConfig), ("model.", ModelConfig), ("train.", TrainConfig)):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not f.metadata.get("internal") and not dataclasses.is_dataclass(hints[f.name]):
                yield prefix + f.name, hints[f.name]


def _scalars(hint):
    args = typing.get_args(hint)
    return {hint} if not args else set().union(*(_scalars(a) for a in args))


@pytest.mark.parametrize("value, expected", [(",", ","), ("';'", ";"), ('"\\t"', "\t"), ("\\t", "\t"), ("tab", "\t")])
def test_delimiters(tmp_path, value, expected):
    project(tmp_path, GOOD)
    assert load_config(tmp_path, [f"data.delimiter={value}"]).data.delimiter == expected


@pytest.mark.parametrize("value", ["ab", "''", '"\\n"', "'\"'"])
def test_bad_delimiters(tmp_path, value):
    project(tmp_path, GOOD)
    with pytest.raises(ConfigError, match="key 'data.delimiter'"):
        load_config(tmp_path, [f"data.delimiter={value}"])


def test_negative_zero_is_zero_and_hidden_units_may_be_empty(tmp_path):
    project(tmp_path, GOOD)
    config = load_config(tmp_path, ["model.dropout=-0.0", "model.hidden_units=[]"])
    assert str(config.model.dropout) == "0.0" and config.model.hidden_units == []  # [] is a linear model


def test_target_among_the_inputs_is_refused(tmp_path):
    project(tmp_path, GOOD)
    config = load_config(tmp_path, ["data.features=[x, y]"])
    with pytest.raises(
        ConfigError, match=r"--set data.features=\[x, y\], key 'data.features': names the target column y"
    ):
        check_inputs(config, ["y"], "tabular")
    check_inputs(load_config(tmp_path, ["data.text_column=y"]), ["y"], "tabular")  # text_column unused: fine
    with pytest.raises(ConfigError, match="key 'data.text_column': names the target column y"):
        check_inputs(load_config(tmp_path, ["data.text_column=y"]), ["y"], "text")
    with pytest.raises(ConfigError, match="key 'data.image_column': names the target column y"):
        check_inputs(load_config(tmp_path, ["data.image_column=y"]), ["y"], "image")


class _Task(kit.Task):
    name = "fake"

    def __init__(self, metrics):
        self._metrics = metrics

    def metrics(self):
        return self._metrics


def test_monitor_is_checked_against_what_the_run_reports(tmp_path):
    project(tmp_path, GOOD)
    task = _Task(["mae", type("Metric", (), {"name": "rmse"})()])
    for monitor in ("loss", "val_loss", "mae", "val_rmse"):
        check_monitor(load_config(tmp_path, [f"train.monitor={monitor}"]), task)
    with pytest.raises(ConfigError, match="'val_rsme' is not reported by task 'regression'. Did you mean 'val_rmse'"):
        check_monitor(load_config(tmp_path, ["train.monitor=val_rsme"]), task)
    check_monitor(load_config(tmp_path, ["train.monitor=anything"]), _Task([object()]))  # unnamed: Keras decides
    from kit_plugins.generation.task import GenerationTask

    generation = GenerationTask.__new__(GenerationTask)  # keras-hub's causal LMs add a metric of their own
    generation.metrics = lambda: ["perplexity"]
    check_monitor(load_config(tmp_path, ["train.monitor=val_sparse_categorical_accuracy"]), generation)


def test_a_saved_runs_config_loads_under_the_rules_it_was_trained_with(tmp_path):
    """`features: []` once meant every column; a run trained so must still load for eval/predict."""
    raw = {"task": "regression", "data": {"train": "a.csv", "features": [], "categorical": ["c"]}}
    assert build_config(raw).data.features == []
    project(tmp_path, GOOD)
    with pytest.raises(ConfigError, match="an empty list names no column"):
        load_config(tmp_path, ["data.features=[]"])


@pytest.mark.parametrize("value, expected", [("#", "#"), ("null", None), ("~", None), ("a: b: c", "a: b: c")])
def test_set_values_that_yaml_reads_oddly(value, expected):
    assert parse_override(f"data.delimiter={value}") == ("data.delimiter", expected)


@pytest.mark.parametrize("value", ["[x1, x2", "{a: 1", "'open"])
def test_set_lists_and_mappings_that_do_not_parse_are_refused(value):
    with pytest.raises(ConfigError, match=f"--set data.features={re.escape(value)}: invalid YAML"):
        parse_override(f"data.features={value}")
