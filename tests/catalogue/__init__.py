"""The bad-input catalogue: every wrong input a user can give, and what kit answers.

One module per area registers its cases with `@case(area, message)`. A case's
setup function builds a small project holding one mistake and returns the CLI
arguments; its docstring's first line says what the user did. The test
(`tests/test_catalogue.py`) runs each and checks: the message says what was
wrong (the fragment given), the exit status, no traceback, and nothing that
existed before the command was changed or removed.

`docs/errors.md` is generated from these cases, so the page and the tests
cannot drift apart: `python -m tests.catalogue` rewrites it.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import make_tabular, project, write_csv

DOC = Path(__file__).resolve().parents[2] / "docs" / "errors.md"
# Areas in the order docs/errors.md shows them; each is a module of this package.
AREAS = {
    "config": "config",
    "data": "data",
    "plugins": "plugins",
    "templates": "templates",
    "run directories": "run_dirs",
    "training": "training",
    "tuning and runs": "tuning",
}

REGRESSION = "task: regression\ndata:\n  train: {data}\n  target: y\ntrain:\n  epochs: 1\n  verbose: 0\n"
CLASSIFY = "task: classification\ndata:\n  train: {data}\n  features: [x]\ntrain:\n  epochs: 1\n  verbose: 0\n"


@dataclass
class Case:
    id: str
    area: str
    setup: Callable[[Path, pytest.MonkeyPatch], list[str]]  # builds the mistake, returns the CLI arguments
    message: str
    exit_code: int = 1

    @property
    def what(self) -> str:
        """What the user did: the first line of the setup function's docstring."""
        return (inspect.getdoc(self.setup) or "").split("\n\n")[0].replace("\n", " ")


CASES: list[Case] = []


def case(area: str, message: str, exit_code: int = 1):
    """Register a setup function as a catalogue case of `area`."""
    assert area in AREAS, f"unknown catalogue area {area!r}"

    def register(setup):
        assert inspect.getdoc(setup), f"catalogue case {setup.__name__} needs a docstring saying what the user did"
        assert setup.__name__ not in {c.id for c in CASES}, f"two catalogue cases are named {setup.__name__}"
        CASES.append(Case(setup.__name__, area, setup, message, exit_code))
        return setup

    return register


def all_cases() -> list[Case]:
    for module in AREAS.values():
        importlib.import_module(f"tests.catalogue.{module}")
    return CASES


def tabular_project(root: Path, extra: str = "") -> Path:
    return project(root / "p", REGRESSION.format(data=make_tabular(root)) + extra)


def labelled(root: Path, rows: list[list[str]], header=("x", "label")) -> Path:
    return write_csv(root / "data.csv", list(header), rows)


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` with a hash of its bytes (symlinks are not followed)."""
    found = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


INTRO = """\
# Bad inputs and what kit says

Every entry below is a real mistake, tried by `tests/test_catalogue.py`: the
command fails with the message shown (an excerpt), the exit status shown
(1: a mistake to fix; 2: a wrong command line, like click's), no traceback,
and nothing that existed before the command is changed or removed. A kit
run that stops on an error keeps its saved training state; run the same
command again after fixing the cause and it resumes.

Also covered elsewhere: a NaN or infinite loss (stops with the epoch and
batch, keeps the last good state, suggests remedies; `tests/harness/test_run.py`),
a damaged training state (the previous one is used; `tests/harness/test_resume.py`),
and the generation and pretrained-backbone mistakes in their own test files.

This page is generated from the cases in `tests/catalogue/` (`python -m tests.catalogue`
rewrites it); {count} cases.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown() -> str:
    """docs/errors.md as the cases say it should be."""
    cases = all_cases()
    out = [INTRO.format(count=len(cases))]
    for area in AREAS:
        out.append(f"\n## {area[0].upper()}{area[1:]}\n")
        out.append("| case | what you did | what kit says (excerpt) | exit |\n|---|---|---|---|")
        for entry in (c for c in cases if c.area == area):
            out.append(f"| `{entry.id}` | {_cell(entry.what)} | {_cell(entry.message)} | {entry.exit_code} |")
    return "\n".join(out) + "\n"
