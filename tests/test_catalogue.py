"""Runs the bad-input catalogue (tests/catalogue/) and keeps docs/errors.md in step with it."""

from __future__ import annotations

import pytest

from kit.cli import cli
from tests.catalogue import DOC, all_cases, markdown, snapshot

CASES = all_cases()


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


def test_catalogue_is_documented():
    assert len(CASES) >= 30
    assert DOC.read_text(encoding="utf-8") == markdown(), "docs/errors.md is stale: run `python -m tests.catalogue`"
