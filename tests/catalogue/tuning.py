"""Catalogue: `kit tune` (the tune section, the objective, the study's storage) and `kit runs`.

Every tune case is refused before any trial trains. Faults that need real
processes (a worker killed or stopped mid-trial, two workers on one study)
and a trial that crashes while training are in tests/tune/test_tune.py.
"""

from __future__ import annotations

from pathlib import Path

from tests.catalogue import case, tabular_project

SPACE = "tune:\n  space:\n    train.learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}\n"


def tune(root: Path, section: str, *args: str) -> list[str]:
    return ["tune", str(tabular_project(root, section)), *args]


@case("tuning and runs", "key 'tune.space': the search space is empty")
def tune_empty_space(root, mp):
    """A `tune:` section whose `space:` names nothing to search"""
    return tune(root, "tune:\n  space: {}\n")


@case("tuning and runs", "'train.learnig_rate' is not a config key. Did you mean 'train.learning_rate'?")
def tune_unknown_key(root, mp):
    """A search-space key that is not a config key (`train.learnig_rate`)"""
    return tune(root, "tune:\n  space:\n    train.learnig_rate: {low: 1.0e-4, high: 1.0e-2}\n")


@case("tuning and runs", "a range (low/high) needs a numeric key, but model.backbone is text")
def tune_range_on_text(root, mp):
    """A range (`low`/`high`) on a key that takes text (`model.backbone`)"""
    return tune(root, "tune:\n  space:\n    model.backbone: {low: 1, high: 3}\n")


@case("tuning and runs", "low (0.5) must be below high (0.1)")
def tune_impossible_range(root, mp):
    """A range whose low end is above its high end"""
    return tune(root, "tune:\n  space:\n    model.dropout: {low: 0.5, high: 0.1}\n")


@case("tuning and runs", "key 'tune.space.model.dropout.high': must be between 0 and 0.99, got 1.5")
def tune_range_outside_key(root, mp):
    """A range reaching past what the key itself allows (dropout up to 1.5)"""
    return tune(root, "tune:\n  space:\n    model.dropout: {low: 0.0, high: 1.5}\n")


@case("tuning and runs", "a log scale needs low above 0")
def tune_log_from_zero(root, mp):
    """A log-scale range starting at 0"""
    return tune(root, "tune:\n  space:\n    model.dropout: {low: 0.0, high: 0.5, log: true}\n")


@case("tuning and runs", "'train.optimizer' is not in the search space")
def tune_condition_outside_space(root, mp):
    """A conditional key (`when:`) on a key that is not searched"""
    return tune(root, "tune:\n  space:\n    model.dropout: {low: 0.0, high: 0.3, when: {train.optimizer: adamw}}\n")


@case("tuning and runs", "data.train (the training data) cannot be searched")
def tune_data_key(root, mp):
    """Searching over the training data file itself"""
    return tune(root, "tune:\n  space:\n    data.train: [a.csv, b.csv]\n")


@case("tuning and runs", "with model.unfreeze_backbone_after = 1 the config is not valid")
def tune_choice_breaks_config(root, mp):
    """A choice that breaks a rule between keys (unfreezing after the last epoch)"""
    return tune(root, "tune:\n  space:\n    model.unfreeze_backbone_after: [1, 2]\n")


@case("tuning and runs", "tune.sampler: grid tries every value, so a float range needs a step")
def tune_grid_of_continuous_range(root, mp):
    """`sampler: grid` over a continuous range"""
    return tune(root, "tune:\n  sampler: grid\n  space:\n    model.dropout: {low: 0.0, high: 0.3}\n")


@case("tuning and runs", "'val_accuracy' is not a metric the task reports each epoch")
def tune_objective_not_reported(root, mp):
    """An objective the task does not report (`val_accuracy` for a regression)"""
    return tune(root, SPACE + "  objective: val_accuracy\n")


@case("tuning and runs", "tuning on the test split makes its figures optimistic")
def tune_objective_on_test(root, mp):
    """An objective measured on the test split"""
    return tune(root, SPACE + "  objective: test.rmse\n")


@case("tuning and runs", "kit cannot tell whether 'zeta' is better low or high; set tune.direction")
def tune_objective_without_direction(root, mp):
    """A final metric kit cannot tell the direction of, with no `direction:`"""
    return tune(root, SPACE + "  objective: validation.zeta\n")


@case("tuning and runs", "trials have no validation split to be compared on")
def tune_without_validation(root, mp):
    """Tuning a project that holds no rows out for validation"""
    return tune(root, SPACE, "--set", "data.validation_fraction=0")


@case("tuning and runs", "key 'tune.trials': must be between 1 and 1,000,000, got 0")
def tune_zero_trials(root, mp):
    """`kit tune --trials 0`"""
    return tune(root, SPACE, "--trials", "0")


@case("tuning and runs", "with neither tune.trials nor tune.timeout the search would never end")
def tune_without_budget(root, mp):
    """A search with no budget (`trials: null` and no timeout)"""
    return tune(root, SPACE + "  trials: null\n")


@case("tuning and runs", "the folder")
def tune_storage_folder_missing(root, mp):
    """`tune.storage` naming a SQLite file in a folder that does not exist"""
    return tune(root, SPACE + "  storage: sqlite:///nowhere/study.db\n")


@case("tuning and runs", "needs the database driver 'psycopg")
def tune_storage_driver_missing(root, mp):
    """`tune.storage` on a PostgreSQL server without its Python driver installed"""
    return tune(root, SPACE + "  storage: postgresql://kit:secret@127.0.0.1:1/studies\n")


@case("tuning and runs", "is not a database URL kit can use")
def tune_storage_not_a_url(root, mp):
    """`tune.storage` that is not a database URL"""
    return tune(root, SPACE + "  storage: 'http://127.0.0.1:1/study'\n")


@case("tuning and runs", "was started with another search (changed: tune.space.train.learning_rate")
def tune_other_search_on_study(root, mp):
    """A second worker joining a study with another search space"""
    import optuna

    from kit.tune import study as studies
    from kit.tune.runner import prepare

    argv = tune(root, SPACE)
    search = prepare(Path(argv[1]), [])
    theirs = studies.signature(search.config, search.space, search.objective)
    theirs["space"]["train.learning_rate"]["high"] = 0.1  # the first worker searched a wider range
    storage = studies.open_storage(search.url, studies.requeue)
    study = optuna.create_study(storage=storage, study_name="p")
    study.set_user_attr(studies.SIGNATURE, theirs)
    storage.remove_session()
    return argv


@case("tuning and runs", "--sort rsme: no run reports that metric")
def runs_sort_unknown_metric(root, mp):
    """`kit runs --sort` with a metric no run reports"""
    return ["runs", str(tabular_project(root)), "--sort", "rsme"]


@case("tuning and runs", "needs at least two run folders", exit_code=2)
def runs_compare_one_run(root, mp):
    """`kit runs compare` with a single run"""
    return ["runs", "compare", str(root)]


@case("tuning and runs", "is not a kit run directory")
def runs_compare_not_runs(root, mp):
    """`kit runs compare` on folders that are not runs"""
    (root / "a").mkdir()
    (root / "b").mkdir()
    return ["runs", "compare", str(root / "a"), str(root / "b"), "-o", str(root / "c.png")]


@case("tuning and runs", "is inside the run folder", exit_code=2)
def runs_compare_into_a_run(root, mp):
    """`kit runs compare -o` pointing inside a run folder"""
    for name in ("a", "b"):
        (root / name).mkdir()
        (root / name / "run.json").write_text('{"status": "complete"}')
    return ["runs", "compare", str(root / "a"), str(root / "b"), "-o", str(root / "a" / "c.png")]
