"""The README stays true: its commands run, its config reference matches the schema, CI runs its test command."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from kit.config import reference_markdown

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def bash_lines() -> list[str]:
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        lines += [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
    return lines


def test_config_reference_is_current():
    section = README.split("<!-- config-reference:start -->\n")[1].split("<!-- config-reference:end -->")[0]
    assert section == reference_markdown(), (
        "regenerate the README's config reference from kit.config.reference_markdown()"
    )


def test_ci_installs_as_the_readme_says_and_runs_its_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    lines = bash_lines()
    assert lines[0] == 'pip install ".[test]"' and 'pip install --quiet ".[test]"' in ci
    command = next(line for line in lines if line.startswith("python -m pytest"))
    assert ci.strip().endswith(command)


@pytest.mark.slow
def test_readme_kit_commands_run(tmp_path):
    commands = [part.strip() for line in bash_lines() if line.startswith("kit ") for part in line.split("&&")]
    assert commands[:2] == ["kit new demo", "kit run demo"]
    for command in commands:
        argv = [sys.executable, "-m", "kit", *shlex.split(command)[1:]]
        result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    assert (tmp_path / "predictions.csv").is_file()
    assert (tmp_path / "demo" / "runs" / "run-1" / "export" / "saved_model" / "saved_model.pb").is_file()
