"""Shared fixtures: small real-shaped data sets written per test, a CLI runner, fresh plugins."""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from kit.plugins import reset_plugins

POSITIVE = "wonderful moving delightful brilliant funny charming superb touching clever warm".split()
NEGATIVE = "dull boring tedious awful clumsy bland tiresome lifeless flat mediocre".split()
FILLER = "the film story cast plot director scenes and a is was with this its".split()


def pytest_configure(config):
    # The machine's FLOP/s ceiling (for a run's utilisation) is measured once per cache: not once per test
    # (module-scoped fixtures train before any per-test fixture runs, so it is set for the whole session).
    os.environ["KIT_PEAK_FLOPS"] = "1e11"
    share_the_cores_between_workers()


def share_the_cores_between_workers():
    """Under pytest-xdist, each worker's TensorFlow (and the kit processes its tests start) gets its share of
    the cores instead of a thread per core: `-n 2` on 2 cores otherwise runs 4 busy threads on 2 cores, and
    spinning threads wait on each other (tests/harness resume + generation: 400 s, 354 s with a share).
    Read by TensorFlow when it starts, which is after this (conftest runs before any test imports it)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        share = str(max(1, (os.cpu_count() or 1) // workers))
        os.environ.setdefault("TF_NUM_INTRAOP_THREADS", share)
        os.environ.setdefault("TF_NUM_INTEROP_THREADS", share)


@pytest.fixture(autouse=True)
def fresh_plugins(monkeypatch, tmp_path_factory):
    """Each test gets its own plugin manager and cache; no third-party plugins unless a test adds them."""
    monkeypatch.setenv("KIT_LOAD_PLUGINS", "")
    monkeypatch.setenv("KIT_CACHE_DIR", str(tmp_path_factory.mktemp("kit-cache")))
    reset_plugins()
    yield
    reset_plugins()


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def trained_run(folder: Path, cache: Path) -> Path:
    """`kit run` on the project `folder` for a module-scoped fixture (before the per-test fixture applies): as
    that fixture does, no third-party plugins and its own cache. Returns the run directory."""
    from kit.cli import cli

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KIT_LOAD_PLUGINS", "")
        mp.setenv("KIT_CACHE_DIR", str(cache))
        reset_plugins()
        result = CliRunner().invoke(cli, ["run", str(folder)])
        reset_plugins()
    assert result.exit_code == 0, result.output
    return folder / "runs" / "run-1"


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def review(rng: random.Random, positive: bool) -> str:
    words = rng.sample(POSITIVE if positive else NEGATIVE, 2) + rng.sample(FILLER, 5)
    rng.shuffle(words)
    return " ".join(words)


@pytest.fixture
def text_csv(tmp_path) -> Path:
    rng = random.Random(0)
    rows = []
    for _ in range(240):
        positive = rng.random() < 0.5
        rows.append([review(rng, positive), "pos" if positive else "neg"])
    return write_csv(tmp_path / "reviews.csv", ["text", "label"], rows)


def make_tabular(folder: Path, rows: int = 400) -> Path:
    """y = 3*x1 - 2*x2 + effect(colour): learnable in a few epochs."""
    rng = random.Random(1)
    effect = {"red": 1.0, "green": -1.0, "blue": 0.0}
    table = []
    for _ in range(rows):
        x1, x2, colour = rng.uniform(-1, 1), rng.uniform(-1, 1), rng.choice(list(effect))
        table.append([f"{x1:.4f}", f"{x2:.4f}", colour, f"{3 * x1 - 2 * x2 + effect[colour]:.4f}"])
    return write_csv(folder / "table.csv", ["x1", "x2", "colour", "y"], table)


@pytest.fixture
def tabular_csv(tmp_path) -> Path:
    return make_tabular(tmp_path)


def project(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kit.yaml").write_text(text, encoding="utf-8")
    return folder
