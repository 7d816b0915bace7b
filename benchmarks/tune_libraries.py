"""Which search library `kit tune` is built on: Optuna or Keras Tuner, measured on the same problem.

Both search the same 4-parameter space (log learning rate, dropout, width, optimizer) of a
synthetic validation-loss surface with noise (so the measurement is about the search, not
about training), with each library's own persistent store (Optuna: SQLite through
`RDBStorage`; Keras Tuner: its oracle's JSON files in a project folder). Reported, over
several seeds: the best loss after N trials (lower is better) and the library's own time per
trial (its bookkeeping: suggest, store, and read back).

Usage (Keras Tuner is not a kit dependency; install it aside):

    pip install --no-deps --target /tmp/kt keras-tuner kt-legacy
    PYTHONPATH=/tmp/kt python benchmarks/tune_libraries.py --trials 40 --seeds 5
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
WIDTHS = [32, 64, 128, 256]


def loss(learning_rate: float, dropout: float, width: int, optimizer: str, rng: random.Random) -> float:
    """A validation loss shaped like real ones: a valley in log(lr), a mild dropout optimum, width helps a little."""
    valley = (math.log10(learning_rate) + 2.5) ** 2
    return (
        0.3
        + 0.4 * valley
        + 0.8 * (dropout - 0.15) ** 2
        + 0.05 / math.log2(width)
        + (0.0 if optimizer == "adamw" else 0.05)
        + rng.gauss(0, 0.01)
    )


def optuna_search(trials: int, seed: int, folder: str) -> tuple[float, float]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rng = random.Random(seed)
    storage = optuna.storages.RDBStorage(f"sqlite:///{folder}/optuna.db")
    study = optuna.create_study(storage=storage, sampler=optuna.samplers.TPESampler(seed=seed), direction="minimize")

    def objective(trial: optuna.Trial) -> float:
        return loss(
            trial.suggest_float("learning_rate", 1e-5, 1e-1, log=True),
            trial.suggest_float("dropout", 0.0, 0.5),
            trial.suggest_categorical("width", WIDTHS),
            trial.suggest_categorical("optimizer", ["adam", "adamw", "sgd"]),
            rng,
        )

    start = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    return study.best_value, (time.perf_counter() - start) / trials


def keras_tuner_search(trials: int, seed: int, folder: str, kind: str) -> tuple[float, float]:
    import keras_tuner

    rng = random.Random(seed)

    class Search(keras_tuner.Tuner):
        def run_trial(self, trial, *args, **kwargs):
            hp = trial.hyperparameters
            return loss(
                hp.Float("learning_rate", 1e-5, 1e-1, sampling="log"),
                hp.Float("dropout", 0.0, 0.5),
                hp.Choice("width", WIDTHS),
                hp.Choice("optimizer", ["adam", "adamw", "sgd"]),
                rng,
            )

    oracles = {
        "bayesian": keras_tuner.oracles.BayesianOptimizationOracle,
        "random": keras_tuner.oracles.RandomSearchOracle,
    }
    oracle = oracles[kind](objective=keras_tuner.Objective("loss", "min"), max_trials=trials, seed=seed)
    tuner = Search(oracle=oracle, directory=folder, project_name="kt", overwrite=True)
    start = time.perf_counter()
    tuner.search(verbose=0)
    elapsed = time.perf_counter() - start
    best = tuner.oracle.get_best_trials(1)[0].score
    return best, elapsed / trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    searches = {
        "optuna TPE (SQLite)": lambda s, f: optuna_search(args.trials, s, f),
        "keras-tuner Bayesian (files)": lambda s, f: keras_tuner_search(args.trials, s, f, "bayesian"),
        "keras-tuner random (files)": lambda s, f: keras_tuner_search(args.trials, s, f, "random"),
    }
    print(f"{args.trials} trials, {args.seeds} seeds; best loss (optimum about 0.31) and library time per trial")
    for name, search in searches.items():
        bests, costs = [], []
        for seed in range(args.seeds):
            with tempfile.TemporaryDirectory() as folder:
                best, cost = search(seed, folder)
            bests.append(best)
            costs.append(cost)
        print(
            f"{name:<30} best {statistics.mean(bests):.4f} (worst seed {max(bests):.4f})  "
            f"{1000 * statistics.mean(costs):.1f} ms/trial"
        )


if __name__ == "__main__":
    main()
