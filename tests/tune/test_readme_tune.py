"""The README's tuning section stays true: its tune section and commands run on the quickstart's demo project."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
SECTION = README.split("## Tuning and comparing runs\n")[1].split("\n## ")[0]


def kit(argv: list[str], cwd: Path) -> str:
    result = subprocess.run([sys.executable, "-m", "kit", *argv], cwd=cwd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"kit {shlex.join(argv)}\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.mark.slow
def test_readme_tuning_commands_run(tmp_path):
    (tune_yaml,) = re.findall(r"```yaml\n(.*?)```", SECTION, flags=re.S)
    (commands,) = re.findall(r"```sh\n(.*?)```", SECTION, flags=re.S)
    kit(["new", "demo"], tmp_path)
    with open(tmp_path / "demo" / "kit.yaml", "a", encoding="utf-8") as handle:
        handle.write(tune_yaml)
    outputs = [kit(shlex.split(line)[1:], tmp_path) for line in commands.splitlines() if line.startswith("kit ")]
    assert len(outputs) == 4
    study = optuna.load_study(study_name="demo", storage=f"sqlite:///{tmp_path / 'demo' / 'tune.db'}")
    assert len(study.trials) == 4
    assert "tune-demo/trial-0" in outputs[1] and "validation.accuracy" in outputs[1].splitlines()[0]
    assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"
    rerun = json.loads((tmp_path / "demo" / "runs" / "run-1" / "metrics.json").read_text())
    assert rerun["validation"]["loss"] == study.best_value  # the best config trains to the same metric
