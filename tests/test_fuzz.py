"""Property-based tests: any input to the config loader, the --set parser and the row readers
gives a valid result or a KitError -- never another exception."""

from __future__ import annotations

import math
import string
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kit.config import DataConfig, build_config, load_config, parse_override
from kit.data import LabelField, NumberField, TextField
from kit.data.plan import DataPlan, scan
from kit.errors import KitError

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20))
yaml_values = st.recursive(
    yaml_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
known_keys = st.sampled_from(
    ["task", "data", "model", "train", "seed", "name", "plugins", "options", "runs_dir", "data.train", "train.epochs"]
)


@FUZZ
@given(st.text(max_size=300))
def test_any_yaml_text_loads_or_raises_kit_error(tmp_path_factory, text):
    folder = tmp_path_factory.mktemp("cfg")
    (folder / "kit.yaml").write_text(text, encoding="utf-8")
    try:
        load_config(folder)
    except KitError:
        pass


@FUZZ
@given(st.dictionaries(st.one_of(known_keys, st.text(max_size=10)), yaml_values, max_size=6))
def test_any_mapping_validates_or_raises_kit_error(raw):
    try:
        config = build_config(raw)
    except KitError:
        return
    assert isinstance(config.task, str) and isinstance(config.data.train, str)


@FUZZ
@given(st.text(max_size=60))
def test_any_override_parses_or_raises_kit_error(item):
    try:
        key, _ = parse_override(item)
    except KitError:
        return
    assert key and all(key.split("."))


cells = st.text(alphabet=string.printable + "é€\x00", max_size=12)


@FUZZ
@given(st.lists(st.lists(cells, min_size=0, max_size=4), max_size=12), st.sampled_from(["fail", "skip"]))
def test_any_csv_scans_or_raises_kit_error(tmp_path_factory, table, policy):
    import csv

    path = tmp_path_factory.mktemp("csv") / "data.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["text", "x", "label"], *table])
    _scan(path, policy)


@FUZZ
@given(st.binary(max_size=200), st.sampled_from(["csv", "jsonl"]), st.sampled_from(["fail", "skip"]))
def test_any_bytes_scan_or_raise_kit_error(tmp_path_factory, data, suffix, policy):
    path = tmp_path_factory.mktemp("raw") / f"data.{suffix}"
    path.write_bytes(b"text,x,label\n" + data if suffix == "csv" else data)
    _scan(path, policy)


def _scan(path: Path, policy: str) -> None:
    try:
        plan = DataPlan(DataConfig(train=str(path)), path.parent, seed=0, schemes={})
        reports = scan(plan, [TextField("text"), NumberField("x"), LabelField("label")], policy)
    except KitError:
        return
    assert reports["train"].rows >= 1


def _schema_paths() -> list[str]:
    import dataclasses

    from kit.config import Config, DataConfig, ModelConfig, TrainConfig

    paths = [f.name for f in dataclasses.fields(Config) if not f.metadata.get("internal")]
    for section, cls in (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig)):
        paths += [f"{section}.{f.name}" for f in dataclasses.fields(cls)]
    return paths


@FUZZ
@given(st.sampled_from(_schema_paths()), yaml_values)
def test_any_value_at_any_real_key_validates_or_raises_kit_error(path, value):
    from kit.config import set_dotted

    raw = {"task": "regression", "data": {"train": "x.csv"}}
    set_dotted(raw, path, value)
    try:
        config = build_config(raw)
    except KitError:
        return
    for section in (config.data, config.model, config.train):
        for item in vars(section).values():
            assert not (isinstance(item, float) and not math.isfinite(item)), f"{path} accepted {item}"
