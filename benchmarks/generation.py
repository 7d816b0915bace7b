"""Generation throughput: keras-hub's cached decoding (what `kit generate` uses) vs recomputing
the whole prefix for every new token, on the same model, interleaved in one process.

    python benchmarks/generation.py                  # a gpt-tiny-sized model, random weights
    python benchmarks/generation.py --run RUN_DIR    # a trained generation run

Prints tokens/s for each and the ratio, and appends them to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

RESULTS = Path(__file__).with_name("RESULTS.md")


def tiny_model(context: int):
    import keras_hub
    from kit_plugins.generation.backbones import GPTFromScratch

    words = ["<pad>", "<|endoftext|>", *"abcdefghijklmnopqrstuvwxyz", "Ġ", "th"]
    vocabulary = {w: i for i, w in enumerate(words)}
    tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=vocabulary, merges=["t h"])
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=8000, max_sequence_length=context, **GPTFromScratch.sizes["gpt-tiny"]
    )
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(tokenizer, sequence_length=context)
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=preprocessor)


def cached(model, token_ids, padding_mask):
    from _kit import detached_preprocessor

    with detached_preprocessor(model):
        return model.generate({"token_ids": token_ids, "padding_mask": padding_mask}, stop_token_ids=None)


def uncached_function(model):
    """Greedy decoding that runs the full forward pass over the padded sequence for every token."""
    import tensorflow as tf

    @tf.function
    def run(token_ids, start):
        length = tf.shape(token_ids)[1]

        def body(index, ids):
            mask = tf.sequence_mask(tf.fill([tf.shape(ids)[0]], index), length)
            logits = model({"token_ids": ids, "padding_mask": mask}, training=False)
            next_id = tf.cast(tf.argmax(logits[:, index - 1, :], axis=-1), ids.dtype)
            column = tf.one_hot(index, length, dtype=ids.dtype)[tf.newaxis, :]
            return index + 1, ids * (1 - column) + next_id[:, tf.newaxis] * column

        _, ids = tf.while_loop(lambda i, _: i < length, body, (start, token_ids))
        return ids

    return run


def measure(fn, repeats: int) -> float:
    fn()  # compile
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a generation run directory (default: random gpt-tiny)")
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=112)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    context = args.prompt_tokens + args.new_tokens
    if args.run:
        from kit_plugins.generation.sampling import Generator

        model = Generator(args.run).model
        what = f"run {args.run}"
    else:
        model = tiny_model(context)
        what = "gpt-tiny (random weights)"
    model.compile(sampler="greedy")
    uncached = uncached_function(model)
    start = tf.constant(args.prompt_tokens)
    lines = []
    for batch in args.batch:
        token_ids = tf.random.uniform([batch, context], 2, 30, dtype=tf.int32, seed=1)
        mask = tf.sequence_mask(tf.fill([batch], args.prompt_tokens), context)
        prompt_ids = tf.where(mask, token_ids, 0)
        generated = batch * args.new_tokens
        fast = measure(lambda ids=prompt_ids, m=mask: cached(model, ids, m), args.repeats)
        slow = measure(lambda ids=prompt_ids: uncached(ids, start).numpy(), args.repeats)
        line = (
            f"| {what} | {batch} | {args.prompt_tokens}+{args.new_tokens} | {generated / fast:,.0f} | "
            f"{generated / slow:,.0f} | {slow / fast:.2f}x |"
        )
        print(line, flush=True)
        lines.append(line)
    write_results(lines)


def write_results(lines: list[str]) -> None:
    import keras_hub
    import tensorflow as tf

    header = (
        f"\n### Generation: cached vs uncached decoding ({datetime.date.today()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, TensorFlow {tf.__version__}, keras-hub {keras_hub.__version__})\n\n"
        f"`python benchmarks/generation.py` - greedy, best of 3; tokens/s counts generated tokens.\n\n"
        "| model | batch | prompt+new tokens | cached tokens/s | uncached tokens/s | cached speed-up |\n"
        "|---|---|---|---|---|---|\n"
    )
    with open(RESULTS, "a", encoding="utf-8") as handle:
        handle.write(header + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
