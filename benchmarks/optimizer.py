"""One optimizer step on MiniLM's weights: Keras's Adam/AdamW update vs kit's fused one.

    python benchmarks/optimizer.py            # 30 steps each, after 3 warm-up steps
    python benchmarks/optimizer.py --steps 100

Builds a BERT backbone of all-MiniLM-L6-v2's shapes (6 layers, hidden 384,
vocabulary 30,522: 103 weights, 22.7M values; no download), gives every weight
a fixed random gradient, as a training step's: dense, except the token
embedding's, which comes sparse (`tf.IndexedSlices`, one row per token of a
batch of 32 texts of 40 tokens, tokens repeating), and times
`optimizer.apply_gradients` inside a `tf.function`, as a training step runs it:
`keras.optimizers.AdamW` (six element-wise operations per weight) against
`kit.harness.optim.FusedAdamW` (TensorFlow's fused `ResourceApplyAdam`), with
kit's settings (epsilon 1e-8, weight decay 0.01 except on biases and norms,
gradients clipped to a global norm of 1). The Keras side is given the
embedding's gradient dense, as kit's update takes it, so both compute the same
formula; the last column is how far apart the two leave the weights after the
warm-up steps (float rounding only). Appends the table to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import time


def time_steps(optimizer_class: type, variables: list, gradients: list, warmup: int, steps: int) -> tuple[float, list]:
    """Milliseconds per `apply_gradients`, and the weights after the warm-up steps."""
    import tensorflow as tf

    optimizer = optimizer_class(learning_rate=5e-5, weight_decay=0.01, epsilon=1e-8, global_clipnorm=1.0)
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    optimizer.build(variables)

    @tf.function
    def step() -> None:
        optimizer.apply_gradients(zip(gradients, variables))

    for _ in range(warmup):
        step()
    after_warmup = [v.numpy() for v in variables]
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - started) / steps * 1000, after_warmup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import keras_hub
    import numpy as np
    import tensorflow as tf

    from kit.harness.optim import FusedAdamW

    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=30522, num_layers=6, num_heads=12, hidden_dim=384, intermediate_dim=1536,
        max_sequence_length=512,
    )  # fmt: skip
    variables = backbone.trainable_variables
    initial = [v.numpy() for v in variables]
    gradients = [tf.random.stateless_normal(v.shape, seed=[i, 0]) * 1e-3 for i, v in enumerate(variables)]
    # The token embedding's gradient as a batch gives it: one row per token, common tokens repeating.
    tokens = variables.index(backbone.token_embedding.embeddings)
    ids = tf.random.stateless_uniform((32 * 40,), seed=[7, 0], maxval=2_000, dtype="int32")
    rows = tf.random.stateless_normal((32 * 40, 384), seed=[8, 0]) * 1e-3
    sparse = tf.IndexedSlices(rows, ids, dense_shape=tf.constant(variables[tokens].shape))
    dense = tf.convert_to_tensor(sparse)
    results = {}
    for name, cls in (("keras.optimizers.AdamW", keras.optimizers.AdamW), ("kit FusedAdamW", FusedAdamW)):
        for variable, value in zip(variables, initial):
            variable.assign(value)
        gradients[tokens] = sparse if cls is FusedAdamW else dense
        results[name] = time_steps(cls, variables, gradients, args.warmup, args.steps)
        print(f"{name}: {results[name][0]:.1f} ms per step", flush=True)
    (keras_ms, keras_weights), (fused_ms, fused_weights) = results.values()
    apart = max(float(np.max(np.abs(a - b))) for a, b in zip(keras_weights, fused_weights))
    print(f"largest difference in a weight after {args.warmup} steps: {apart:.1e}")
    values = sum(int(np.prod(v.shape)) for v in variables)
    rows = [
        f"| keras.optimizers.AdamW | {keras_ms:.1f} ms | 1.00x | - |",
        f"| kit FusedAdamW (ResourceApplyAdam) | {fused_ms:.1f} ms | {keras_ms / fused_ms:.2f}x | {apart:.1e} |",
    ]
    from _kit import append_results

    append_results(
        "One AdamW step on MiniLM's weights",
        f"`python benchmarks/optimizer.py` - {len(variables)} weights, {values:,} values, the token embedding's "
        "gradient sparse (1,280 rows) and the others dense, clipped to a global norm of 1, "
        f"mean of {args.steps} steps after {args.warmup} warm-up steps, inside a tf.function; "
        "the last column is the largest difference in a weight after the warm-up steps.",
        ["update", "per step", "speed-up", "weights apart"],
        rows,
    )


if __name__ == "__main__":
    main()
