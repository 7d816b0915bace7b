"""`kit run`: train a project into a run directory, then evaluate and save it.

Signals are handled for the whole command (`Stops`): while `model.fit` runs,
SIGINT (Ctrl-C), SIGTERM (what `kill` and schedulers send) and SIGHUP (a
closed terminal) save the training state at the next step and stop with
status 130; at any other moment they stop at once, also with 130. Either way
what was saved stays, and the same command resumes: a run stopped after
training evaluates and writes its outputs without training again.
"""

from __future__ import annotations

import errno
import os
import platform
import shlex
import shutil
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from kit.assembly import Pieces, assemble
from kit.config import Config, check_monitor, dump_yaml, resolved_dict
from kit.console import say
from kit.data.plan import report_text, scan
from kit.errors import RunDirError
from kit.harness.hparams import write_hparams
from kit.harness.rundir import ChosenRun, choose_run_dir
from kit.harness.stages import Stages
from kit.rundir import RunDir, write_text_atomic


@dataclass
class RunContext:
    """What a run's callbacks and plugins can see.

    Attributes:
        config: the validated `Config`.
        run_dir: the run directory being written (a `Path`).
        task: the `kit.Task` instance.
        resumed: True when this run continues an interrupted one.
        trial: the `kit tune` trial this run is (`.study`, `.number`, `.params`), or None for `kit run`.
        stages: where the run's time goes (`kit.harness.stages.Stages`), written to run.json.
        run: the same directory as a `kit.rundir.RunDir`, which names every file in it.
    """

    config: Config
    run_dir: Path
    task: Any
    resumed: bool = False
    trial: Any = None
    stages: Stages = field(default_factory=Stages, repr=False)
    utilisation: dict[str, float] | None = field(default=None, repr=False)  # model FLOPs utilisation, once trained
    timer: Any = field(default=None, repr=False)
    validation: Any = field(default=None, repr=False)  # `EpochValidation` when kit validates at epoch ends
    _finishers: list[Callable[[dict[str, Any]], None]] = field(default_factory=list, repr=False)

    @property
    def run(self) -> RunDir:
        return RunDir(self.run_dir)

    def when_complete(self, finish: Callable[[dict[str, Any]], None]) -> None:
        """Call `finish(metrics)` once the run's outputs are written (metrics.json, curves, the model).

        For plugins that send a finished run somewhere (an experiment tracker): a callback sees
        training only, and the final metrics come after it.
        """
        self._finishers.append(finish)


class SignalStop(KeyboardInterrupt):
    """A signal that stops `kit run` at once (outside training, or a second one): the CLI exits 130."""

    def __init__(self, name: str):
        super().__init__(name)
        self.signal = name


class Stops:
    """SIGINT, SIGTERM and SIGHUP during `kit run`.

    Inside `during_training()` the first one only sets `received`; the state
    saver (`kit.harness.resume.SaveTrainingState`) then saves at the next step
    and stops. Any other time, or a second signal, raises `SignalStop`.
    """

    SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")

    def __init__(self) -> None:
        self.received: str | None = None
        self.deferred = False
        self._depth = 0

    @contextmanager
    def handled(self) -> Iterator[Stops]:
        """Handle the signals until the block ends (nested blocks share the outermost's handlers)."""
        if self._depth or threading.current_thread() is not threading.main_thread():
            yield self  # already handled, or not the main thread: Python only lets that one set handlers
            return
        self.received, self.deferred = None, False
        numbers = [getattr(signal, name) for name in self.SIGNALS if hasattr(signal, name)]
        previous = {number: signal.signal(number, self._handle) for number in numbers}
        self._depth += 1
        try:
            yield self
        finally:
            self._depth -= 1
            for number, handler in previous.items():
                signal.signal(number, handler)

    @contextmanager
    def during_training(self) -> Iterator[None]:
        self.deferred = True
        try:
            yield
        finally:
            self.deferred = False

    def _handle(self, number: int, frame: Any) -> None:
        name = signal.Signals(number).name
        if self.deferred and self.received is None:
            self.received = name
            _tell(f"\nkit: {name} received: saving the training state after this step...")
            return
        _tell(f"\nkit: {name} received: stopping.")
        raise SignalStop(name)


def _tell(message: str) -> None:
    try:
        say(message)
    except (OSError, ValueError):  # SIGHUP: the terminal may be gone
        pass


STOPS = Stops()


def train(config: Config, run_dir: Path | None = None, argv: list[str] | None = None, trial: Any = None) -> Path:
    """Train the project described by `config`; return the run directory.

    Runs again with the same config resume the latest unfinished run. `trial` is the `kit tune` trial
    the run is (see `RunContext.trial`); its `record()` goes into run.json.
    """
    with STOPS.handled():
        return _train(config, run_dir, argv, trial)


def _train(config: Config, requested: Path | None, argv: list[str] | None, trial: Any = None) -> Path:
    started = time.monotonic()  # not time.time(): a clock set back must not make the run last minus an hour
    stages = Stages()
    resolved = resolved_dict(config)
    pieces = assemble(config)
    runs_root = Path(resolved["runs_dir"])
    stages.since_start("start-up")  # imports (TensorFlow's 3-4 s), config, plugins
    # Check the data before creating anything: a malformed file leaves no empty run behind.
    with stages.stage("scan"):
        reports = scan(pieces.plan, pieces.fields, config.data.bad_rows, check=pieces.check_example)
    from kit.harness.datasets import training_features
    from kit.harness.strategy import make_strategy, split_cpu

    # Devices and the strategy first: multi-worker collectives must be set up before any TensorFlow operation.
    split_cpu()
    strategy = make_strategy(config.train.strategy)
    check_monitor(config, pieces.task)  # before training; after the strategy: metrics are TensorFlow objects
    # Seeded before the backbone exists: a pretrained one is built while loading, and its dropout layers take
    # their random seeds then (unseeded, two identical runs would differ).
    from kit.harness.trainer import seed_everything

    seed_everything(config.seed, deterministic_ops=config.train.jit_compile is not True)
    # Learns the vocabulary or loads the pretrained model: a bad backbone fails here, before any run dir.
    with stages.stage("adapt"):
        pieces.backbone.adapt(training_features(pieces))
    fingerprint = pieces.plan.fingerprint()
    chosen = choose_run_dir(resolved, runs_root, requested, fingerprint)
    with chosen.lock, _explained(chosen):
        say(f"kit: {'resuming' if chosen.resumed else 'starting'} run in {chosen.path}")
        say(report_text(reports))
        record = _begin(config, pieces, argv, chosen, resolved)
        record["data"] = {"fingerprint": fingerprint, **{s: r.as_dict() for s, r in reports.items()}}
        if trial is not None:
            record["trial"] = trial.record()
        run = RunDir(chosen.path)
        run.write_record(record)
        context = RunContext(config, chosen.path, pieces.task, chosen.resumed, trial, stages=stages)
        metrics = _train_and_finish(config, pieces, reports, strategy, chosen, resolved, context)
        record.update(status="complete", metrics=metrics, wall_seconds=round(time.monotonic() - started, 1))
        record["stages"] = stages.record()
        if context.utilisation:
            record["utilisation"] = context.utilisation
        if trial is not None:
            record["trial"] = trial.record()  # now with how it ended (pruned at an epoch)
        # Before the run is marked complete: a run stopped here writes its HParams record when it is finished.
        write_hparams(run, resolved, metrics, record)
        run.write_record(record)
        _finish(context, metrics)
        shutil.rmtree(run.backup_dir, ignore_errors=True)  # only now: a crash before resumes from it
    say(stages.summary())
    if context.utilisation:
        say(_utilisation_line(context.utilisation))
    say(f"kit: run complete: {chosen.path}")
    return chosen.path


def _utilisation_line(figures: dict[str, float]) -> str:
    achieved = f"kit: training ran at {figures['achieved_flops_per_second'] / 1e9:.1f} GFLOP/s of useful work"
    peak = f"{figures['peak_flops_per_second'] / 1e9:.0f} GFLOP/s"
    if figures["mfu"] > 1 and os.environ.get("KIT_PEAK_FLOPS"):
        return f"{achieved}, above KIT_PEAK_FLOPS ({peak}): set it to the hardware's ceiling for a utilisation figure"
    if figures["mfu"] > 1:  # past a float32, one-device ceiling, even one measured again for this run
        return (
            f"{achieved}, above this machine's measured {peak} (mixed precision, several devices, or a ceiling "
            f"measured while other work ran): set KIT_PEAK_FLOPS to the hardware's ceiling for a utilisation figure"
        )
    return f"{achieved}, {figures['mfu']:.0%} of this machine's measured {peak} (model FLOPs utilisation)"


def _begin(config: Config, pieces: Pieces, argv: list[str] | None, chosen: ChosenRun, resolved: dict) -> dict:
    """Write the resolved config and return the run record, marked running."""
    run = RunDir(chosen.path)
    write_text_atomic(run.config_file, dump_yaml(resolved))
    return _run_record(config, pieces, argv, chosen.resumed, run.read_record())


def _finish(context: RunContext, metrics: dict[str, Any]) -> None:
    """Whatever plugins asked for once the run is complete (`RunContext.when_complete`)."""
    for finish in context._finishers:
        try:
            finish(metrics)
        except Exception as exc:  # the run is complete and saved: a tracker that fails must not undo that
            owner = getattr(finish, "__module__", None) or "a plugin"
            say(f"kit: warning: {owner} failed after the run completed ({type(exc).__name__}: {exc}).")


def _train_and_finish(
    config: Config,
    pieces: Pieces,
    reports: dict,
    strategy: Any,
    chosen: ChosenRun,
    resolved: dict,
    context: RunContext,
) -> dict[str, Any]:
    """Train (or finish training), save the model, evaluate it, write the outputs; return the final metrics."""
    from kit.harness import trainer
    from kit.harness.artifacts import save_model
    from kit.harness.callbacks import check_run_folder

    stages = context.stages
    model, built, datasets = trainer.fit(config, pieces, reports, context, strategy, stops=STOPS, lock=chosen.lock)
    check_run_folder(chosen.lock)
    _check_room_for(model, chosen.path)
    with stages.stage("saving"):
        save_model(model, built, pieces, config, resolved, context.run)
    with stages.stage("evaluation"):
        metrics = trainer.final_metrics(model, pieces, datasets, context)
    check_run_folder(chosen.lock)
    with stages.stage("outputs"):
        write_outputs(context.run, metrics)
    return metrics


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


def _check_room_for(model: Any, run_dir: Path) -> None:
    """A full disk before saving the model is an error now: keras-hub writes its preset with HDF5 straight to
    the disk, and HDF5 meeting a full disk crashes the process. Twice the weights: model.keras and the preset."""
    import numpy as np

    needed = 2 * sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in model.weights) + (16 << 20)
    free = shutil.disk_usage(run_dir).free
    if free < needed:
        raise OSError(
            errno.ENOSPC,
            f"No space left on device ({free >> 20} MB free, about {needed >> 20} MB needed)",
            str(run_dir),
        )


@contextmanager
def _explained(chosen: ChosenRun) -> Iterator[None]:
    """Leave no HDF5 file half-written behind an error, and explain errors that come from the run folder."""
    try:
        yield
    except BaseException as exc:
        from kit.harness.resume import close_h5_files

        close_h5_files()  # a plugin's or keras-hub's write cut short: closed now, not flushed at exit
        if isinstance(exc, Exception) and not isinstance(exc, RunDirError):
            problem = _run_folder_problem(chosen.path, exc)
            if problem:
                raise RunDirError(problem) from None
        raise


# Left to the CLI, which says what they are: a full disk, a read-only or forbidden folder.
STORAGE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)


def _run_folder_problem(run_dir: Path, exc: Exception) -> str | None:
    """What went wrong in the run folder, when that is why `exc` happened (else None)."""
    if not run_dir.is_dir():
        return (
            f"The run folder {run_dir} was deleted while this run was using it ({type(exc).__name__}). "
            f"Run `kit run` again to start a new run."
        )
    if not isinstance(exc, OSError) or exc.errno in STORAGE_ERRORS or not exc.filename:
        return None
    if not Path(os.fsdecode(exc.filename)).absolute().is_relative_to(run_dir.absolute()):
        return None
    return (
        f"kit cannot write {exc.filename} ({exc.strerror}): something else is in its place in the run folder "
        f"(a file where kit keeps a folder, or a folder where it keeps a file). Move it away and run the same "
        f"command again; the saved training state is kept."
    )


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
