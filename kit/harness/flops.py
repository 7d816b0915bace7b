"""Model FLOPs utilisation: the useful training FLOPs per second a run achieves, over what the machine can do.

Useful FLOPs count the real work of one pass over the training examples:

- Transformer backbones (inputs with a `padding_mask`): the standard estimate of
  6 FLOPs per non-embedding parameter per real token (forward 2, backward 4),
  plus attention's 12 x layers x hidden x length per token (Kaplan et al. 2020,
  appendix; PaLM's MFU uses the same). Padding is not useful work, so a run that
  trims its batches to their longest text gets no credit for it, nor blame.
- Other models: the forward pass of one example as TensorFlow's profiler counts
  it, times 3 (a backward pass costs about twice the forward).

The machine's ceiling is measured once (float32 matrix multiplications of
2,048 x 2,048 for a second, with TensorFlow's threads) and kept in kit's cache
(`$KIT_CACHE_DIR/machine.json`); `KIT_PEAK_FLOPS` (FLOP/s) overrides it. A busy
machine measures a ceiling too low, and every later run would then look closer
to it, even past it: a run that beats the kept ceiling measures it again, and
the cache keeps the higher of the two.
"""

from __future__ import annotations

import math
import os
import platform
import time
from typing import Any

import numpy as np

from kit.cache import read_json, write_json

PEAK_MATRIX = 2048
PEAK_FILE = "machine.json"  # in kit's cache (`kit.cache`)


def epoch_flops(model: Any, built: Any, examples: Any, sample: Any) -> float | None:
    """Useful training FLOPs of one pass over the training examples; None when kit cannot tell.

    `built` is what the backbone family built (`kit.Built`); `examples` the training examples
    (`HeldExamples` when held in memory; streamed ones are not counted); `sample` one batch's features.
    """
    lengths = getattr(examples, "lengths", None)
    if built.backbone is not None and lengths is not None:
        return transformer_flops(built.backbone, np.asarray(lengths, dtype=np.float64))
    count = getattr(examples, "count", None)
    forward = forward_flops(model, sample) if count else None
    return None if forward is None else 3.0 * forward * count


def transformer_flops(backbone: Any, lengths: np.ndarray) -> float:
    """6 x non-embedding parameters x tokens + 12 x layers x hidden x length^2, summed over examples."""
    embeddings = sum(int(np.prod(w.shape)) for w in backbone.weights if "embedding" in w.path)
    dense = backbone.count_params() - embeddings
    layers = int(getattr(backbone, "num_layers", 0) or 0)
    hidden = int(getattr(backbone, "hidden_dim", 0) or 0)
    return float(6.0 * dense * lengths.sum() + 12.0 * layers * hidden * np.square(lengths).sum())


def forward_flops(model: Any, sample: Any) -> float | None:
    """FLOPs of the model's forward pass on one example, as TensorFlow's profiler counts them."""
    import tensorflow as tf

    try:
        one = tf.nest.map_structure(lambda t: t[:1], sample)
        specs = tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), one)
        graph = tf.function(lambda x: model(x, training=False), autograph=False).get_concrete_function(specs).graph
        options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        options["output"] = "none"
        logger = tf.get_logger()
        level = logger.level
        logger.setLevel("ERROR")  # the v1 profiler warns about its own deprecated internals
        try:
            return float(tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops) or None
        finally:
            logger.setLevel(level)
    except Exception:  # noqa: BLE001  a model the profiler cannot read: no utilisation, never a failed run
        return None


def peak_flops(at_least: float = 0.0) -> float:
    """The machine's float32 matrix-multiply ceiling in FLOP/s: `KIT_PEAK_FLOPS`, else measured once and cached.

    `at_least`: a rate this machine has just reached. A kept ceiling below it was measured while something
    else ran, so it is measured again, and the highest measurement is kept. A rate that even a fresh
    measurement stays below (mixed precision, several devices: not what the ceiling measures) is kept too,
    so that runs reaching it again do not measure again.
    """
    if os.environ.get("KIT_PEAK_FLOPS"):
        return float(os.environ["KIT_PEAK_FLOPS"])
    key = machine_key()
    kept, passed = _cached_peak(key)
    if kept and at_least <= max(kept, passed):
        return kept
    measured = _measure_peak()
    if measured < at_least:  # a second of other work can read low: once more, for longer, before believing it
        measured = max(measured, _measure_peak(seconds=3.0))
    latest, latest_passed = _cached_peak(key)  # another run may have kept a higher one meanwhile
    peak = max(measured, kept, latest)
    passed = max(passed, latest_passed, at_least if at_least > peak else 0.0)
    write_json(PEAK_FILE, {"key": key, "peak_flops": peak, "passed_by": passed})
    return peak


def machine_key() -> str:
    """What the ceiling depends on: the processor, its CPUs, and the threads TensorFlow gives one operation
    (`TF_NUM_INTRAOP_THREADS`; unset or 0 is TensorFlow's default, one per CPU)."""
    cpus = os.cpu_count()
    threads = os.environ.get("TF_NUM_INTRAOP_THREADS", "").strip()
    return f"{platform.processor() or platform.machine()}|{cpus}|{threads if threads not in ('', '0') else cpus}"


def _cached_peak(key: str) -> tuple[float, float]:
    """(the ceiling kept for this machine `key`, the highest rate kept as passing it); 0.0 for what is not
    kept, another machine's, or damaged."""
    cached = read_json(PEAK_FILE)
    if not isinstance(cached, dict) or cached.get("key") != key:
        return 0.0, 0.0
    return _positive(cached.get("peak_flops")), _positive(cached.get("passed_by"))


def _positive(value: Any) -> float:
    """`value` as a finite positive float, else 0.0."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    return number if math.isfinite(number) and number > 0 else 0.0


def _measure_peak(seconds: float = 1.0) -> float:
    import tensorflow as tf

    a = tf.random.normal((PEAK_MATRIX, PEAK_MATRIX))
    b = tf.random.normal((PEAK_MATRIX, PEAK_MATRIX))
    tf.matmul(a, b).numpy()  # warm-up
    best, started = 0.0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        tick = time.perf_counter()
        tf.matmul(a, b).numpy()
        best = max(best, 2.0 * PEAK_MATRIX**3 / (time.perf_counter() - tick))
    return best


def utilisation(flops_per_epoch: float | None, epochs: float, training_seconds: float) -> dict[str, float] | None:
    """The MFU record for run.json: useful FLOP/s, the machine's ceiling, and their ratio."""
    if not flops_per_epoch or training_seconds <= 0:
        return None
    achieved = flops_per_epoch * epochs / training_seconds
    peak = peak_flops(at_least=achieved)
    return {
        "useful_flops_per_epoch": flops_per_epoch,
        "achieved_flops_per_second": achieved,
        "peak_flops_per_second": peak,
        "mfu": achieved / peak,
    }
