"""The plugin docs stay true: every hook documented with its exact signature and tested; doc code runs."""

from __future__ import annotations

import inspect
import re
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from kit import hookspecs
from kit.cli import cli
from kit.plugins import get_plugins

DOCS = Path(__file__).resolve().parents[1] / "docs"
TESTS = Path(__file__).resolve().parent
HOOKS = sorted(name for name, f in vars(hookspecs).items() if inspect.isfunction(f) and name.startswith("register_"))


def python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(encoding="utf-8"), flags=re.S)


def module_from(code: str, name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(compile(code, f"<docs {name}>", "exec"), module.__dict__)
    return module


def hook_example(hook: str) -> types.ModuleType:
    text = (DOCS / "hooks.md").read_text(encoding="utf-8")
    section = text.split(f"## {hook}(")[1].split("\n## ")[0]
    return module_from(re.findall(r"```python\n(.*?)```", section, flags=re.S)[0], f"docs_{hook}")


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_signature(hook):
    params = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
    assert f"## {hook}({params})\n" in (DOCS / "hooks.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook):
    # Quoted hook names count: the documented examples below are looked up by name.
    uses = [p for p in TESTS.rglob("test_*.py") if f"{hook}" in p.read_text(encoding="utf-8").replace("HOOKS", "")]
    assert uses, f"no test mentions {hook}"


def test_documented_data_source_works(tmp_path):
    from kit.assembly import data_plan
    from kit.config import DataConfig
    from kit.data import NumberField
    from kit.data.plan import scan

    plugins = get_plugins()
    plugins.pm.register(hook_example("register_data_sources"), name="docs_sources")
    plugins.collect()
    config = types.SimpleNamespace(data=DataConfig(train="squares:50"), project_dir=tmp_path, seed=1)
    reports = scan(data_plan(config), [NumberField("x"), NumberField("target")], "fail")
    assert sum(r.rows for r in reports.values()) == 50


def test_documented_command_works():
    get_plugins().pm.register(hook_example("register_commands"), name="docs_commands")
    result = CliRunner().invoke(cli, ["hello", "world"])
    assert result.output == "hello world\n"


def test_documented_template_hook_works(tmp_path, monkeypatch):
    module = hook_example("register_templates")
    (tmp_path / "template").mkdir()
    (tmp_path / "template" / "kit.yaml.jinja").write_text("task: regression\ndata:\n  train: {{ name }}.csv\n")
    module.__file__ = str(tmp_path / "plugin.py")
    module.Path = Path
    get_plugins().pm.register(module, name="docs_templates")
    listing = CliRunner().invoke(cli, ["templates"])
    assert "squares" in listing.output and "docs_templates" in listing.output
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(cli, ["new", "sq", "--template", "squares"]).exit_code == 0
    assert (tmp_path / "sq" / "kit.yaml").read_text().endswith("train: sq.csv\n")


def test_documented_task_and_callback_examples_load():
    hook_example("register_tasks")
    hook_example("register_callbacks")


@pytest.mark.slow
def test_tutorial_code_runs(tmp_path):
    module = module_from("\n".join(python_blocks("tutorial.md")), "docs_tutorial")
    module.test_rating_task(tmp_path)


@pytest.mark.slow
def test_testing_page_example_runs(request):
    blocks = python_blocks("testing.md")
    module = module_from(blocks[-1], "docs_testing")
    module.test_cli_trains(request.getfixturevalue("kit_project"))


def test_every_task_method_is_in_the_hook_reference():
    import kit

    documented = (DOCS / "hooks.md").read_text(encoding="utf-8")
    public = [name for name, value in vars(kit.Task).items() if callable(value) and not name.startswith("_")]
    internal = {"target_columns", "setup_fields"}  # called by kit, not overridden
    missing = [name for name in public if name not in internal and f"`{name}(" not in documented]
    assert not missing, f"document these kit.Task methods in docs/hooks.md: {missing}"


def test_documented_preprocessing_without_autograph_is_traced_as_it_is(monkeypatch):
    """docs/backbones.md's `do_not_convert` example: kit traces it without AutoGraph's rewrite, same values."""
    import numpy as np
    import tensorflow as tf

    from kit.data.splits import traced_preprocessing
    from tests.data.test_autograph import record_conversions

    family = module_from(python_blocks("backbones.md")[1], "docs_scaled").Scaled
    conversions = record_conversions(monkeypatch)
    preprocess = traced_preprocessing(family.__new__(family))
    rows = tf.data.Dataset.from_tensor_slices({"series": np.array([[0, 51], [255, 102]], np.uint8)}).map(preprocess)
    assert [list(x["series"]) for x in rows.as_numpy_iterator()] == [[0.0, 0.2], [1.0, 0.4]]
    assert "Scaled.preprocess" in conversions and not any("scaled" in name for name in conversions)


def test_documented_input_kind_and_backbone_work_through_every_verb(runner, tmp_path):
    """docs/backbones.md's example: a plugin's new input kind and family, with the built-in classification."""
    import json
    import random

    from kit.testing import register_plugin

    register_plugin(module_from(python_blocks("backbones.md")[0], "docs_series"))
    rng = random.Random(0)
    rows = []
    for _ in range(200):
        rising = rng.random() < 0.5
        series = [(i if rising else 32 - i) + rng.gauss(0, 3) for i in range(32)]
        rows.append([" ".join(f"{v:.2f}" for v in series), "rising" if rising else "falling"])
    from tests.conftest import project, write_csv

    data = write_csv(tmp_path / "sensors.csv", ["series", "label"], rows)
    folder = project(
        tmp_path / "p",
        f"task: classification\ndata:\n  train: {data}\ntrain:\n  epochs: 10\n  learning_rate: 0.01\n  verbose: 0\n",
    )
    result = runner.invoke(cli, ["run", str(folder)])
    assert result.exit_code == 0, result.output
    run_dir = folder / "runs" / "run-1"
    record = json.loads((run_dir / "run.json").read_text())
    assert record["inputs"] == "series" and record["backbone"]["family"] == "conv1d"
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["accuracy"] > 0.9
    assert runner.invoke(cli, ["predict", str(run_dir), str(data)]).output.count('"label"') == 200
    assert runner.invoke(cli, ["eval", str(run_dir), "--data", str(data)]).exit_code == 0
    for fmt in ("keras", "saved_model"):
        result = runner.invoke(cli, ["export", str(run_dir), "--format", fmt])
        assert result.exit_code == 0, result.output
