"""Where `kit predict -o` and `kit export -o` may write, and that a failed or interrupted write leaves nothing.

No TensorFlow here: these are the path checks and the write-then-rename helpers
of `kit.outputs`, including a property test over many output paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kit.errors import KitError, UsageError
from kit.outputs import (
    OutputError,
    check_export_destination,
    check_prediction_output,
    enclosing_run,
    folder_replaced_when_complete,
    replaced_when_complete,
)


def make_tree(root: Path) -> dict[str, Path]:
    """A run, an input file with a link and a hard link to it, an input folder, a user's file, old predictions."""
    run = root / "run"
    (run / "model").mkdir(parents=True)
    (run / "run.json").write_text('{"status": "complete"}')
    (run / "metrics.json").write_text('{"test": {"r2": 0.9}}')
    (run / "history.jsonl").write_text('{"epoch": 1}\n')
    data = root / "in.csv"
    data.write_text("x,y\n1,2\n")
    (root / "link.csv").symlink_to(data)
    os.link(data, root / "hard.csv")
    (root / "texts" / "pos").mkdir(parents=True)
    (root / "texts" / "pos" / "a.txt").write_text("good")
    (root / "mine.csv").write_text("name,phone\nann,123\n")
    (root / "old.csv").write_text("line,y\n2,0.5\n")
    (root / "old.jsonl").write_text('{"line": 2, "y": 0.5}\n')
    (root / "empty.csv").write_text("")
    (root / "results").mkdir()
    (root / "to_run").symlink_to(run)  # a folder link into the run
    return {"run": run, "data": data, "texts": root / "texts"}


def digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink()
    }


@pytest.mark.parametrize(
    "name, message",
    [
        ("in.csv", "would overwrite the input"),
        ("link.csv", "would overwrite the input"),
        ("hard.csv", "would overwrite the input"),
        ("texts/out.csv", "(it is inside that folder)"),
        ("run/history.jsonl", "is inside the run directory"),
        ("run/model/p.csv", "is inside the run directory"),
        ("run/new.csv", "is inside the run directory"),
        ("to_run/new.csv", "is inside the run directory"),
        ("missing/x.csv", "does not exist"),
        ("in.csv/x.csv", "is a file, not a folder"),
        ("results", "is a folder"),
        ("mine.csv", "is not a predictions file kit wrote"),
    ],
)
def test_prediction_output_refused(tmp_path, name, message):
    tree = make_tree(tmp_path)
    with pytest.raises(OutputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_prediction_output(tmp_path / name, [tree["data"], tree["texts"]])


@pytest.mark.parametrize("name", ["p.parquet", "p.json", "p", "p.csv.gz"])
def test_prediction_output_format_is_a_usage_error(tmp_path, name):
    with pytest.raises(UsageError, match="CSV \\(.csv\\) or JSON lines \\(.jsonl\\)"):
        check_prediction_output(tmp_path / name, [])


@pytest.mark.parametrize("name", ["new.csv", "new.jsonl", "new.NDJSON", "old.csv", "old.jsonl", "empty.csv"])
def test_prediction_output_accepted(tmp_path, name):
    tree = make_tree(tmp_path)
    assert check_prediction_output(tmp_path / name, [tree["data"]]) == tmp_path / name


def test_device_output_refused(tmp_path):
    (tmp_path / "full.csv").symlink_to("/dev/full")
    with pytest.raises(OutputError, match="not a plain file"):
        check_prediction_output(tmp_path / "full.csv", [])


def test_run_found_from_any_depth(tmp_path):
    tree = make_tree(tmp_path)
    assert enclosing_run(tree["run"] / "model" / "a" / "b") == tree["run"]
    assert enclosing_run(tmp_path / "texts") is None


def test_written_when_complete_with_a_normal_mode(tmp_path):
    destination = tmp_path / "p.csv"
    old = os.umask(0o022)
    try:
        with replaced_when_complete(destination) as handle:
            handle.write("line,y\n")
            assert not destination.exists()  # nothing at the destination until complete
    finally:
        os.umask(old)
    assert destination.read_text() == "line,y\n"
    assert destination.stat().st_mode & 0o777 == 0o644
    assert os.listdir(tmp_path) == ["p.csv"]


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError, OSError])
def test_failed_write_leaves_the_old_file(tmp_path, stop):
    destination = tmp_path / "p.csv"
    destination.write_text("line,y\n2,1.0\n")
    with pytest.raises(stop):
        with replaced_when_complete(destination) as handle:
            handle.write("line,y\n")
            raise stop()
    assert destination.read_text() == "line,y\n2,1.0\n"
    assert os.listdir(tmp_path) == ["p.csv"]


@pytest.mark.parametrize(
    "name, message",
    [
        ("in.csv", "exists and is not a folder"),
        ("texts", "already exists and is not empty"),
        ("run", "is the run directory itself"),
        ("run/model/v2", "inside the run directory"),
        ("run/checkpoints", "inside the run directory"),
        ("missing/export", "does not exist"),
    ],
)
def test_export_destination_refused(tmp_path, name, message):
    tree = make_tree(tmp_path)
    with pytest.raises(KitError, match=message):
        check_export_destination(tmp_path / name, tree["run"])


@pytest.mark.parametrize("name", ["run/export/keras", "results", "new"])
def test_export_destination_accepted(tmp_path, name):
    tree = make_tree(tmp_path)
    assert check_export_destination(tmp_path / name, tree["run"]) == tmp_path / name


def test_export_folder_appears_only_when_complete(tmp_path):
    destination = tmp_path / "export"
    with folder_replaced_when_complete(destination) as scratch:
        (scratch / "model.keras").write_text("x")
        assert not destination.exists()
    assert os.listdir(tmp_path) == ["export"] and (destination / "model.keras").is_file()


def test_failed_export_leaves_nothing_and_can_be_redone(tmp_path):
    destination = tmp_path / "export"
    with pytest.raises(KeyboardInterrupt):
        with folder_replaced_when_complete(destination) as scratch:
            (scratch / "half.pb").write_text("x")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []
    check_export_destination(destination, tmp_path / "run")  # the same command is accepted again


def test_folder_left_by_a_killed_export_is_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    abandoned = tmp_path / f".export.kit-export-{dead.stdout.strip()}"
    (abandoned / "variables").mkdir(parents=True)
    running = tmp_path / f".export.kit-export-{os.getppid()}"  # a live process: another export in progress
    running.mkdir()
    with folder_replaced_when_complete(tmp_path / "export"):
        pass
    assert not abandoned.exists() and running.exists()


# ------------------------------------------------------------------ property: no output path loses a file

NAMES = ["in.csv", "link.csv", "hard.csv", "mine.csv", "old.csv", "old.jsonl", "empty.csv", "new.csv", "n.jsonl"]
NAMES += ["x.parquet", "results", "texts", "run", "..", ".", "metrics.json", "history.jsonl", "model", "a\nb.csv"]
FOLDERS = [
    "",
    "run",
    "run/model",
    "texts",
    "texts/pos",
    "results",
    "missing",
    "in.csv",
    "run/..",
    "texts/../run",
    "to_run",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(folder=st.sampled_from(FOLDERS), name=st.sampled_from(NAMES))
def test_any_output_path_is_refused_or_loses_nothing(tmp_path_factory, folder, name):
    root = tmp_path_factory.mktemp("out")
    tree = make_tree(root)
    before = digests(root)
    output = root / folder / name if folder else root / name
    try:
        target = check_prediction_output(output, [tree["data"], tree["texts"]])
    except KitError:
        assert digests(root) == before
        return
    with replaced_when_complete(target) as handle:
        handle.write(json.dumps({"line": 2, "y": 1.0}) + "\n")
    after = digests(root)
    changed = {key for key in before if after.get(key) != before[key]}
    assert changed <= {str(target.relative_to(root.resolve()))}, changed
    assert enclosing_run(target.parent) is None


def test_a_planted_link_at_the_temporary_name_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / f".p.csv.kit-writing-{os.getpid()}").symlink_to(victim)
    with replaced_when_complete(tmp_path / "p.csv") as handle:
        handle.write("line,y\n")
    assert victim.read_text() == "precious" and (tmp_path / "p.csv").read_text() == "line,y\n"


def test_a_file_left_by_a_killed_predict_is_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = tmp_path / f".p.csv.kit-writing-{dead.stdout.strip()}"
    left.write_text("line,y\n2,")
    with replaced_when_complete(tmp_path / "p.csv") as handle:
        handle.write("line,y\n")
    assert os.listdir(tmp_path) == ["p.csv"]
