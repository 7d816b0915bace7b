"""The serving commands the README and docs/serve.md show, run against real servers: `kit serve` of a
classifier and of a generation run, and every `curl` line, each answer checked against the block after it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.serve.test_server import Server

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "docs" / "serve.md"]


def blocks(path: Path) -> list[tuple[str, str]]:
    """(language, text) of every fenced block of `path`, in order."""
    return re.findall(r"```(\w*)\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


def shell_lines(path: Path) -> list[tuple[str, tuple[str, str] | None]]:
    """Each line of a shell block with the block that follows that block (what the docs say it answers)."""
    found = blocks(path)
    lines = []
    for number, (language, text) in enumerate(found):
        if language != "shell":
            continue
        after = found[number + 1] if number + 1 < len(found) else None
        lines += [(line.split("  #")[0].strip(), after) for line in text.splitlines() if line.strip()]
    return lines


def test_docs_show_serving_commands():
    for path in DOCS:
        commands = [line for line, _ in shell_lines(path)]
        assert any(line.startswith("kit serve ") for line in commands), path
        assert any(line.startswith("curl ") for line in commands), path


@pytest.fixture(scope="module")
def servers(text_run, lm_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("docs-serve")
    running = {"classifier": Server(text_run, folder), "generator": Server(lm_run, folder)}
    for server in running.values():
        server.wait_ready()
    yield running
    for server in running.values():
        assert server.stop() == 0


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_documented_commands_answer_as_documented(doc, servers):
    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    last_id = None
    for line, after in shell_lines(doc):
        if line.startswith("kit serve "):
            assert Path(line.split()[2]).name == "run-1"  # a run directory; served here by the fixtures
            continue
        if not line.startswith("curl "):
            continue
        server = servers["generator" if "/generate" in line else "classifier"]
        command = line.replace("localhost:8000", f"127.0.0.1:{server.port}")
        if last_id:
            command = command.replace("5b0f...", last_id)
        output = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
        assert output.returncode == 0, (line, output.stderr)
        if '"stream": true' in line:
            assert "event: token" in output.stdout and "event: done" in output.stdout, output.stdout
            continue
        answer = json.loads(output.stdout)
        documented = json.loads(_plain(after[1])) if after and after[0] == "json" else None
        if documented and "error" in documented:
            assert answer == documented, line
            continue
        assert "error" not in answer, (line, answer)
        if documented:
            assert set(answer) == set(documented), (line, answer)
        if "predictions" in answer:
            last_id = answer["id"]


def _plain(text: str) -> str:
    """A documented answer with its shortened values ("5b0f...", "...") made valid JSON."""
    return re.sub(r'"[^"]*\.\.\."', '"x"', text)
