"""The bad-input catalogue (docs/errors.md): every wrong input a user can give, and what kit answers.

Each case builds a small project with one mistake, runs the CLI, and checks:
the message says what was wrong (the fragment below), the exit status, no
traceback, and nothing that existed before the command was changed or
removed. docs/errors.md lists the same cases; a test keeps the two in step.
"""

from __future__ import annotations

import errno
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from kit.cli import cli
from tests.conftest import make_tabular, project, write_csv

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"

REGRESSION = "task: regression\ndata:\n  train: {data}\n  target: y\ntrain:\n  epochs: 1\n  verbose: 0\n"
CLASSIFY = "task: classification\ndata:\n  train: {data}\n  features: [x]\ntrain:\n  epochs: 1\n  verbose: 0\n"


@dataclass
class Case:
    id: str
    area: str
    setup: Callable[[Path, pytest.MonkeyPatch], list[str]]  # builds the mistake, returns the CLI arguments
    message: str
    exit_code: int = 1


CASES: list[Case] = []


def case(area: str, message: str, exit_code: int = 1):
    def register(setup):
        CASES.append(Case(setup.__name__, area, setup, message, exit_code))
        return setup

    return register


def tabular_project(root: Path, extra: str = "") -> Path:
    return project(root / "p", REGRESSION.format(data=make_tabular(root)) + extra)


def labelled(root: Path, rows: list[list[str]], header=("x", "label")) -> Path:
    return write_csv(root / "data.csv", list(header), rows)


# ------------------------------------------------------------------ config


@case("config", "unknown key in train. Did you mean 'epochs'?")
def unknown_key(root, mp):
    return ["run", str(tabular_project(root, "  epochz: 3\n"))]


@case("config", "key 'train.epochs': expected an integer or 'auto', got str 'three'")
def wrong_type(root, mp):
    return ["run", str(tabular_project(root).parent / "p"), "--set", "train.epochs=three"]


@case("config", "key 'data.batch_size': must be at least 1, got 0")
def out_of_range(root, mp):
    return ["run", str(tabular_project(root)), "--set", "data.batch_size=0"]


@case("config", "expected one of 'adam', 'adamw', 'sgd'")
def unknown_choice(root, mp):
    return ["run", str(tabular_project(root)), "--set", "train.optimizer=adamx"]


@case("config", "invalid YAML")
def bad_yaml(root, mp):
    folder = project(root / "p", "task: regression\ndata:\n  train: a.csv\n   target: y\n")
    return ["run", str(folder)]


@case("config", "No kit.yaml in")
def missing_config(root, mp):
    (root / "empty").mkdir()
    return ["run", str(root / "empty")]


@case("config", "No such project or config file")
def missing_config_file(root, mp):
    return ["run", str(root / "nope.yaml")]


@case("config", "key 'task': required key is missing")
def missing_required_key(root, mp):
    return ["run", str(project(root / "p", "data:\n  train: a.csv\n"))]


@case("config", "Bad override 'train.epochs': expected dotted.key=value")
def bad_override_syntax(root, mp):
    return ["run", str(tabular_project(root)), "--set", "train.epochs"]


@case("config", "expected a mapping of keys")
def config_not_a_mapping(root, mp):
    return ["run", str(project(root / "p", "- task\n- data\n"))]


@case("config", "invalid YAML: could not determine a constructor for the tag")
def yaml_with_a_python_tag(root, mp):
    """YAML is parsed with the safe loader: a tag that would construct Python objects is refused."""
    return ["run", str(project(root / "p", "task: !!python/object/apply:os.system ['echo pwned']\n"))]


@case("config", "Unknown task 'clasification'")
def unknown_task(root, mp):
    return ["run", str(project(root / "p", "task: clasification\ndata:\n  train: a.csv\n"))]


@case("config", "task 'regression' takes no options, got colour")
def unknown_task_option(root, mp):
    return ["run", str(tabular_project(root, "options:\n  colour: red\n"))]


# ------------------------------------------------------------------ data


@case("data", "does not exist")
def missing_data_file(root, mp):
    return ["run", str(project(root / "p", REGRESSION.format(data=root / "missing.csv")))]


@case("data", "Column 'y' (data.target) is not in")
def missing_column(root, mp):
    data = write_csv(root / "d.csv", ["x", "z"], [["1", "2"]] * 20)
    return ["run", str(project(root / "p", REGRESSION.format(data=data)))]


@case("data", "line 5: column 'y': 'twelve' is not a number")
def unparseable_number(root, mp):
    rows = [[str(i), str(2 * i)] for i in range(30)]
    rows[3][1] = "twelve"
    data = write_csv(root / "d.csv", ["x", "y"], rows)
    return ["run", str(project(root / "p", REGRESSION.format(data=data)))]


@case("data", "is empty: expected a header line")
def empty_file(root, mp):
    (root / "d.csv").write_text("")
    return ["run", str(project(root / "p", REGRESSION.format(data=root / "d.csv")))]


@case("data", "No usable training rows")
def header_only(root, mp):
    (root / "d.csv").write_text("x,y\n")
    return ["run", str(project(root / "p", REGRESSION.format(data=root / "d.csv")))]


@case("data", "line 3: column 'label': label 'maybe' does not occur in the training data")
def unknown_label(root, mp):
    train = labelled(root, [[str(i), "yes" if i % 2 else "no"] for i in range(40)])
    test = write_csv(root / "test.csv", ["x", "label"], [["1", "yes"], ["2", "maybe"]])
    config = CLASSIFY.format(data=train).replace("  features", f"  test: {test}\n  features")
    return ["run", str(project(root / "p", config))]


@case("data", "line 3: bytes are not valid utf-8 (invalid continuation byte). Set data.encoding")
def wrong_encoding(root, mp):
    (root / "d.csv").write_bytes("x,y\n1,2\ncaf\xe9,3\n".encode("latin-1"))
    return ["run", str(project(root / "p", REGRESSION.format(data=root / "d.csv")))]


@case("data", "line 4: expected 2 fields, got 3")
def ragged_row(root, mp):
    (root / "d.csv").write_text("x,y\n1,2\n2,4\n3,6,9\n4,8\n")
    return ["run", str(project(root / "p", REGRESSION.format(data=root / "d.csv")))]


@case("data", "line 3: column 'y': nan is not a finite number")
def nan_target(root, mp):
    (root / "d.csv").write_text("x,y\n1,2\n2,nan\n3,6\n")
    return ["run", str(project(root / "p", REGRESSION.format(data=root / "d.csv")))]


@case("data", "line 2: invalid JSON")
def malformed_jsonl(root, mp):
    (root / "d.jsonl").write_text('{"x": 1, "y": 2}\n{"x": 2, "y": \n')
    return ["run", str(project(root / "p", REGRESSION.format(data=root / "d.jsonl")))]


@case("data", "data.validation_fraction + data.test_fraction must be below 1")
def splits_leave_nothing_to_train(root, mp):
    return [
        "run",
        str(tabular_project(root)),
        "--set",
        "data.validation_fraction=0.6",
        "--set",
        "data.test_fraction=0.6",
    ]


# ------------------------------------------------------------------ plugins


def plugin_project(root: Path, source: str) -> Path:
    folder = tabular_project(root, "plugins: [local_plugin.py]\n")
    (folder / "local_plugin.py").write_text(source)
    return folder


@case("plugins", "failed to import: NameError: name 'this' is not defined")
def plugin_import_error(root, mp):
    return ["run", str(plugin_project(root, "import kit\nthis is not python\n"))]


@case("plugins", "does not exist (named in `plugins:`")
def plugin_file_missing(root, mp):
    return ["run", str(tabular_project(root, "plugins: [nowhere.py]\n"))]


@case("plugins", "both register a task named 'regression'")
def duplicate_task_name(root, mp):
    source = (
        "import kit\nfrom kit_plugins.regression import Regression\n"
        "class Mine(Regression):\n    name = 'regression'\n"
        "@kit.hookimpl\ndef register_tasks(register):\n    register(Mine)\n"
    )
    return ["run", str(plugin_project(root, source))]


@case("plugins", "failed in register_callbacks: RuntimeError: boom")
def hook_raises(root, mp):
    source = "import kit\n@kit.hookimpl\ndef register_callbacks(register, run):\n    raise RuntimeError('boom')\n"
    return ["run", str(plugin_project(root, source))]


@case("plugins", "it must be a subclass of kit.Task")
def plugin_registers_a_non_task(root, mp):
    source = "import kit\n@kit.hookimpl\ndef register_tasks(register):\n    register(dict)\n"
    return ["run", str(plugin_project(root, source))]


# ------------------------------------------------------------------ templates


@case("templates", "already exists")
def new_into_existing_directory(root, mp):
    (root / "taken").mkdir()
    (root / "taken" / "notes.txt").write_text("mine")
    return ["new", str(root / "taken")]


@case("templates", "is not a valid project name", exit_code=2)
def new_invalid_name(root, mp):
    return ["new", str(root / "my task!")]


@case("templates", "Unknown template", exit_code=2)
def new_unknown_template(root, mp):
    return ["new", str(root / "x"), "--template", "clasification"]


@case("templates", "would write outside")
def template_escapes_its_target(root, mp):
    from kit.templates import Template

    template = root / "evil"  # a plugin's template with a folder whose name renders to ".."
    (template / "{{ '..' }}").mkdir(parents=True)
    (template / "{{ '..' }}" / "escaped.txt").write_text("x")
    mp.setattr("kit.templates.all_templates", lambda: {"evil": Template("evil", template, "", "a plugin")})
    return ["new", str(root / "victim"), "--template", "evil"]


# ------------------------------------------------------------------ run directories


def finished_run(root: Path, task: str = "regression") -> Path:
    run_dir = root / "done"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"status": "complete"}))
    (run_dir / "config.yaml").write_text(f"task: {task}\n")
    return run_dir


@case("run directories", "already holds a complete run")
def run_dir_complete(root, mp):
    return ["run", str(tabular_project(root)), "--run-dir", str(finished_run(root))]


@case("run directories", "holds a run of task 'classification', not 'regression'")
def run_dir_of_another_task(root, mp):
    return ["run", str(tabular_project(root)), "--run-dir", str(finished_run(root, "classification"))]


@case("run directories", "is not a kit run directory")
def run_dir_not_a_run(root, mp):
    (root / "photos").mkdir()
    (root / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")
    return ["run", str(tabular_project(root)), "--run-dir", str(root / "photos")]


@case("run directories", "Cannot write to run directory")
def run_dir_not_writable(root, mp):
    (root / "file").write_text("a file, not a folder")
    return ["run", str(tabular_project(root)), "--run-dir", str(root / "file" / "run")]


@case("run directories", "The disk is full")
def disk_full(root, mp):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(root / "p" / "runs" / "run-1" / "backup"))

    mp.setattr("kit.harness.resume.save_state", full)
    return ["run", str(tabular_project(root))]


@case("run directories", "No run directory at")
def evaluate_a_missing_run(root, mp):
    return ["eval", str(root / "runs" / "run-9")]


@case("run directories", "needs a run of the generation task", exit_code=2)
def generate_from_a_regression_run(root, mp):
    from click.testing import CliRunner

    folder = tabular_project(root)
    assert CliRunner().invoke(cli, ["run", str(folder)]).exit_code == 0
    return ["generate", str(folder / "runs" / "run-1"), "Once upon a time"]


@case("run directories", "needs unsafe deserialisation (it contains Python code, e.g. a Lambda layer)")
def model_needing_unsafe_loading(root, mp):
    """A model.keras with a Lambda layer (arbitrary code) loads only with --unsafe."""
    import keras
    from click.testing import CliRunner

    folder = tabular_project(root)
    assert CliRunner().invoke(cli, ["run", str(folder)]).exit_code == 0
    inputs = keras.Input((1,))
    keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs)).save(folder / "runs/run-1/model/model.keras")
    return ["predict", str(folder / "runs" / "run-1"), str(folder.parent / "table.csv")]


# ------------------------------------------------------------------ the tests


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


@pytest.mark.parametrize("entry", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_explained(runner, tmp_path, monkeypatch, entry):
    argv = entry.setup(tmp_path, monkeypatch)
    before = snapshot(tmp_path)
    result = runner.invoke(cli, argv)
    output = result.output
    assert result.exit_code == entry.exit_code, f"{entry.id}: exit {result.exit_code}\n{output}\n{result.exception!r}"
    assert entry.message in output, f"{entry.id}: {output}"
    assert "Traceback" not in output
    after = snapshot(tmp_path)
    lost = [name for name, digest in before.items() if after.get(name) != digest]
    assert not lost, f"{entry.id} changed or removed {lost}"


def test_catalogue_is_at_least_thirty_cases_and_documented():
    assert len(CASES) >= 30
    doc = DOC.read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", doc, flags=re.MULTILINE))
    assert documented == {c.id for c in CASES}, "docs/errors.md and tests/test_catalogue.py list different cases"
    for entry in CASES:
        row = next(line for line in doc.splitlines() if line.startswith(f"| `{entry.id}` |"))
        assert entry.message.replace("|", "\\|") in row and row.endswith(f"| {entry.exit_code} |"), row
