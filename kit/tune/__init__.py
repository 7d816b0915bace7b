"""`kit tune`: hyperparameter search over a project's config, each trial an ordinary kit run.

Built on Optuna (samplers, pruners, RDB storage). `kit.tune.space` reads the
search space, `kit.tune.objective` the objective, `kit.tune.study` keeps the
study and its workers, `kit.tune.runner` runs trials, `kit.tune.report` writes
what the study found. See docs/tune.md.
"""
