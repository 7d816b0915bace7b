"""Property-based tests: any input to the config loader, the --set parser, the row readers, `kit new`'s
names and template entries gives a valid result or a KitError -- never another exception."""

from __future__ import annotations

import math
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
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
@example(table=[["", ""], ["0", "0", "0"]], policy="skip")  # no training row left: the test row was checked anyway
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
@given(st.sampled_from(_schema_paths()), yaml_values, st.booleans())
def test_any_value_at_any_real_key_validates_or_raises_kit_error(path, value, strict):
    from kit.config import _Where, set_dotted

    raw = {"task": "regression", "data": {"train": "x.csv"}}
    set_dotted(raw, path, value)
    where = _Where(None)
    where.strict = strict  # kit.yaml's rules, or a saved run's
    try:
        config = build_config(raw, where)
    except KitError:
        return
    for section in (config.data, config.model, config.train):
        for item in vars(section).values():
            assert not (isinstance(item, float) and not math.isfinite(item)), f"{path} accepted {item}"


# ---------------------------------------------------------------- YAML shapes: aliases, anchors, repeated keys

keys = st.sampled_from(["task", "data", "train", "model", "options", "seed", "a", "b", "on", "1", "null", "<<"])
plain = st.sampled_from(["regression", "x.csv", "3", "0.5", "true", "null", "[1, 2]", "{a: 1}", "''"])


@st.composite
def yaml_documents(draw) -> str:
    """Block-style YAML whose values may define anchors, use aliases (defined or not) and repeat keys."""
    lines, anchors = [], []
    for _ in range(draw(st.integers(1, 8))):
        indent = "  " * draw(st.integers(0, 2))
        key = draw(keys)
        choice = draw(st.integers(0, 3))
        if choice == 0 or not anchors:
            value = draw(plain)
        elif choice == 1:
            value = "*" + draw(st.sampled_from(anchors + ["missing"]))
        else:
            count = draw(st.integers(1, 12))
            value = "[" + ", ".join("*" + draw(st.sampled_from(anchors)) for _ in range(count)) + "]"
        if draw(st.booleans()):
            anchors.append(f"a{len(anchors)}")
            value = f"&{anchors[-1]} {value}" if not value.startswith("*") else value
        lines.append(f"{indent}{key}: {value}")
    return "\n".join(lines) + "\n"


@FUZZ
@given(yaml_documents())
def test_any_yaml_with_aliases_loads_quickly_or_raises_kit_error(tmp_path_factory, text):
    import time

    folder = tmp_path_factory.mktemp("aliases")
    (folder / "kit.yaml").write_text(text, encoding="utf-8")
    started = time.perf_counter()
    try:
        load_config(folder)
    except KitError:
        pass
    assert time.perf_counter() - started < 1, text


@FUZZ
@given(st.integers(1, 12), st.integers(2, 12))
def test_nested_aliases_are_refused_exactly_past_the_bound(tmp_path_factory, depth, fan_out):
    from kit.config import MAX_VALUES, _load_yaml

    levels = [f"l0: &l0 {'[' + ', '.join(['x'] * fan_out) + ']'}"]
    levels += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fan_out)}]" for i in range(1, depth)]
    text = "\n".join(levels) + "\n"
    expanded = 1 + sum(2 + sum(fan_out**k for k in range(1, i + 2)) for i in range(depth))  # keys + lists + items
    try:
        _load_yaml(text, None)
    except KitError as exc:
        assert expanded > MAX_VALUES and "YAML aliases" in str(exc)
        return
    assert expanded <= MAX_VALUES


@FUZZ
@given(st.lists(st.sampled_from(["task", "data", "seed", "x", "y"]), min_size=2, max_size=6), st.data())
def test_a_repeated_key_is_always_refused(tmp_path_factory, names, data):
    repeated = data.draw(st.sampled_from(names))
    body = [f"{name}: 1" for name in dict.fromkeys(names)] + [f"{repeated}: 2"]
    folder = tmp_path_factory.mktemp("dup")
    (folder / "kit.yaml").write_text("\n".join(body) + "\n", encoding="utf-8")
    with pytest.raises(KitError, match=f"key '{repeated}' is given twice"):
        load_config(folder)


@FUZZ
@given(st.lists(st.text(max_size=30), max_size=3))
def test_any_overrides_load_or_raise_kit_error(tmp_path_factory, items):
    folder = tmp_path_factory.mktemp("sets")
    (folder / "kit.yaml").write_text("task: regression\ndata:\n  train: a.csv\n", encoding="utf-8")
    try:
        load_config(folder, items)
    except KitError:
        pass


# ---------------------------------------------------------------- project names and template names


@FUZZ
@given(st.text(max_size=80))
def test_any_project_name_is_valid_or_refused_with_a_valid_suggestion(name):
    from kit.errors import UsageError
    from kit.templates import check_name

    try:
        check_name(name)
    except UsageError as exc:
        suggestion = str(exc).rsplit("Try: kit new ", 1)[1]
        check_name(suggestion)


@FUZZ
@given(st.text(max_size=20))
def test_a_template_entry_renders_to_a_plain_name_or_is_refused(value):
    from kit.templates import _destination_name

    try:
        name = _destination_name("{{ value }}.txt", {"value": value})
    except KitError:
        return
    assert name not in ("", ".", "..") and not any(c in name for c in "/\\") and name.isprintable()
