"""The tune section: search space, objective and study checks, without training."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import optuna
import pytest

from kit.config import load_config
from kit.errors import ConfigError
from kit.tune import study as studies
from kit.tune.objective import parse_objective
from kit.tune.space import parse_space
from tests.conftest import make_tabular, project

BASE = """task: regression
data:
  train: {data}
  target: y
train:
  epochs: 3
tune:
{tune}"""


def config_with(tmp_path, tune: str):
    data = make_tabular(tmp_path, rows=60)
    return load_config(project(tmp_path / "p", BASE.format(data=data, tune=textwrap.indent(tune, "  "))))


def test_space_reads_ranges_choices_lists_and_conditions(tmp_path):
    config = config_with(
        tmp_path,
        """space:
  train.learning_rate: {low: 1e-4, high: 1.0e-2, log: true}
  model.dropout: {low: 0.0, high: 0.5, step: 0.1}
  data.batch_size: {low: 16, high: 64, step: 16}
  model.hidden_units: [[16], [32, 16]]
  train.weight_decay: {low: 0.0, high: 0.1, when: {train.optimizer: adamw}}
  train.optimizer: {choices: [adam, adamw]}
""",
    )
    space = parse_space(config)
    kinds = {p.key: p.kind for p in space.params}
    assert kinds == {
        "train.learning_rate": "float",
        "model.dropout": "float",
        "data.batch_size": "int",
        "model.hidden_units": "choice",
        "train.weight_decay": "float",
        "train.optimizer": "choice",
    }
    assert space.keys().index("train.optimizer") < space.keys().index("train.weight_decay")  # condition first
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = [space.sample(study.ask()) for _ in range(30)]
    assert all(("train.weight_decay" in s) == (s["train.optimizer"] == "adamw") for s in seen)
    assert {str(s["model.hidden_units"]) for s in seen} == {"[16]", "[32, 16]"}  # lists come back as lists
    assert all(s["data.batch_size"] in (16, 32, 48, 64) and 1e-4 <= s["train.learning_rate"] <= 1e-2 for s in seen)


@pytest.mark.parametrize(
    ("tune", "message"),
    [
        ("space: {}", "line 8, key 'tune.space': the search space is empty"),
        (
            "space:\n  train.learnig_rate: {low: 0.001, high: 0.1}",
            "line 9, key 'tune.space.train.learnig_rate': 'train.learnig_rate' is not a config key. Did you mean 'train.learning_rate'?",
        ),
        (
            "space:\n  model.backbone: {low: 1, high: 3}",
            "a range (low/high) needs a numeric key, but model.backbone is text",
        ),
        ("space:\n  model.dropout: {low: 0.5, high: 0.1}", "low (0.5) must be below high (0.1)"),
        (
            "space:\n  model.dropout: {low: 0, high: 0.1, log: true}",
            "line 9, key 'tune.space.model.dropout.log': a log scale needs low above 0",
        ),
        (
            "space:\n  model.dropout: {low: 0.0, high: 2.0}",
            "key 'tune.space.model.dropout.high': must be between 0 and 0.99, got 2",
        ),
        (
            "space:\n  data.batch_size: [32, 0]",
            "key 'tune.space.data.batch_size.choices': must be between 1 and 1,048,576, got 0",
        ),
        ("space:\n  model.dropout: {low: 0.0, high: 0.3, stp: 0.1}", "unknown key. Did you mean 'step'?"),
        ("space:\n  data.train: [a.csv, b.csv]", "data.train (the training data) cannot be searched"),
        (
            "space:\n  model.dropout: {low: 0.0, high: 0.3, when: {train.optimizer: adam}}",
            "'train.optimizer' is not in the search space",
        ),
        ("space:\n  model.dropout: {low: 0.0, high: 0.3, step: 0.5}", "a step of 0.5 is larger than the range"),
        ("space:\n  model.dropout: []", "expected a non-empty list of values"),
        ("space:\n  model.dropout: 0.2", "A single value is not a search"),
        ("sampler: grid\nspace:\n  model.dropout: {low: 0.0, high: 0.3}", "tune.sampler: grid tries every value"),
        ("space:\n  train.optimizer: [adam, adamw, adam]", "lists 'adam' twice"),
    ],
)
def test_space_mistakes_name_the_line_and_key(tmp_path, tune, message):
    with pytest.raises(ConfigError) as error:
        parse_space(config_with(tmp_path, tune))
    assert message in str(error.value)
    assert "kit.yaml" in str(error.value)


def test_tune_section_keys_are_checked_like_the_rest(tmp_path):
    with pytest.raises(ConfigError, match="line 8, key 'tune.trails': unknown key in tune. Did you mean 'trials'"):
        config_with(tmp_path, "trails: 3\nspace:\n  model.dropout: [0.1]")
    with pytest.raises(ConfigError, match="key 'tune.pruner': expected one of"):
        config_with(tmp_path, "pruner: mediam\nspace:\n  model.dropout: [0.1]")


class FakeTask:
    def metric_names(self):
        return ["mae", "rmse"]


@pytest.mark.parametrize(
    ("tune", "expected"),
    [
        ("objective: val_rmse", ("minimize", "val_rmse", 1, ("validation", "rmse"))),
        ("objective: validation.r2", ("maximize", "val_loss", -1, ("validation", "r2"))),
        ("objective: validation.r2\nprune_on: val_mae", ("maximize", "val_mae", -1, ("validation", "r2"))),
        ("objective: loss", ("minimize", "loss", 1, None)),
    ],
)
def test_objective_direction_and_pruned_metric(tmp_path, tune, expected):
    config = config_with(tmp_path, tune + "\nspace:\n  model.dropout: [0.1, 0.2]")
    objective = parse_objective(config, FakeTask())
    assert (objective.direction, objective.epoch_metric, objective.epoch_sign, objective.final) == expected


@pytest.mark.parametrize(
    ("tune", "message"),
    [
        ("objective: val_rsme", "'val_rsme' is not a metric the task reports each epoch. Did you mean 'val_rmse'?"),
        ("objective: test.rmse", "tuning on the test split makes its figures optimistic"),
        ("objective: validation.zeta", "kit cannot tell whether 'zeta' is better low or high"),
        ("objective: val_rmse\nprune_on: val_r3", "key 'tune.prune_on': 'val_r3' is not a metric"),
    ],
)
def test_objective_mistakes(tmp_path, tune, message):
    config = config_with(tmp_path, tune + "\nspace:\n  model.dropout: [0.1, 0.2]")
    with pytest.raises(ConfigError) as error:
        parse_objective(config, FakeTask())
    assert message in str(error.value)


def test_objective_value_comes_from_the_final_metrics(tmp_path):
    config = config_with(tmp_path, "objective: val_rmse\nspace:\n  model.dropout: [0.1, 0.2]")
    objective = parse_objective(config, FakeTask())
    assert objective.value({"validation": {"rmse": 2.5}}, [{"epoch": 1, "val_rmse": 0.3}]) == 2.5
    assert objective.value({}, [{"epoch": 1, "val_rmse": 0.3}]) == 0.3
    assert objective.value({"validation": {"rsme": 2.5}}, []) is None
    message = objective.missing({"validation": {"rsme": 2.5, "mae": 1.0}})
    assert "not in the run's metrics (validation: mae, rsme). Did you mean 'validation.rsme'?" in message


def test_a_second_search_on_one_study_is_refused(tmp_path):
    config = config_with(tmp_path, "space:\n  model.dropout: [0.1, 0.2]")
    storage = studies.open_storage(studies.storage_url(config), studies.requeue)
    study = optuna.create_study(storage=storage, study_name="s")
    studies.check_signature(study, storage, {"space": {"model.dropout": [0.1, 0.2]}}, "sqlite:///x")
    studies.check_signature(study, storage, {"space": {"model.dropout": [0.1, 0.2]}}, "sqlite:///x")  # same: fine
    with pytest.raises(studies.TuneError, match=r"another search \(changed: tune.space.model.dropout\)"):
        studies.check_signature(study, storage, {"space": {"model.dropout": [0.3]}}, "sqlite:///x")


def test_storage_urls_and_passwords(tmp_path):
    config = config_with(tmp_path, "storage: sqlite:///studies/x.db\nspace:\n  model.dropout: [0.1, 0.2]")
    assert studies.storage_url(config) == f"sqlite:///{(tmp_path / 'p' / 'studies' / 'x.db').resolve()}"
    assert studies.shown_url("postgresql://kit:secret@db.example/kit") == "postgresql://kit:***@db.example/kit"
    with pytest.raises(studies.TuneError, match="the folder .*studies does not exist"):
        studies.open_storage(studies.storage_url(config), studies.requeue)
    with pytest.raises(studies.TuneError, match="is not a database URL"):
        studies.open_storage("nonsense://", studies.requeue)


def test_a_dead_workers_running_trial_is_queued_again_once(tmp_path):
    """A worker process that takes a slot and a trial, then dies: the next worker finds it through the slot lock."""
    folder, url = tmp_path / "workers", f"sqlite:///{tmp_path / 'study.db'}"
    storage = studies.open_storage(url, studies.requeue)
    study = optuna.create_study(storage=storage, study_name="s")
    child = textwrap.dedent(
        f"""
        import optuna
        from pathlib import Path
        from kit.tune import study as studies
        worker = studies.take_slot(Path({str(folder)!r}))
        study = optuna.load_study(study_name="s", storage={url!r})
        trial = study.ask({{"model.dropout": optuna.distributions.FloatDistribution(0, 0.5)}})
        trial.set_user_attr(studies.WORKER, worker.info())
        trial.set_user_attr(studies.RUN_DIR, "/nowhere/trial-0")
        print(worker.slot, flush=True)
        """
    )
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, env=os.environ.copy())
    assert result.stdout.strip() == "1", result.stderr  # the process has ended: its slot is free
    me = studies.take_slot(folder)
    try:
        assert me.slot == 1  # the dead worker's slot is free again
        assert studies.requeue_lost(study, storage, folder, me) == [0]
        assert studies.requeue_lost(study, storage, folder, me) == []  # once
        states = [t.state for t in study.get_trials(deepcopy=False)]
        assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]
        again = study.get_trials(deepcopy=False)[1]
        assert again.user_attrs[studies.RESUMES] == 0 and again.params == study.trials[0].params
        assert "stopped" in study.trials[0].user_attrs[studies.ERROR]
    finally:
        me.release()


def test_worker_slots_are_distinct_and_seeds_differ(tmp_path):
    first, second = studies.take_slot(tmp_path), studies.take_slot(tmp_path)
    try:
        assert (first.slot, second.slot) == (1, 2)
        assert first.seed(42) != second.seed(42)
        assert studies.worker_alive(tmp_path, first.info())
    finally:
        first.release()
        second.release()
    assert not studies.worker_alive(tmp_path, first.info())
