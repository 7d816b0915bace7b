"""tf.data pipelines over a `DataPlan`.

Rows stream from the source through a Python generator that parses and
encodes them in chunks (one generator call per 512 rows keeps Python overhead
low), then tf.data unbatches, applies the inputs' preprocessing (tokenising,
image decoding), caches, shuffles, batches and prefetches.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import tensorflow as tf

from kit.data.fields import BadValue, Field, ImageField
from kit.data.plan import DataPlan, parse_row
from kit.data.sources import Row

CHUNK = 512


def _tf_dtype(f: Field) -> tf.DType:
    if isinstance(f, ImageField) and getattr(f, "array_shape", None) is not None:
        return tf.uint8
    return {"str": tf.string, "int32": tf.int32, "float32": tf.float32}[f.dtype]


def _spec(f: Field) -> tf.TensorSpec:
    shape = getattr(f, "array_shape", None) if isinstance(f, ImageField) else None
    return tf.TensorSpec(shape=(None, *(shape or f.shape)), dtype=_tf_dtype(f))


def _numpy_dtype(f: Field) -> Any:
    dtype = _tf_dtype(f)
    return object if dtype == tf.string else dtype.as_numpy_dtype


def encoded_chunks(rows: Iterator[Row], features: list[Field], targets: list[Field]) -> Iterator[Any]:
    """Parse and encode rows, skipping malformed ones, in chunks of numpy arrays.

    Each chunk is `(features, targets)`, or just `features` when there are no targets.
    """
    fields = features + targets
    buffers: list[list[Any]] = [[] for _ in fields]
    for row in rows:
        try:
            values = parse_row(row, fields)
            for f, value in zip(targets, values[len(features) :]):
                f.check(value)
        except BadValue:
            continue  # counted and reported by the scan
        for buffer, f, value in zip(buffers, fields, values):
            buffer.append(f.encode(value))
        if len(buffers[0]) >= CHUNK:
            yield _pack(buffers, features, targets)
            buffers = [[] for _ in fields]
    if buffers and buffers[0]:
        yield _pack(buffers, features, targets)


def _pack(buffers: list[list[Any]], features: list[Field], targets: list[Field]) -> Any:
    fields = features + targets
    arrays = [np.asarray(b, dtype=_numpy_dtype(f)) for b, f in zip(buffers, fields)]
    x = {f.column: a for f, a in zip(features, arrays)}
    if not targets:
        return x
    y = arrays[len(features) :]
    return x, (y[0] if len(y) == 1 else np.stack(y, axis=-1))


def _signature(features: list[Field], targets: list[Field]) -> Any:
    x = {f.column: _spec(f) for f in features}
    if not targets:
        return x
    if len(targets) == 1:
        return x, _spec(targets[0])
    return x, tf.TensorSpec(shape=(None, len(targets)), dtype=_tf_dtype(targets[0]))


def examples(
    plan: DataPlan, split: str, features: list[Field], targets: list[Field], count: int | None = None
) -> tf.data.Dataset:
    """Unbatched (features, target) examples of one split, encoded (features alone without targets).

    `count` (the usable rows the scan found) lets Keras know the epoch length.
    """
    dataset = tf.data.Dataset.from_generator(
        lambda: encoded_chunks(plan.rows(split), features, targets),
        output_signature=_signature(features, targets),
    ).unbatch()
    if count is not None:
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(count))
    return dataset


def batched(
    dataset: tf.data.Dataset,
    preprocess: Any,
    batch_size: int,
    *,
    training: bool,
    seed: int,
    shuffle_buffer: int,
    cache: bool,
) -> tf.data.Dataset:
    """Preprocess, cache, shuffle (training only), batch and prefetch."""
    dataset = prepared(dataset, preprocess, cache)
    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    # A smaller last batch would retrace (and with XLA recompile) the train step.
    return finished(dataset.batch(batch_size, drop_remainder=training))


def prepared(dataset: tf.data.Dataset, preprocess: Any, cache: bool) -> tf.data.Dataset:
    """Examples preprocessed in parallel (order kept) and, when asked, cached in memory."""
    if preprocess is not None:
        dataset = dataset.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.cache() if cache else dataset


def finished(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Deterministic order, sharding by data across workers, prefetching."""
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


class TrainingStream:
    """Shuffled training batches, pass after pass without end, starting from any global step.

    Pass `p` over the examples is shuffled with a seed made of the run's seed
    and `p` alone, so the batches from step `n` on are the same whether the
    run started at step 0 or resumed at step `n`: the data position of an
    interrupted run is just its optimizer's step count.

    Example:
        >>> stream = TrainingStream(examples, batch_size=32, batches_per_pass=100, seed=42, shuffle_buffer=10000)
        >>> model.fit(stream.from_step(250), steps_per_epoch=100, initial_epoch=2, epochs=5)
    """

    def __init__(
        self,
        examples: tf.data.Dataset,
        *,
        batch_size: int,
        batches_per_pass: int,
        seed: int,
        shuffle_buffer: int,
        drop_remainder: bool = True,
    ):
        self.examples = examples
        self.batch_size = batch_size
        self.batches_per_pass = max(int(batches_per_pass), 1)
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.drop_remainder = drop_remainder

    def one_pass(self, number: Any) -> tf.data.Dataset:
        seed = tf.constant(self.seed, tf.int64) * 1_000_003 + tf.cast(number, tf.int64)
        shuffled = self.examples.shuffle(self.shuffle_buffer, seed=seed, reshuffle_each_iteration=False)
        return shuffled.batch(self.batch_size, drop_remainder=self.drop_remainder)

    def from_step(self, step: int) -> tf.data.Dataset:
        first_pass, skip = divmod(int(step), self.batches_per_pass)
        passes = tf.data.Dataset.range(first_pass, 2**62)  # endless; fit's steps_per_epoch bounds each epoch
        return finished(passes.flat_map(self.one_pass).skip(skip))
