"""`kit tune`: one worker of a study, running trials as ordinary kit runs until the budget is spent.

Each trial is `kit run` of the project's config with the trial's values set,
trained in this process into `RUNS/tune-STUDY/trial-N` (resumable exactly,
like any run) with the trial in its run.json. The pruner watches the per-epoch
metric through a Keras callback; a pruned trial stops training, is evaluated
and saved like a run stopped early, and counts as pruned in the study.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kit
from kit.config import Config, load_config, resolved_dict
from kit.console import say
from kit.errors import ConfigError, Interrupted, KitError
from kit.tune import study as studies
from kit.tune.objective import Objective, parse_objective, read_outcome
from kit.tune.space import Space, parse_space


class TrialFailed(Exception):
    """A trial that could not train (its config, its data, a crash): recorded as failed; the study goes on."""


@dataclass
class TrialRun:
    """The `kit tune` trial a run trains: what `RunContext.trial` holds and run.json records.

    Attributes:
        study: the study's name.
        number: the trial's number in the study.
        params: the values the trial set, by config key.
        objective: what the study optimises.
        resumes: the number of a trial lost with its worker that this one carries on, if any.
    """

    study: str
    number: int
    params: dict[str, Any]
    objective: Objective
    storage: str
    optuna_trial: Any = field(repr=False, default=None)
    resumes: int | None = None
    pruned_at_epoch: int | None = None

    def record(self) -> dict[str, Any]:
        out = {
            "study": self.study,
            "number": self.number,
            "params": self.params,
            "objective": self.objective.name,
            "direction": self.objective.direction,
            "storage": self.storage,
        }
        if self.resumes is not None:
            out["resumes"] = self.resumes
        if self.pruned_at_epoch is not None:
            out["pruned_at_epoch"] = self.pruned_at_epoch
        return out

    def report(self, epoch: int, logs: dict[str, Any]) -> bool:
        """Give the pruner this epoch's metric; True when it says to stop the trial."""
        value = logs.get(self.objective.epoch_metric)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        self.optuna_trial.report(self.objective.epoch_sign * float(value), epoch + 1)
        if self.optuna_trial.should_prune():
            self.pruned_at_epoch = epoch + 1
            say(f"kit: trial {self.number} pruned after epoch {epoch + 1} ({self.objective.epoch_metric}={value:.4g})")
            return True
        return False

    def replay(self, history: list[dict[str, Any]]) -> None:
        """Report the epochs a resumed trial trained before it was lost (the pruner compares at every epoch)."""
        for record in history:
            value = record.get(self.objective.epoch_metric)
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.optuna_trial.report(self.objective.epoch_sign * float(value), int(record["epoch"]))


class PruneTrial:
    """Adds the pruning callback to the runs of `kit tune` trials, through the `register_callbacks` hook."""

    @kit.hookimpl
    def register_callbacks(self, register: Any, run: Any) -> None:
        if isinstance(run.trial, TrialRun):
            from kit.harness.callbacks import ReportEpochs

            register(ReportEpochs(run.trial.report))


# ------------------------------------------------------------------ one worker


@dataclass
class Search:
    """Everything a worker needs, checked before its first trial."""

    project: Path
    overrides: list[str]
    config: Config
    space: Space
    objective: Objective
    name: str
    folder: Path
    url: str


def prepare(project: Path, overrides: list[str]) -> Search:
    """Load the project's config and check the tune section: the space, the objective, every choice's config."""
    from kit.assembly import load_task

    config = load_config(project, overrides)
    if config.tune.trials is None and config.tune.timeout is None:
        raise ConfigError(
            f"{config.origin('tune.trials')}: with neither tune.trials nor tune.timeout the search would never end; "
            "set one (trials: 20, or timeout: 3600 seconds)."
        )
    space = parse_space(config)
    task, _ = load_task(config)
    objective = parse_objective(config, task)
    check_values(project, overrides, config, space)
    name = studies.study_name(config)
    folder = Path(resolved_dict(config)["runs_dir"]) / f"tune-{name}"
    return Search(project, overrides, config, space, objective, name, folder, studies.storage_url(config))


def check_values(project: Path, overrides: list[str], config: Config, space: Space) -> None:
    """Every choice and both ends of every range give a valid config (rules between keys included)."""
    for param in space.params:
        base = {key: (values[0] if values else None) for key, values in param.when.items()}
        for value in param.choices if param.kind == "choice" else [param.low, param.high]:
            try:
                load_config(project, overrides, values={**base, param.key: value})
            except ConfigError as exc:
                raise ConfigError(
                    f"{config.origin(f'tune.space.{param.key}')}: with {param.key} = {value!r} the config is not "
                    f"valid: {exc}"
                ) from None


def tune(project: Path, overrides: list[str], argv: list[str] | None = None) -> Any:
    """Run this worker's share of the study, then write the study's report; returns the `kit.tune.report.Report`.

    Raises:
        ConfigError, TuneError: before any trial, for a wrong tune section or an unusable storage.
        Interrupted: Ctrl-C or a signal; the trial it stopped is queued again and resumes next time.
    """
    import optuna

    from kit.plugins import get_plugins
    from kit.tune.report import write_report

    search = prepare(project, overrides)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # kit says what happens, in its own one-line messages
    # Each trial builds new models in this process; TensorFlow then warns about "retracing", which is expected.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = studies.open_storage(search.url, studies.requeue)
    worker = studies.take_slot(search.folder / ".workers")
    try:
        study = _study(search, storage, worker)
        plugins = get_plugins()
        if not plugins.pm.has_plugin("kit.tune"):
            plugins.add_plugin(PruneTrial(), "kit.tune", "builtin")
        _work(study, storage, search, worker, argv or ["kit", "tune", str(project)])
        return write_report(study, search)
    finally:
        worker.release()


def _study(search: Search, storage: Any, worker: studies.Worker) -> Any:
    import optuna

    mine = {"storage": storage, "sampler": _sampler(search, worker), "pruner": _pruner(search.config)}
    try:
        storage.get_study_id_from_name(search.name)
        study = optuna.load_study(study_name=search.name, **mine)  # read only: a refused worker changes nothing
    except KeyError:
        study = optuna.create_study(
            study_name=search.name, direction=search.objective.direction, load_if_exists=True, **mine
        )
    if study.direction.name.lower() != search.objective.direction:
        raise studies.TuneError(
            f"Study '{search.name}' in {studies.shown_url(search.url)} {study.direction.name.lower()}s its objective, "
            f"but tune.direction here is {search.objective.direction}. Set tune.study to another name."
        )
    studies.check_signature(
        study, storage, studies.signature(search.config, search.space, search.objective), search.url
    )
    say(
        f"kit: study '{search.name}' in {studies.shown_url(search.url)}: worker {worker.slot} on {worker.host}, "
        f"{len(study.trials)} trials so far; trials in {search.folder}"
    )
    return study


def _sampler(search: Search, worker: studies.Worker) -> Any:
    import optuna

    tune = search.config.tune
    seed = worker.seed(tune.seed if tune.seed is not None else search.config.seed)
    if tune.sampler == "grid":
        return optuna.samplers.GridSampler(search.space.grid(), seed=seed)
    if tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if tune.sampler == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, scramble=True, warn_asynchronous_seeding=False)
    # Conditional keys sample as groups; several workers keep apart by taking running trials as "in progress".
    return optuna.samplers.TPESampler(
        seed=seed,
        n_startup_trials=tune.startup_trials,
        multivariate=True,
        group=True,
        constant_liar=True,
    )


def _pruner(config: Config) -> Any:
    import optuna

    tune = config.tune
    epochs = config.train.epochs if isinstance(config.train.epochs, int) else 10
    if tune.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=tune.startup_trials, n_warmup_steps=tune.warmup_epochs)
    if tune.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, tune.warmup_epochs), max_resource=epochs)
    if tune.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, tune.warmup_epochs))
    return optuna.pruners.NopPruner()


def _work(study: Any, storage: Any, search: Search, worker: studies.Worker, argv: list[str]) -> None:
    """Run trials until the study's budget is spent or this worker's time is up."""
    budget = Budget(search.config.tune.trials)
    trials = Trials(search, worker, storage, argv)
    studies.say_lost(studies.requeue_lost(study, storage, search.folder / ".workers", worker))
    if budget.spent(study):
        say(f"kit: the study has its {budget.total} trials; nothing left to run.")
        return
    try:
        study.optimize(
            trials,
            timeout=search.config.tune.timeout,
            catch=(TrialFailed,),
            callbacks=[trials.after, budget.stop_when_spent],
            gc_after_trial=True,
        )
    except (Interrupted, KeyboardInterrupt) as exc:
        raise trials.stopped(study, exc) from None


@dataclass
class Budget:
    """`tune.trials` across every worker: finished, pruned and failed trials count; ones lost with a worker
    and queued again count once, as their new trial."""

    total: int | None

    def spent(self, study: Any) -> bool:
        import optuna

        if self.total is None:
            return False
        State = optuna.trial.TrialState
        trials = study.get_trials(deepcopy=False)
        resumed = {t.user_attrs.get(studies.RESUMES) for t in trials}
        done = [t for t in trials if t.state in (State.COMPLETE, State.PRUNED)]
        done += [t for t in trials if t.state == State.FAIL and t.number not in resumed]
        waiting = [t for t in trials if t.state == State.WAITING]
        running = [t for t in trials if t.state == State.RUNNING]
        return len(done) + len(running) >= self.total and not waiting

    def stop_when_spent(self, study: Any, trial: Any) -> None:
        if self.spent(study):
            study.stop()


class Trials:
    """The objective Optuna calls: one trial, trained as a kit run."""

    def __init__(self, search: Search, worker: studies.Worker, storage: Any, argv: list[str]):
        self.search, self.worker, self.storage, self.argv = search, worker, storage, argv
        self.current: int | None = None

    def __call__(self, trial: Any) -> float:
        import keras

        from kit.harness.callbacks import read_history
        from kit.harness.run import train
        from kit.rundir import RunDir

        self.current = trial.number
        trial.set_user_attr(studies.WORKER, self.worker.info())
        params = self.search.space.sample(trial)
        resumes = trial.user_attrs.get(studies.RESUMES)
        run_dir = self._run_dir(trial.number, resumes, trial.user_attrs.get(studies.RUN_DIR))
        trial.set_user_attr(studies.RUN_DIR, str(run_dir))
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        say(f"kit: trial {trial.number}{f' (resumes trial {resumes})' if resumes is not None else ''}: {shown}")
        run = TrialRun(
            self.search.name,
            trial.number,
            params,
            self.search.objective,
            studies.shown_url(self.search.url),
            trial,
            resumes,
        )
        try:
            config = load_config(self.search.project, self.search.overrides, values=params)
            if resumes is not None:
                run.replay(read_history(RunDir(run_dir).history_file))
            train(config, run_dir, self.argv, trial=run)
            value = self._value(run_dir)
        except (Interrupted, KeyboardInterrupt) as exc:
            trial.set_user_attr(studies.STOPPED, getattr(exc, "signal", None) or "interrupted")
            raise
        except KitError as exc:
            raise self._failed(trial, str(exc)) from None
        except Exception as exc:  # a crash in training code: this trial fails, the study goes on
            raise self._failed(trial, f"{type(exc).__name__}: {exc}".splitlines()[0]) from None
        finally:
            keras.backend.clear_session()  # trials train in one process: free the last one's graphs
        if run.pruned_at_epoch is not None:
            import optuna

            raise optuna.TrialPruned(f"pruned after epoch {run.pruned_at_epoch}")
        return value

    def _run_dir(self, number: int, resumes: int | None, lost: str | None) -> Path:
        """`tune-STUDY/trial-N`; a trial carrying on a lost one takes over its unfinished folder on this machine."""
        run_dir = self.search.folder / f"trial-{number}"
        if resumes is None or not lost or run_dir.exists():
            return run_dir
        from kit.harness.rundir import read_run, run_in_progress

        previous = Path(lost)
        record = read_run(previous) if previous.is_dir() else None
        if record is None or record.get("status") == "complete" or run_in_progress(previous) is not None:
            return run_dir
        try:
            previous.rename(run_dir)
        except OSError:
            return run_dir
        say(f"kit: trial {number} carries on in {run_dir} (trial {resumes}'s run, from its last saved state)")
        return run_dir

    def _value(self, run_dir: Path) -> float:
        metrics, history = read_outcome(run_dir)
        value = self.search.objective.value(metrics, history)
        if value is None:
            raise KitError(self.search.objective.missing(metrics))
        if not math.isfinite(value):
            raise KitError(f"the objective {self.search.objective.name} is {value}")
        return value

    def _failed(self, trial: Any, message: str) -> TrialFailed:
        trial.set_user_attr(studies.ERROR, message[:2000])
        say(f"kit: trial {trial.number} failed: {message}")
        return TrialFailed(message)

    def after(self, study: Any, trial: Any) -> None:
        """After each trial: its result in one line, then trials lost by other workers on this machine."""
        import optuna

        if trial.state == optuna.trial.TrialState.COMPLETE:
            best = study.best_trial
            say(
                f"kit: trial {trial.number}: {self.search.objective.name} = {trial.value:.6g} "
                f"(best: {best.value:.6g}, trial {best.number})"
            )
        studies.say_lost(studies.requeue_lost(study, self.storage, self.search.folder / ".workers", self.worker))

    def stopped(self, study: Any, exc: BaseException) -> Interrupted:
        """The trial a signal stopped, queued again; the message to end with (exit status 130)."""
        import optuna

        name = getattr(exc, "signal", None) or "Ctrl-C"
        lost = next((t for t in study.get_trials(deepcopy=False) if t.number == self.current), None)
        if lost is None or lost.state != optuna.trial.TrialState.FAIL or studies.STOPPED not in lost.user_attrs:
            return Interrupted(f"kit tune stopped by {name} between trials. Run the same command to go on.")
        studies.requeue(study, lost)
        return Interrupted(
            f"kit tune stopped by {name}; trial {self.current} is queued again and carries on from its last saved "
            f"state ({lost.user_attrs.get(studies.RUN_DIR)}) when you run the same command (or any worker does)."
        )
