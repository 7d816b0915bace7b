"""Input pipeline and scale: is reading the CSV ever the bottleneck, and does memory grow with the file?

    python benchmarks/pipeline.py                 # ../shared/data/diamonds.csv
    python benchmarks/pipeline.py --data my.csv --target price

1. Steps/s of the same kit model trained from kit's CSV pipeline (parse,
   preprocess, cache, per-pass shuffle) vs from the same examples already in
   memory as tensors (`from_tensor_slices`), interleaved in one process.
   Goal: at least 0.95.
2. `kit run` on the file and on the file repeated 10 times, each in a fresh
   process under `/usr/bin/time -v`: peak RSS (goal: at most 1.1x) and
   training time per example (goal: flat within 10%), with `data.cache: auto`
   (held in memory when small, the default) and `false` (streamed every epoch).

Appends both tables to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _kit import append_results

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "diamonds.csv"


def project(folder: Path, data: Path, target: str, epochs: int = 2, batch: int = 256, cache: str = "auto") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kit.yaml").write_text(
        f"task: regression\ndata:\n  train: {data}\n  target: {target}\n  batch_size: {batch}\n  cache: {cache}\n"
        f"train:\n  epochs: {epochs}\n  verbose: 0\n"
    )
    return folder


def pipeline_ratio(folder: Path, steps: int, rounds: int) -> tuple[float, float]:
    """(kit pipeline steps/s, in-memory steps/s), best of interleaved rounds."""
    import numpy as np
    import tensorflow as tf
    from _kit import model_and_stream

    config, model, stream = model_and_stream(folder, schedule_epochs=10)
    # The same examples, materialised once as tensors in memory.
    batches = list(stream.from_step(0).take(stream.batches_per_pass))
    features = {k: np.concatenate([b[0][k].numpy() for b in batches]) for k in batches[0][0]}
    targets = np.concatenate([b[1].numpy() for b in batches])
    memory = (
        tf.data.Dataset.from_tensor_slices((features, targets))
        .batch(config.data.batch_size, drop_remainder=True)
        .repeat()
        .prefetch(tf.data.AUTOTUNE)
    )
    sides = {"csv": stream.from_step(0), "memory": memory}
    for dataset in sides.values():
        model.fit(dataset, steps_per_epoch=5, epochs=1, verbose=0)
    best = {name: 0.0 for name in sides}
    for _ in range(rounds):
        for name, dataset in sides.items():
            started = time.perf_counter()
            model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
            best[name] = max(best[name], steps / (time.perf_counter() - started))
    return best["csv"], best["memory"]


def timed_run(folder: Path) -> tuple[float, float, int]:
    """(peak RSS in MB, training seconds, training examples) of `kit run` in a fresh process."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        ["/usr/bin/time", "-v", sys.executable, "-m", "kit", "run", str(folder)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    run_dir = folder / "runs" / "run-1"
    seconds = sum(json.loads(line)["seconds"] for line in (run_dir / "history.jsonl").read_text().splitlines())
    rows = json.loads((run_dir / "run.json").read_text())["data"]["train"]["rows"]
    epochs = len((run_dir / "history.jsonl").read_text().splitlines())
    return rss_kb / 1024, seconds, rows * epochs


def repeated(data: Path, times: int, folder: Path) -> Path:
    lines = data.read_text(encoding="utf-8").splitlines(keepends=True)
    target = folder / f"{data.stem}-x{times}.csv"
    with open(target, "w", encoding="utf-8") as handle:
        handle.write(lines[0])
        for _ in range(times):
            handle.writelines(lines[1:])
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--target", default="price")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not args.data.is_file():
        parser.error(f"{args.data} does not exist; pass --data and --target")
    scratch = Path(tempfile.mkdtemp(prefix="kit-pipeline-"))
    csv_speed, memory_speed = pipeline_ratio(
        project(scratch / "ratio", args.data, args.target), args.steps, args.rounds
    )
    line = f"| {args.data.name} | {csv_speed:.1f} | {memory_speed:.1f} | {csv_speed / memory_speed:.3f} |"
    print(line, flush=True)
    big = repeated(args.data, 10, scratch)
    scales = []
    for cache in ("auto", "false"):  # held in memory (the default here), and streamed from the file
        small_rss, small_s, small_n = timed_run(
            project(scratch / f"x1-{cache}", args.data, args.target, 1, cache=cache)
        )
        big_rss, big_s, big_n = timed_run(project(scratch / f"x10-{cache}", big, args.target, 1, cache=cache))
        scales.append(
            f"| {args.data.name} | `{cache}` | {small_n:,} / {big_n:,} | {small_rss:.0f} / {big_rss:.0f} MB | "
            f"{big_rss / small_rss:.2f}x | {1e6 * small_s / small_n:.1f} / {1e6 * big_s / big_n:.1f} us | "
            f"{(big_s / big_n) / (small_s / small_n):.2f}x |"
        )
        print(scales[-1], flush=True)
    shutil.rmtree(scratch, ignore_errors=True)
    append_results(
        "Input pipeline: CSV vs in-memory tensors",
        f"`python benchmarks/pipeline.py` - same model and batches, best of {args.rounds} interleaved rounds of "
        f"{args.steps} steps.",
        ["data", "CSV pipeline steps/s", "in-memory steps/s", "ratio"],
        [line],
    )
    append_results(
        "Scale: the training file repeated 10x",
        "`python benchmarks/pipeline.py` - `kit run` (1 epoch, batch 256) under `/usr/bin/time -v`.",
        [
            "data",
            "`data.cache`",
            "training examples 1x / 10x",
            "peak RSS 1x / 10x",
            "RSS ratio",
            "training time per example 1x / 10x",
            "ratio",
        ],
        scales,
    )


if __name__ == "__main__":
    main()
