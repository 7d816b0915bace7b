"""Trained runs the serve tests share (one each per session: training is the slow part), and a client."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from kit.cli import cli
from kit.plugins import reset_plugins
from tests.conftest import make_tabular, project, review, write_csv


def train(folder: Path) -> Path:
    os.environ["KIT_LOAD_PLUGINS"] = ""
    reset_plugins()
    result = CliRunner().invoke(cli, ["run", str(folder)])
    assert result.exit_code == 0, result.output
    return folder / "runs" / "run-1"


@pytest.fixture(scope="session")
def text_run(tmp_path_factory) -> Path:
    """bert-tiny sentiment on made-up reviews (positive/negative words among filler)."""
    root = tmp_path_factory.mktemp("serve-text")
    rng = random.Random(0)
    rows = []
    for _ in range(400):
        positive = rng.random() < 0.5
        rows.append([review(rng, positive), "pos" if positive else "neg"])
    write_csv(root / "reviews.csv", ["text", "label"], rows)
    config = (
        "task: classification\ndata:\n  train: reviews.csv\n  batch_size: 16\nmodel:\n  sequence_length: 16\n"
        "  vocabulary_size: 120\ntrain:\n  epochs: 4\n  learning_rate: 0.005\n  verbose: 0\n"
    )
    return train(project(root, config))


@pytest.fixture(scope="session")
def table_run(tmp_path_factory) -> Path:
    """An MLP regression on y = 3*x1 - 2*x2 + effect(colour)."""
    root = tmp_path_factory.mktemp("serve-table")
    make_tabular(root, rows=600)
    config = "task: regression\ndata:\n  train: table.csv\n  target: [y]\ntrain:\n  epochs: 8\n  verbose: 0\n"
    return train(project(root, config))


@pytest.fixture(scope="session")
def lm_run(tmp_path_factory) -> Path:
    """gpt-tiny pretrained briefly on Python's own help text."""
    from tests.harness.test_generation import generation_config, python_docs

    root = tmp_path_factory.mktemp("serve-lm")
    (root / "corpus").mkdir()
    (root / "corpus" / "docs.txt").write_text(python_docs(40_000), encoding="utf-8")
    return train(project(root / "lm", generation_config(root / "corpus", epochs=1, held_out=False)))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class App:
    """A served run in this process (ASGI, no sockets), started and warmed up."""

    def __init__(self, run: Path, **options: Any):
        from kit.serve.app import Options, Service, make_app
        from kit.serve.server import load

        self.options = Options(**options)
        self.service = Service(load(run, self.options), self.options, name=run.name)
        self.app = make_app(self.service)

    async def __aenter__(self) -> App:
        import httpx

        self.lifespan = self.app.router.lifespan_context(self.app)
        await self.lifespan.__aenter__()
        transport = httpx.ASGITransport(app=self.app)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://serve.test", timeout=120)
        while not self.service.ready:
            assert self.service.batcher.start_error is None, self.service.batcher.start_error
            await asyncio.sleep(0.05)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.client.aclose()
        await self.lifespan.__aexit__(*exc)

    async def post(self, path: str, body: Any) -> Any:
        content = body if isinstance(body, bytes) else json.dumps(body)
        return await self.client.post(path, content=content)


def served(run: Path, test: Any, **options: Any) -> Any:
    """Run `test(app)` (a coroutine function) against `run` served in this process."""

    async def main() -> Any:
        async with App(run, **options) as app:
            return await test(app)

    return asyncio.run(main())
