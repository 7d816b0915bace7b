"""`kit run`: train a project into a run directory, then evaluate and save it."""

from __future__ import annotations

import platform
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit.config import Config, dump_yaml, resolved_dict
from kit.data.plan import report_text, scan
from kit.harness.rundir import CONFIG_COPY, choose_run_dir, read_run, write_run
from kit.harness.setup import Pieces, assemble, say


@dataclass
class RunContext:
    """What a run's callbacks and plugins can see.

    Attributes:
        config: the validated `Config`.
        run_dir: the run directory being written.
        task: the `kit.Task` instance.
        resumed: True when this run continues an interrupted one.
    """

    config: Config
    run_dir: Path
    task: Any
    resumed: bool = False


def train(config: Config, run_dir: Path | None = None, argv: list[str] | None = None) -> Path:
    """Train the project described by `config`; return the run directory.

    Runs again with the same config resume the latest unfinished run.
    """
    started = time.time()
    resolved = resolved_dict(config)
    pieces = assemble(config)
    runs_root = Path(resolved["runs_dir"])
    # Check the data before creating anything: a malformed file leaves no empty run behind.
    reports = scan(pieces.plan, pieces.fields, config.data.bad_rows)
    from kit.harness import trainer
    from kit.harness.strategy import make_strategy, split_cpu

    # Devices and the strategy first: multi-worker collectives must be set up before any TensorFlow operation.
    split_cpu()
    strategy = make_strategy(config.train.strategy)
    trainer.adapt_inputs(pieces)  # loads or learns the tokenizer: a bad backbone fails here, before any run dir
    run_dir, resumed = choose_run_dir(resolved, runs_root, run_dir)
    say(f"kit: {'resuming' if resumed else 'starting'} run in {run_dir}")
    say(report_text(reports))
    (run_dir / CONFIG_COPY).write_text(dump_yaml(resolved), encoding="utf-8")
    record = _run_record(config, pieces, argv, resumed, read_run(run_dir))
    record["data"] = {"fingerprint": pieces.plan.fingerprint(), **{s: r.as_dict() for s, r in reports.items()}}
    write_run(run_dir, record)

    context = RunContext(config, run_dir, pieces.task, resumed)
    model, datasets = trainer.fit(config, pieces, reports, context, strategy)
    trainer.save_model(model, pieces, config, resolved, run_dir / "model")
    metrics = trainer.final_metrics(model, pieces, datasets, run_dir)
    trainer.write_outputs(run_dir, metrics)
    record.update(status="complete", metrics=metrics, wall_seconds=round(time.time() - started, 1))
    write_run(run_dir, record)
    shutil.rmtree(run_dir / trainer.BACKUP_DIR, ignore_errors=True)  # only now: a crash before resumes from it
    say(f"kit: run complete: {run_dir}")
    return run_dir


def _run_record(
    config: Config, pieces: Pieces, argv: list[str] | None, resumed: bool, previous: dict | None
) -> dict[str, Any]:
    import importlib.metadata as md

    def version(name: str) -> str | None:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    record = dict(previous or {})
    record.update(
        status="running",
        task=config.task,
        task_plugin=pieces.plugin,
        seed=config.seed,
        command=shlex.join(argv if argv is not None else sys.argv),
        inputs=pieces.inputs.kind,
        versions={
            "kit": version("kit"),
            "tensorflow": version("tensorflow"),
            "keras": version("keras"),
            "keras-hub": version("keras-hub"),
            "python": platform.python_version(),
        },
        plugins={name: info.version for name, info in _plugin_versions().items()},
    )
    record.setdefault("started", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    if resumed:
        record["resumed"] = record.get("resumed", 0) + 1
    return record


def _plugin_versions() -> dict[str, Any]:
    from kit.plugins import get_plugins

    return {name: info for name, info in get_plugins().info.items() if not info.error}
