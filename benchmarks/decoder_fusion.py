"""Decoding with dense layers traced as fused products (what `kit generate` does without XLA) vs Keras's layers.

    python benchmarks/decoder_fusion.py                     # a gpt-tiny-sized model, random weights
    python benchmarks/decoder_fusion.py --run RUN_DIR       # a trained generation run
    python benchmarks/decoder_fusion.py --folder FOLDER     # a keras-hub preset or Hugging Face folder (SmolLM2)

keras-hub's decoding step (`generate_step`) is traced twice on the same model as `kit generate` traces it
(one graph for any batch size and length, `kit_plugins.generation.sampling.Generator._decoder`): once as
Keras writes its layers and once inside `kit.fused_dense.fused_dense_layers()`. The two decoders then run
in turn (which goes first alternates), greedy, a fixed number of new tokens, so both see the same machine.
Prints the median tokens/s of each and whether they chose the same tokens, and appends the table to
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def load(args: argparse.Namespace):
    import keras_hub

    if args.run:
        from kit_plugins.generation.sampling import Generator

        return Generator(args.run).model, f"run {args.run}"
    if args.folder:
        from kit.text import load_preset

        return load_preset(str(args.folder), keras_hub.models.CausalLM), Path(args.folder).name
    from generation import tiny_model

    return tiny_model(args.prompt_tokens + args.new_tokens), "gpt-tiny (random weights, 8,000 tokens)"


def open_shape_decoder(model, inputs):
    """keras-hub's greedy `generate_step` as one graph for any batch size and length, as `kit generate`
    traces it: no stop token, so every call generates the same number of tokens."""
    import tensorflow as tf

    any_shape = {name: tf.TensorSpec([None] * len(value.shape), value.dtype) for name, value in inputs.items()}

    @tf.function(input_signature=[any_shape], autograph=False)
    def decode(features):
        return model.generate_step(features, None)

    return decode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a generation run directory")
    parser.add_argument("--folder", type=Path, help="a keras-hub preset or Hugging Face model folder")
    parser.add_argument("--prompt-tokens", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=40)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf
    from _kit import append_results, median_seconds_in_turn

    from kit.fused_dense import fused_dense_layers

    keras.utils.set_random_seed(0)
    model, what = load(args)
    model.compile(sampler="greedy", jit_compile=False)  # keras-hub reads `model.sampler` while tracing
    rows = []
    for batch in args.batch:
        length = args.prompt_tokens + args.new_tokens
        token_ids = tf.random.uniform([batch, length], 2, 30, dtype=tf.int32, seed=1)
        mask = tf.sequence_mask(tf.fill([batch], args.prompt_tokens), length)
        inputs = {"token_ids": tf.where(mask, token_ids, 0), "padding_mask": mask}
        decoders, tokens = {}, {}
        for name, block in (("Keras's layers", contextlib.nullcontext), ("fused", fused_dense_layers)):
            decoders[name] = open_shape_decoder(model, inputs)
            with block():  # traced on its first call
                tokens[name] = np.asarray(decoders[name](inputs)["token_ids"])
        calls = {name: lambda d=decoder, x=inputs: np.asarray(d(x)["token_ids"]) for name, decoder in decoders.items()}
        seconds = median_seconds_in_turn(calls, args.rounds)
        speed = {name: batch * args.new_tokens / s for name, s in seconds.items()}
        plain, fused = speed["Keras's layers"], speed["fused"]
        same = "yes" if np.array_equal(*tokens.values()) else "no"
        row = f"| {what} | {batch} | {args.new_tokens} | {plain:,.0f} | {fused:,.0f} | {fused / plain:.2f}x | {same} |"
        print(row, flush=True)
        rows.append(row)
    append_results(
        "Decoding without XLA: dense layers as fused products vs Keras's layers",
        f"`python benchmarks/decoder_fusion.py --prompt-tokens {args.prompt_tokens} --new-tokens {args.new_tokens} "
        f"--rounds {args.rounds}` - greedy, both decoders traced on one model as kit generate traces them and run "
        f"in turn, median of {args.rounds}; tokens/s counts generated tokens.",
        ["model", "batch", "new tokens", "Keras's layers tokens/s", "fused tokens/s", "speed-up", "same tokens"],
        rows,
    )


if __name__ == "__main__":
    main()
