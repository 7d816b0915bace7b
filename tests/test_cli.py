"""The command line: help for every command, listings, no TensorFlow in fast commands, clean errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kit.cli import cli

COMMANDS = ["run", "eval", "predict", "export", "tasks", "plugins", "new", "templates"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(runner, command):
    result = runner.invoke(cli, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage: " in result.output


@pytest.mark.parametrize("argv", [["--help"], ["tasks"], ["plugins"], ["templates"], ["new", "demo_x"]])
def test_fast_commands_do_not_import_tensorflow(tmp_path, argv):
    code = (
        "import sys; from kit.cli import cli\n"
        f"try:\n    cli({argv!r}, prog_name='kit')\nexcept SystemExit:\n    pass\n"
        "print('TF' if 'tensorflow' in sys.modules else 'NO-TF', file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.stderr.strip().endswith("NO-TF"), result.stderr


def test_tasks_json(runner):
    rows = json.loads(runner.invoke(cli, ["tasks", "--json"]).output)
    by_name = {r["name"]: r for r in rows}
    assert by_name["classification"]["package"] == "kit"
    assert "text" in by_name["regression"]["inputs"]


def test_plugins_json_shows_hooks(runner):
    rows = json.loads(runner.invoke(cli, ["plugins", "--json"]).output)
    hooks = {r["name"]: r["hooks"] for r in rows}
    assert hooks["kit_plugins.sources"] == ["register_data_sources"]


def test_user_mistakes_exit_1_without_traceback(runner, tmp_path):
    result = runner.invoke(cli, ["run", str(tmp_path)])
    assert result.exit_code == 1
    assert "Error: No kit.yaml in" in result.output
    assert "Traceback" not in result.output


def test_bad_set_syntax(runner, tmp_path):
    (tmp_path / "kit.yaml").write_text("task: regression\ndata:\n  train: x.csv\n")
    result = runner.invoke(cli, ["run", str(tmp_path), "--set", "train.epochs"])
    assert result.exit_code == 1
    assert "Bad override 'train.epochs'" in result.output


def test_unknown_task_in_config(runner, tmp_path):
    (tmp_path / "x.csv").write_text("a,label\n1,x\n")
    (tmp_path / "kit.yaml").write_text("task: clasification\ndata:\n  train: x.csv\n")
    result = runner.invoke(cli, ["run", str(tmp_path)])
    assert result.exit_code == 1
    assert "Unknown task 'clasification'" in result.output


def test_eval_of_a_folder_that_is_not_a_run(runner, tmp_path):
    result = runner.invoke(cli, ["eval", str(tmp_path)])
    assert result.exit_code == 1
    assert "is not a kit run directory" in result.output


EXIT_PROBE = """
import atexit, gc, sys
if {tensorflow}:
    sys.modules.setdefault("tensorflow", sys)  # stands for a loaded TensorFlow without its 3 s import
atexit.register(lambda: print("collects at exit:", gc.isenabled(), gc.get_freeze_count() == 0))
sys.argv = ["kit", "--version"]
from kit.cli import main
main()
"""


@pytest.mark.parametrize("tensorflow", [True, False])
def test_a_process_that_loaded_tensorflow_skips_the_last_collection(tensorflow):
    """Python's last collection over a trained model's objects took 1.7-1.9 s after `kit run` had finished."""
    done = subprocess.run([sys.executable, "-c", EXIT_PROBE.format(tensorflow=tensorflow)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "kit, version" in done.stdout
    assert done.stdout.strip().endswith(
        "collects at exit: False False" if tensorflow else "collects at exit: True True"
    )


OPTIONAL_PROBE = """
import sys
if {first!r}:
    import pandas
from kit.commands import quiet_tensorflow
quiet_tensorflow()
from keras.src.trainers.data_adapters import array_slicing
print("after import:", sorted(m for m in ("sklearn", "pandas") if m in sys.modules), "keras has pandas:",
      array_slicing.pandas is not None)
import sklearn, pandas  # the stand-ins below: still importable once Keras is imported
print("stand-ins:", sklearn.STAND_IN, pandas.STAND_IN)
"""


def stand_ins(folder):
    """Packages named sklearn and pandas, enough for Keras's import, that say they are not the real ones."""
    (folder / "sklearn").mkdir()
    (folder / "sklearn" / "__init__.py").write_text("STAND_IN = True\n__version__ = '0'\n")
    (folder / "pandas").mkdir()
    (folder / "pandas" / "__init__.py").write_text("STAND_IN = True\nclass Series: pass\nclass DataFrame: pass\n")
    return {**os.environ, "PYTHONPATH": str(folder)}


@pytest.mark.parametrize(
    "variables, first, expected",
    [
        ({}, False, "after import: [] keras has pandas: False"),
        ({"KIT_TF_LOGS": "1"}, False, "after import: [] keras has pandas: False"),
        ({"KIT_KERAS_EXTRAS": "1"}, False, "after import: ['pandas', 'sklearn'] keras has pandas: True"),
        ({}, True, "after import: ['pandas'] keras has pandas: True"),  # a plugin imported it first: kept
    ],
)
def test_commands_import_keras_without_scikit_learn_and_pandas(tmp_path, variables, first, expected):
    """Keras imports both whenever they are installed (2.0-2.4 s and 120 MB of a command's start-up); kit's
    commands use neither. Stand-ins that are not the real packages show what Keras touched."""
    env = {**stand_ins(tmp_path), **variables}
    done = subprocess.run([sys.executable, "-c", OPTIONAL_PROBE.format(first=first)], capture_output=True,
                          text=True, timeout=120, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout
    assert "stand-ins: True True" in done.stdout


NEEDS_PANDAS_PROBE = """
import sys
from kit.commands import quiet_tensorflow
from kit.errors import KitError
try:
    quiet_tensorflow()
except KitError as exc:
    print("kit error:", exc)
import pandas
print("pandas afterwards:", pandas.STAND_IN)
"""


def test_a_module_that_needs_pandas_while_tensorflow_loads_is_named(tmp_path):
    """Whatever imports pandas during TensorFlow's import (here a stand-in TensorFlow) gets kit's message and
    its way out, and the hiding ends with the import."""
    env = stand_ins(tmp_path)
    (tmp_path / "tensorflow").mkdir()
    (tmp_path / "tensorflow" / "__init__.py").write_text("import pandas\n")
    done = subprocess.run([sys.executable, "-c", NEEDS_PANDAS_PROBE], capture_output=True, text=True, timeout=60,
                          env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "kit error: Something imported while TensorFlow loaded needs pandas" in done.stdout
    assert "set KIT_KERAS_EXTRAS=1" in done.stdout
    assert "pandas afterwards: True" in done.stdout


def test_keras_still_takes_a_dataframe_after_the_commands_import():
    pandas = pytest.importorskip("pandas")
    code = (
        "from kit.commands import quiet_tensorflow; quiet_tensorflow()\n"
        "import keras, numpy, pandas\n"
        "model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, kernel_initializer='ones')])\n"
        "frame = pandas.DataFrame(numpy.arange(6.0).reshape(2, 3), columns=list('abc'))\n"
        "print(model.predict(frame, verbose=0).ravel().tolist())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("[3.0, 12.0]"), (done.stdout, pandas.__version__)
