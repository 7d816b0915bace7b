"""`kit tune` on a real project (diamonds price regression): what pruning saves, and what a trial costs.

1. Search: the same search space and budget (trials x epochs) twice, as `kit tune` processes:
   plain random search with no pruning, and TPE with median pruning. Compute is counted in
   training steps (epochs each trial trained x steps per epoch). Reported: the best validation
   RMSE random search reaches over its full budget, and the steps the pruned search took to
   first reach it (the issue asks for at most half).
2. Overhead: one fixed config trained as `kit tune` trials and as plain `kit run` processes.
   Reported: a trial's time in the study (Optuna's start to end: sampling, the config, the
   whole kit run, the study's bookkeeping) against `kit run`'s own time for the same config
   (run.json's wall_seconds, from loading the data to the saved outputs) and against the whole
   `kit run` process (which also imports TensorFlow). The issue asks for under 5% over `kit run`.

Usage:
    python benchmarks/tune.py [--data ../shared/data/diamonds.csv] [--trials 24] [--epochs 8]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPACE = """    train.learning_rate: {low: 1.0e-4, high: 3.0e-2, log: true}
    model.hidden_units: [[32], [64, 32], [128, 64], [256, 128]]
    model.dropout: {low: 0.0, high: 0.3, step: 0.05}
"""
PROJECT = """task: regression
data:
  train: {data}
  target: price
  batch_size: 256
train:
  epochs: {epochs}
  verbose: 0
tune:
  objective: val_rmse
  trials: {trials}
  sampler: {sampler}
  pruner: {pruner}
  startup_trials: 5
  warmup_epochs: 2
  seed: {seed}
  space:
{space}"""


def kit(argv: list[str], cwd: Path) -> float:
    """Run `python -m kit ARGV`; its wall time in seconds."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KIT_LOAD_PLUGINS": "", "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "kit", *argv], cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"kit {' '.join(argv)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def make_project(
    folder: Path, data: Path, trials: int, epochs: int, sampler: str, pruner: str, space: str, seed: int = 0
) -> Path:
    folder.mkdir(parents=True)
    text = PROJECT.format(
        data=data, trials=trials, epochs=epochs, sampler=sampler, pruner=pruner, space=space, seed=seed
    )
    (folder / "kit.yaml").write_text(text)
    return folder


def trials_of(folder: Path) -> list:
    import optuna

    study = optuna.load_study(study_name=folder.name, storage=f"sqlite:///{folder / 'tune.db'}")
    return sorted(study.trials, key=lambda t: t.datetime_start)


def steps_of(trial) -> int:
    """Training steps a trial took: the epochs it trained x its steps per epoch (rows // batch)."""
    record = json.loads((Path(trial.user_attrs["kit.run_dir"]) / "run.json").read_text())
    rows = record["data"]["train"]["rows"]
    history = (Path(trial.user_attrs["kit.run_dir"]) / "history.jsonl").read_text().splitlines()
    return len(history) * (rows // 256)


def search(root: Path, data: Path, trials: int, epochs: int, pruner: str, seed: int) -> tuple[list[str], dict]:
    # Different sampler seeds: TPE starts with random trials, which the same seed would make random search's own.
    random_dir = make_project(root / "random", data, trials, epochs, "random", "none", SPACE, seed=seed)
    pruned_dir = make_project(root / "pruned", data, trials, epochs, "tpe", pruner, SPACE, seed=seed + 1)
    seconds = {
        name: kit(["tune", str(folder)], root) for name, folder in (("random", random_dir), ("pruned", pruned_dir))
    }
    random_trials, pruned_trials = trials_of(random_dir), trials_of(pruned_dir)
    target = min(t.value for t in random_trials if t.state.name == "COMPLETE")
    random_steps = sum(steps_of(t) for t in random_trials)
    spent, reached, best = 0, None, float("inf")
    for index, trial in enumerate(pruned_trials):
        spent += steps_of(trial)
        if trial.state.name == "COMPLETE":
            best = min(best, trial.value)
        if reached is None and best <= target:
            reached = (index + 1, spent)
    pruned_steps = sum(steps_of(t) for t in pruned_trials)
    pruned_count = sum(t.state.name == "PRUNED" for t in pruned_trials)
    rows = [
        f"| random search, no pruning | {len(random_trials)} | 0 | {random_steps:,} | {target:.2f} | "
        f"{random_steps:,} (100%) | {seconds['random']:.0f} s |",
        f"| TPE + {pruner} pruning | {len(pruned_trials)} | {pruned_count} | {pruned_steps:,} | {best:.2f} | "
        + (f"{reached[1]:,} ({100 * reached[1] / random_steps:.0f}%, trial {reached[0]})" if reached else "not reached")
        + f" | {seconds['pruned']:.0f} s |",
    ]
    return rows, {"target": target, "reached": reached, "random_steps": random_steps}


def overhead(root: Path, data: Path, epochs: int, repeats: int) -> tuple[list[str], dict]:
    fixed = "    model.dropout: [0.1]\n"
    folder = make_project(root / "overhead", data, repeats, epochs, "random", "none", fixed)
    kit(["tune", str(folder)], root)
    trial_seconds = [t.duration.total_seconds() for t in trials_of(folder)]
    run_seconds, process_seconds = [], []
    for index in range(repeats):
        run_dir = root / f"plain-{index}"
        process_seconds.append(kit(["run", str(folder), "--set", "model.dropout=0.1", "--run-dir", str(run_dir)], root))
        run_seconds.append(json.loads((run_dir / "run.json").read_text())["wall_seconds"])
    trial, run, process = (statistics.median(x) for x in (trial_seconds, run_seconds, process_seconds))
    rows = [
        f"| {epochs} epochs, median of {repeats} | {trial:.2f} s | {run:.2f} s | {process:.2f} s | "
        f"{100 * (trial - run) / run:+.1f}% | {100 * (trial - process) / process:+.1f}% |"
    ]
    return rows, {"trial": trial_seconds, "run": run_seconds, "process": process_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "diamonds.csv")
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pruner", default="median", choices=["median", "hyperband", "successive_halving"])
    parser.add_argument("--no-overhead", action="store_true", help="Only the search comparison.")
    parser.add_argument("--seed", type=int, default=1, help="Random search's sampler seed; the pruned search's is +1.")
    parser.add_argument("--no-results", action="store_true", help="Print only; do not append to RESULTS.md.")
    parser.add_argument("--note", default="", help="What else ran on the machine meanwhile (goes into RESULTS.md).")
    args = parser.parse_args()
    data = args.data.resolve()
    root = Path(tempfile.mkdtemp(prefix="kit-bench-tune-"))
    try:
        search_rows, found = search(root, data, args.trials, args.epochs, args.pruner, args.seed)
        overhead_rows, times = ([], {}) if args.no_overhead else overhead(root, data, args.epochs, args.repeats)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({"search": found, "overhead": times}))
    print("\n".join(search_rows + overhead_rows))
    if args.no_results:
        return
    from benchmarks._kit import append_results

    command = (
        f"`python benchmarks/tune.py --trials {args.trials} --epochs {args.epochs} --pruner {args.pruner} "
        f"--seed {args.seed}`"
    )
    note = f" {args.note}" if args.note else ""
    append_results(
        "kit tune: pruning against random search (diamonds price)",
        f"{command} - the same space (learning rate 1e-4..3e-2 log, hidden units 4 choices, dropout 0..0.3 step "
        f"0.05) and budget ({args.trials} trials x {args.epochs} epochs, batch 256), one worker each; steps = "
        f"epochs trained x steps per epoch.{note}",
        [
            "search",
            "trials",
            "pruned",
            "training steps",
            "best val RMSE ($)",
            "steps to reach random's best",
            "wall time",
        ],
        search_rows,
    )
    if args.no_overhead:
        return
    append_results(
        "kit tune: time per trial against kit run (diamonds price)",
        f"{command} - one fixed config as `kit tune` trials (Optuna's trial duration) and as `kit run` "
        f"processes (run.json wall_seconds; and the whole process, TensorFlow's import included).{note}",
        [
            "config",
            "trial in kit tune",
            "kit run (run.json)",
            "kit run process",
            "overhead vs kit run",
            "vs the process",
        ],
        overhead_rows,
    )


if __name__ == "__main__":
    main()
