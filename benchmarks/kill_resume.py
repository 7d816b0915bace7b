"""Kill `kit run` with SIGKILL at random moments on real data; check it still ends bit-identical.

    python benchmarks/kill_resume.py                    # diamonds regression + rotten_tomatoes text classification
    python benchmarks/kill_resume.py --kills 8 --seed 3

For each project: one run straight through, then one run that is killed
with `kill -9` from outside at a random wall-clock moment (mid-epoch,
mid-save, mid-start-up, wherever it lands), restarted with the same command,
killed again, and so on `--kills` times before it may finish. The final
epoch checkpoint, metrics.json and history.jsonl (but for times) must equal the straight run's exactly.
Prints the kills survived and appends them to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

PROJECTS = {
    "diamonds (regression, 53,940 rows)": (
        "task: regression\ndata:\n  train: {data}/diamonds.csv\n  target: price\n  batch_size: 256\n"
        "train:\n  epochs: 3\n  checkpoint_every_steps: 20\n  verbose: 0\n"
    ),
    "rotten_tomatoes (classification, bert-tiny)": (
        "task: classification\ndata:\n  train: {data}/rotten_tomatoes.csv\n  batch_size: 64\n"
        "model:\n  sequence_length: 48\ntrain:\n  epochs: 2\n  checkpoint_every_steps: 25\n  verbose: 0\n"
    ),
}


def start(folder: Path) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen(
        [sys.executable, "-m", "kit", "run", str(folder)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def final_weights(run_dir: Path) -> dict:
    import h5py

    arrays = {}
    checkpoint = sorted((run_dir / "checkpoints").glob("epoch-*.weights.h5"))[-1]
    with h5py.File(checkpoint, "r") as handle:
        handle.visititems(lambda n, item: arrays.update({n: item[()]}) if isinstance(item, h5py.Dataset) else None)
    return arrays


def same(a: Path, b: Path) -> bool:
    """Same final weights, byte-identical metrics.json, the same history.jsonl but for epoch times."""
    import numpy as np

    left, right = final_weights(a), final_weights(b)
    histories = [[_timeless(line) for line in (d / "history.jsonl").read_text().splitlines()] for d in (a, b)]
    return (
        left.keys() == right.keys()
        and all(np.array_equal(left[k], right[k]) for k in left)
        and (a / "metrics.json").read_bytes() == (b / "metrics.json").read_bytes()
        and histories[0] == histories[1]
    )


def _timeless(line: str) -> dict:
    record = json.loads(line)
    record.pop("seconds", None)
    return record


def kill_and_resume(folder: Path, kills: int, rng: random.Random, training_seconds: float) -> int:
    """Run to completion, killing it `kills` times at random moments of training; return the kills that landed."""
    landed = 0
    while True:
        process = start(folder)
        if landed < kills and _training_started(folder, process):
            try:
                process.wait(timeout=rng.uniform(0, training_seconds))
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                process.wait()
                landed += 1
                continue
        if process.wait() != 0:
            raise SystemExit(f"kit run failed after {landed} kills:\n{process.stderr.read().decode()[-3000:]}")
        return landed


def _training_started(folder: Path, process: subprocess.Popen) -> bool:
    """Wait until the run has saved its first state or finished epoch (so kills land in training)."""
    run_dir = folder / "runs" / "run-1"
    while process.poll() is None:
        if list(run_dir.glob("backup/step-*")) or (run_dir / "history.jsonl").exists():
            return True
        time.sleep(0.05)
    return False


def _training_seconds(run_dir: Path) -> float:
    lines = (run_dir / "history.jsonl").read_text().splitlines()
    return sum(json.loads(line)["seconds"] for line in lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=5, help="SIGKILLs per project")
    parser.add_argument("--seed", type=int, default=None, help="seed for the kill moments (default: random)")
    args = parser.parse_args()
    if not (DATA / "diamonds.csv").is_file():
        parser.error(f"needs the shared data sets in {DATA}")
    rng = random.Random(args.seed)
    lines = []
    for name, config in PROJECTS.items():
        root = Path(tempfile.mkdtemp(prefix="kit-kill-"))
        folders = {}
        for side in ("straight", "killed"):
            folders[side] = root / side
            folders[side].mkdir()
            (folders[side] / "kit.yaml").write_text(config.format(data=DATA))
        began = time.perf_counter()
        if start(folders["straight"]).wait() != 0:
            raise SystemExit(f"{name}: the uninterrupted run failed")
        seconds = time.perf_counter() - began
        training = _training_seconds(folders["straight"] / "runs" / "run-1")
        landed = kill_and_resume(folders["killed"], args.kills, rng, training)
        identical = same(folders["straight"] / "runs" / "run-1", folders["killed"] / "runs" / "run-1")
        resumed = json.loads((folders["killed"] / "runs" / "run-1" / "run.json").read_text()).get("resumed", 0)
        line = f"| {name} | {landed} | {resumed} | {'yes' if identical else 'NO'} | {seconds:.0f} s |"
        print(line, flush=True)
        lines.append(line)
        shutil.rmtree(root, ignore_errors=True)
    header = (
        f"\n### Kill and resume on real data ({datetime.date.today()}, {platform.machine()}, {os.cpu_count()} CPUs)\n\n"
        f"`python benchmarks/kill_resume.py --kills {args.kills}` - SIGKILL from outside at random moments.\n\n"
        "| project | kills | resumes recorded | final weights, metrics and history identical | uninterrupted run |\n"
        "|---|---|---|---|---|\n"
    )
    with open(RESULTS, "a", encoding="utf-8") as handle:
        handle.write(header + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
