"""Precision and XLA on this machine: which settings make kit's defaults.

    python benchmarks/precision.py                       # MiniLM fine-tuning if installed, else bert-tiny
    python benchmarks/precision.py --backbone bert-tiny

Trains the same kit classification model on `../shared/data/rotten_tomatoes.csv`
(sequence length 64, batch 32) with each combination of `train.precision`
(float32, mixed_bfloat16) and `train.jit_compile` (false, true), interleaved
round by round in one process, and reports training examples/s after a
warm-up (which includes XLA's compiles). With XLA off, kit trims each batch to
its longest text (`data.trim_padding: auto`); with XLA on every batch keeps
the full length, since XLA compiles once per shape. Appends the table to
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from _kit import append_results  # noqa: E402
from finetune import DATA, minilm_folder  # noqa: E402


def kit_model(data: Path, backbone: str, precision: str, jit: bool) -> tuple:
    from _kit import model_and_stream

    from kit.harness.strategy import set_precision

    set_precision(precision)  # before the model is built, as `kit run` does
    folder = Path(tempfile.mkdtemp(prefix="kit-precision-"))
    (folder / "kit.yaml").write_text(
        f"task: classification\ndata:\n  train: {data}\n  batch_size: 32\n"
        f"model:\n  backbone: {backbone}\n  sequence_length: 64\n"
        f"train:\n  verbose: 0\n  precision: {precision}\n  jit_compile: {str(jit).lower()}\n"
    )
    _, model, stream = model_and_stream(folder)
    set_precision("float32")
    return model, stream.from_step(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default=None)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    backbone = args.backbone or minilm_folder() or "bert-tiny"
    settings = list(itertools.product(["float32", "mixed_bfloat16"], [False, True]))
    sides = {setting: kit_model(args.data, backbone, *setting) for setting in settings}
    from tensorflow.python.framework import config as framework_config

    # Each model was compiled under its own setting (XLA needs op determinism off); they then all run
    # with it off, as a `kit run` with XLA does.
    framework_config.disable_op_determinism()
    for model, dataset in sides.values():  # compile, trace every batch length
        model.fit(dataset, steps_per_epoch=args.warmup, epochs=1, verbose=0)
    best = {setting: 0.0 for setting in settings}
    for _ in range(args.rounds):
        for setting, (model, dataset) in sides.items():
            started = time.perf_counter()
            model.fit(dataset, steps_per_epoch=args.steps, epochs=1, verbose=0)
            best[setting] = max(best[setting], args.steps * 32 / (time.perf_counter() - started))
    reference = best[("float32", False)]
    lines = []
    name = Path(backbone).parent.name if Path(backbone).name == "model" else Path(backbone).name
    for (precision, jit), speed in best.items():
        line = f"| {name} | {precision} | {'on' if jit else 'off'} | {speed:.1f} | {speed / reference:.2f}x |"
        print(line, flush=True)
        lines.append(line)
    append_results(
        "Precision and XLA on CPU",
        f"`python benchmarks/precision.py` - sequence length 64, batch 32, best of {args.rounds} interleaved rounds "
        f"of {args.steps} steps after {args.warmup} warm-up steps; training examples/s.",
        ["backbone", "precision", "XLA", "examples/s", "vs float32, XLA off (kit's default)"],
        lines,
    )


if __name__ == "__main__":
    main()
