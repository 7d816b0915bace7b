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

from kit.assembly import Pieces, assemble
from kit.config import Config, dump_yaml, resolved_dict
from kit.console import say
from kit.data.plan import report_text, scan
from kit.harness.rundir import choose_run_dir
from kit.rundir import RunDir


@dataclass
class RunContext:
    """What a run's callbacks and plugins can see.

    Attributes:
        config: the validated `Config`.
        run_dir: the run directory being written (a `Path`).
        task: the `kit.Task` instance.
        resumed: True when this run continues an interrupted one.
        run: the same directory as a `kit.rundir.RunDir`, which names every file in it.
    """

    config: Config
    run_dir: Path
    task: Any
    resumed: bool = False

    @property
    def run(self) -> RunDir:
        return RunDir(self.run_dir)


def train(config: Config, run_dir: Path | None = None, argv: list[str] | None = None) -> Path:
    """Train the project described by `config`; return the run directory.

    Runs again with the same config resume the latest unfinished run.
    """
    started = time.time()
    resolved = resolved_dict(config)
    pieces = assemble(config)
    runs_root = Path(resolved["runs_dir"])
    # Check the data before creating anything: a malformed file leaves no empty run behind.
    reports = scan(pieces.plan, pieces.fields, config.data.bad_rows, check=pieces.check_example)
    from kit.harness import trainer
    from kit.harness.artifacts import save_model
    from kit.harness.datasets import training_features
    from kit.harness.strategy import make_strategy, split_cpu

    # Devices and the strategy first: multi-worker collectives must be set up before any TensorFlow operation.
    split_cpu()
    strategy = make_strategy(config.train.strategy)
    # Learns the vocabulary or loads the pretrained model: a bad backbone fails here, before any run dir.
    pieces.backbone.adapt(training_features(pieces))
    run_dir, resumed = choose_run_dir(resolved, runs_root, run_dir)
    run = RunDir(run_dir)
    say(f"kit: {'resuming' if resumed else 'starting'} run in {run_dir}")
    say(report_text(reports))
    run.config_file.write_text(dump_yaml(resolved), encoding="utf-8")
    record = _run_record(config, pieces, argv, resumed, run.read_record())
    record["data"] = {"fingerprint": pieces.plan.fingerprint(), **{s: r.as_dict() for s, r in reports.items()}}
    run.write_record(record)

    context = RunContext(config, run_dir, pieces.task, resumed)
    model, built, datasets = trainer.fit(config, pieces, reports, context, strategy)
    save_model(model, built, pieces, config, resolved, run)
    metrics = trainer.final_metrics(model, pieces, datasets, context)
    write_outputs(run, metrics)
    record.update(status="complete", metrics=metrics, wall_seconds=round(time.time() - started, 1))
    run.write_record(record)
    shutil.rmtree(run.backup_dir, ignore_errors=True)  # only now: a crash before resumes from it
    say(f"kit: run complete: {run_dir}")
    return run_dir


def write_outputs(run: RunDir, metrics: dict[str, Any]) -> None:
    """metrics.json, the curves plot, and one console line per split."""
    from kit.harness.callbacks import read_history
    from kit.plots import plot_curves
    from kit.rundir import write_json_atomic

    write_json_atomic(run.metrics_file, metrics)
    plot_curves(read_history(run.history_file), run.curves_file)
    for split, values in metrics.items():
        shown = ", ".join(f"{k}={v:.4g}" for k, v in values.items() if isinstance(v, float))
        say(f"kit: {split}: {shown}")
    say(f"kit: metrics in {run.metrics_file}")


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
        inputs=pieces.kind.name,
        backbone={
            "family": pieces.backbone.name,
            "plugin": pieces.backbone_plugin,
            "reference": str(pieces.backbone.reference),
        },
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
