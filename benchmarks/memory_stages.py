"""Where a kit fine-tune's memory goes: resident and peak RSS after each stage of a run.

    python benchmarks/memory_stages.py
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 python benchmarks/memory_stages.py   # another allocator

The run is the kit side of `benchmarks/vs_transformers.py` (all-MiniLM-L6-v2
on rotten_tomatoes, sequence length 64, batch 32, kit's defaults), in a fresh
process. The stages: importing TensorFlow, Keras and keras-hub; loading the
backbone and its tokenizer; preparing the examples; building the model and its
optimizer slots (the stages of `kit.harness.stages`, which each run records in
run.json); the first training step (tracing it included); the rest of the
steps; saving; the final evaluation. Appends the table to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from _kit import add_callback, append_results, run_side
from vs_transformers import DATA, kit_project, minilm_folder, split_data

LABELS = {  # kit.harness.stages names -> what the process holds once the stage is over
    "scan": "rows read and checked",
    "adapt": "backbone and tokenizer loaded",
    "datasets": "examples prepared (held in memory)",
    "model": "model compiled, optimizer slots built",
    "restore": "saved state checked",
    "saving": "model saved",
    "evaluation": "final evaluation",
    "outputs": "metrics and plots written",
}


def resident_and_peak_mb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MB, from /proc (Linux)."""
    found = {}
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) / 1024
    return found["VmRSS"], found["VmHWM"]


def measured_run(args: argparse.Namespace) -> list[dict]:
    """Run kit on the project in `args.folder`, recording memory after each stage."""
    stages: list[dict] = []
    started = time.perf_counter()

    def record(label: str) -> None:
        resident, peak = resident_and_peak_mb()
        stages.append({"stage": label, "rss_mb": resident, "peak_mb": peak, "at_s": time.perf_counter() - started})

    from kit.commands import quiet_tensorflow

    quiet_tensorflow()  # as `kit run` imports TensorFlow and Keras
    import keras
    import keras_hub  # noqa: F401

    record("TensorFlow, Keras and keras-hub imported")
    from contextlib import contextmanager

    from kit.config import load_config
    from kit.harness import run
    from kit.harness.stages import Stages

    timed = Stages.stage

    @contextmanager
    def stage_then_record(self, name):  # kit's own stage timer, recording memory as each stage ends
        with timed(self, name):
            yield
        record(LABELS.get(name, name))

    Stages.stage = stage_then_record

    class Steps(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 0:
                record("first training step (traced and run)")

        def on_train_end(self, logs=None):
            record(f"{args.steps} training steps")

    add_callback(Steps(), "bench-memory")
    run.train(load_config(Path(args.folder)), argv=["bench"])
    return stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.folder:
        print(json.dumps({"stages": measured_run(args)}))
        return
    if not Path("/proc/self/status").exists():
        sys.exit("This benchmark reads /proc/self/status: run it on Linux.")
    folder = Path(tempfile.mkdtemp(prefix="kit-memory-"))
    train, test, *_ = split_data(args.data, folder)
    kit_project(folder / "kit", str(train), str(test), minilm_folder(), steps=args.steps)
    argv = [sys.executable, __file__, "--folder", str(folder / "kit"), "--steps", str(args.steps)]
    stages = run_side(argv, args.threads, "kit")["stages"]
    lines, previous = [], 0.0
    for stage in stages:
        lines.append(
            f"| {stage['stage']} | {stage['at_s']:.1f} s | {stage['rss_mb']:,.0f} MB "
            f"| {stage['rss_mb'] - previous:+,.0f} MB | {stage['peak_mb']:,.0f} MB |"
        )
        previous = stage["rss_mb"]
    print("\n".join(lines))
    allocator = os.environ.get("LD_PRELOAD") or "glibc malloc"
    append_results(
        "Memory by stage: kit fine-tuning MiniLM",
        f"`python benchmarks/memory_stages.py` - rotten_tomatoes, sequence length 64, batch 32, kit's defaults, "
        f"{args.steps} steps, {args.threads} threads, allocator: {allocator}.",
        ["after", "time", "resident", "change", "peak so far"],
        lines,
    )


if __name__ == "__main__":
    main()
