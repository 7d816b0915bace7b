"""tf.data pipelines over a `DataPlan`.

Rows stream from the source through a Python generator that parses and
encodes them in chunks (one generator call per 512 rows keeps Python overhead
low), then tf.data unbatches and applies the inputs' preprocessing (tokenising,
image decoding). From there, two ways to serve batches epoch after epoch:

- `HeldExamples`: the preprocessed examples gathered once into one tensor per
  component; a batch is one gather from each. This is the fast path
  and the compact one: tf.data's own `cache()` keeps every example as a
  separate element (about 1.7 KB of bookkeeping per diamonds row, 40 times its
  numbers) and per-element shuffle and batch cost more than a small model's step.
- streaming: the file is read again every epoch and shuffled through a buffer,
  so memory stays flat however large the file.

`data.cache` chooses: `true` holds, `false` streams, `auto` holds when the
examples take at most `MEMORY_LIMIT` bytes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import tensorflow as tf

from kit.data.fields import BadValue, Field, ImageField
from kit.data.plan import DataPlan, parse_row
from kit.data.sources import Row

CHUNK = 512
MEMORY_LIMIT = 1 << 30  # bytes of preprocessed examples `data.cache: auto` keeps in memory
GROUP_WINDOW = 50  # batches sorted together by `group_by_length`


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


def encoded_chunks(
    rows: Iterator[Row], features: list[Field], targets: list[Field], check: Callable[[list[Any]], None] | None = None
) -> Iterator[Any]:
    """Parse and encode rows, skipping malformed ones, in chunks of numpy arrays.

    Each chunk is `(features, targets)`, or just `features` when there are no targets.
    `check` is the row-level check the scan applied (`kit.data.plan.scan`).
    """
    fields = features + targets
    buffers: list[list[Any]] = [[] for _ in fields]
    for row in rows:
        try:
            values = parse_row(row, fields)
            for f, value in zip(targets, values[len(features) :]):
                f.check(value)
            if check is not None:
                check(values)
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
    plan: DataPlan,
    split: str,
    features: list[Field],
    targets: list[Field],
    count: int | None = None,
    check: Callable[[list[Any]], None] | None = None,
) -> tf.data.Dataset:
    """Unbatched (features, target) examples of one split, encoded (features alone without targets).

    `count` (the usable rows the scan found) lets Keras know the epoch length; `check` is the
    scan's row-level check, so the rows it found malformed are left out here too.
    """
    dataset = tf.data.Dataset.from_generator(
        lambda: encoded_chunks(plan.rows(split), features, targets, check),
        output_signature=_signature(features, targets),
    ).unbatch()
    if count is not None:
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(count))
    return without_autotuning(dataset)  # options flow downstream: every pipeline built on these examples


def batched(
    dataset: tf.data.Dataset,
    preprocess: Any,
    batch_size: int,
    *,
    training: bool,
    seed: int,
    shuffle_buffer: int,
) -> tf.data.Dataset:
    """Preprocess, shuffle (training only), batch and prefetch."""
    dataset = prepared(dataset, preprocess)
    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    # A smaller last batch would retrace (and with XLA recompile) the train step.
    return finished(dataset.batch(batch_size, drop_remainder=training))


PREPROCESS_BATCH = 256  # examples preprocessed together when preprocessing is vectorised


def prepared(dataset: tf.data.Dataset, preprocess: Any, vectorised: bool = False) -> tf.data.Dataset:
    """Examples preprocessed in parallel, order kept (`data.cache` then decides whether they are held).

    With `vectorised`, `preprocess` takes a batch: examples go through it `PREPROCESS_BATCH` at a time and
    come out one by one again (keras-hub's tokenizers are 3x faster on batches than one text at a time).
    """
    if preprocess is None:
        return dataset
    if vectorised:
        batches = dataset.batch(PREPROCESS_BATCH).map(
            preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
        return batches.unbatch()
    return dataset.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


class HeldExamples:
    """Examples held in memory as one tensor per component (the first axis counts examples).

    Example:
        >>> held = HeldExamples.collect(examples, limit=None)
        >>> held.batches(32)  # file order, for evaluation
    """

    def __init__(self, tensors: Any):
        self.tensors = tensors  # tensors, or DictionaryColumns for repetitive string columns
        self.count = len(tf.nest.flatten(tensors)[0])
        features = tensors[0] if isinstance(tensors, tuple) else tensors
        self.lengths = None  # each example's number of real tokens, when the examples are token sequences
        if isinstance(features, dict) and "padding_mask" in features:
            with tf.device("/cpu:0"):  # eagerly: tf.data functions capture it
                self.lengths = tf.reduce_sum(tf.cast(features["padding_mask"], tf.int32), axis=1)

    @classmethod
    def collect(cls, dataset: tf.data.Dataset, limit: int | None) -> HeldExamples | None:
        """Gather `dataset`'s examples; None as soon as they pass `limit` bytes (None: no limit).

        Parts stay TensorFlow tensors (strings never become Python objects) and live on the host.
        """
        parts, size = [], 0
        with tf.device("/cpu:0"):
            for part in dataset.batch(4096):
                parts.append(part)
                size += sum(_nbytes(tensor) for tensor in tf.nest.flatten(part))
                if limit is not None and size > limit:
                    return None
            if not parts:
                return None
            return cls(tf.nest.map_structure(lambda *pieces: compact(tf.concat(pieces, axis=0)), *parts))

    @tf.autograph.experimental.do_not_convert  # plain graph code (see `kit.backbone.plain_graph_code`)
    def gather(self, indices: tf.Tensor) -> Any:
        """The examples at `indices`, batched (a tf.data map function)."""
        return tf.nest.map_structure(lambda column: gathered(column, indices), self.tensors)

    def batches(self, batch_size: int, by_length: bool = False) -> tf.data.Dataset:
        """All examples, `batch_size` at a time (the last batch may be smaller): in file order, or with
        `by_length` (token sequences only) shortest first, so that batches cut to their longest text
        (`trimmed`) carry little padding. Evaluation does not depend on the order; on MiniLM it is 2.4x faster."""
        if by_length and self.lengths is not None:
            order = tf.argsort(self.lengths, stable=True)
            indices = tf.data.Dataset.from_tensor_slices(tf.cast(order, tf.int64)).batch(batch_size)
        else:
            indices = tf.data.Dataset.range(self.count).batch(batch_size)
        return indices.map(self.gather)

    def shuffled_batches(
        self, seed: tf.Tensor, batch_size: int, drop_remainder: bool, group_by_length: bool = False
    ) -> tf.data.Dataset:
        """One pass in the order of a permutation drawn from `seed` (shape [2]); same seed, same batches.

        `group_by_length` sorts each window of `GROUP_WINDOW` batches of the permutation by text
        length before cutting it into batches, then shuffles the batches: texts of like length share a
        batch, so trimmed batches carry little padding (Hugging Face's `group_by_length`).
        """
        order = tf.argsort(tf.random.stateless_uniform([self.count], seed=seed))
        if not drop_remainder:  # kit keeps a remainder only when all examples make less than one batch
            rows = order[tf.newaxis, :]
        else:
            order = order[: (self.count // batch_size) * batch_size]
            if group_by_length and self.lengths is not None:
                order = self._grouped(order, batch_size, seed)
            rows = tf.reshape(order, [-1, batch_size])
        indices = tf.data.Dataset.from_tensor_slices(tf.cast(rows, tf.int64))
        # One gather per batch is cheap: a parallel map's threads cost a small model more than they save.
        return indices.map(self.gather)

    def _grouped(self, order: tf.Tensor, batch_size: int, seed: tf.Tensor) -> tf.Tensor:
        window = tf.range(tf.size(order)) // (batch_size * GROUP_WINDOW)
        key = window * (tf.reduce_max(self.lengths) + 1) + tf.gather(self.lengths, order)
        rows = tf.reshape(tf.gather(order, tf.argsort(key, stable=True)), [-1, batch_size])
        shuffled = tf.argsort(tf.random.stateless_uniform([tf.shape(rows)[0]], seed=seed + 1))
        return tf.reshape(tf.gather(rows, shuffled), [-1])


@dataclass(frozen=True)
class DictionaryColumn:
    """A string column held as its distinct values and one int32 code per example.

    Table columns such as a diamond's cut or colour repeat a few strings; TensorFlow
    keeps 32 bytes per string, a code takes 4 (Arrow calls this dictionary encoding).
    """

    values: tf.Tensor
    codes: tf.Tensor

    def __len__(self) -> int:
        return int(self.codes.shape[0])


def compact(column: tf.Tensor) -> tf.Tensor | DictionaryColumn:
    """`column` dictionary-encoded when it is a string column with at most half as many distinct values as rows."""
    if column.dtype != tf.string or column.shape.rank != 1:
        return column
    values, codes = tf.unique(column, out_idx=tf.int32)
    return DictionaryColumn(values, codes) if 2 * int(values.shape[0]) <= int(column.shape[0]) else column


def gathered(column: tf.Tensor | DictionaryColumn, indices: tf.Tensor) -> tf.Tensor:
    """The rows of a held column at `indices`."""
    if isinstance(column, DictionaryColumn):
        return tf.gather(column.values, tf.gather(column.codes, indices))
    return tf.gather(column, indices)


def _nbytes(tensor: tf.Tensor) -> int:
    if tensor.dtype == tf.string:  # TensorFlow keeps 32 bytes per string plus what does not fit inline
        return 32 * int(tf.size(tensor)) + int(tf.reduce_sum(tf.strings.length(tensor)))
    return int(tf.size(tensor)) * tensor.dtype.size


def hold_in_memory(examples: tf.data.Dataset, cache: bool | str) -> HeldExamples | None:
    """The examples held in memory as `data.cache` asks (`true`, `false`, `auto`), or None to stream them."""
    if cache is False:
        return None
    return HeldExamples.collect(examples, limit=None if cache is True else MEMORY_LIMIT)


def trimmable(spec: Any) -> bool:
    """Whether elements of this spec are token sequences `trimmed` can cut: features with a
    `padding_mask` of known length, and no target that is a sequence of that length."""
    features = spec[0] if isinstance(spec, tuple) else spec
    if not (isinstance(features, dict) and "padding_mask" in features):
        return False
    length = features["padding_mask"].shape[-1]
    targets = tf.nest.flatten(spec[1:]) if isinstance(spec, tuple) else []
    return length is not None and not any(
        t.shape.rank is not None and t.shape.rank >= 2 and t.shape[-1] == length for t in targets
    )


def trimmed(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Batches of token sequences cut to their longest text.

    Reviews average ~25 tokens: padding every one to a sequence length of 64
    spends most of a Transformer's work on padding. Only features are cut (a
    `padding_mask` marks token sequences); per-example targets are left alone,
    and elements without a `padding_mask`, or whose targets are sequences of the
    same length (next-token prediction), pass unchanged. Shapes then vary by
    batch, so this is for training without XLA. Cut to the exact length, not
    to a multiple of 8: MiniLM's steps ran 10% faster (the extra shapes cost
    no tracing, Keras's step functions take any length).
    """
    if not trimmable(dataset.element_spec):
        return dataset
    spec = dataset.element_spec
    length = (spec[0] if isinstance(spec, tuple) else spec)["padding_mask"].shape[-1]

    @tf.autograph.experimental.do_not_convert
    def cut(x: dict[str, Any], *rest: Any) -> Any:
        longest = tf.reduce_max(tf.reduce_sum(tf.cast(x["padding_mask"], tf.int32), axis=1))
        longest = tf.maximum(longest, 1)
        x = {k: v[:, :longest] if v.shape.rank == 2 and v.shape[1] == length else v for k, v in x.items()}
        return (x, *rest) if rest else x

    return dataset.map(cut, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def finished(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Deterministic order, sharding by data across workers, prefetching, no autotuning thread."""
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return without_autotuning(dataset.with_options(options).prefetch(tf.data.AUTOTUNE))


def without_autotuning(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` without tf.data's autotuning thread: AUTOTUNE parallelism becomes the number of cores.

    Destroying an iterator waits for that thread, which sleeps between its
    optimisation rounds (periods that double as the pipeline runs) without
    being woken: the end of each `fit`, `evaluate` or `predict` stalled, the
    longer the pipeline had run (MiniLM: 2-14 s after 65 steps, up to 36 s
    after an epoch; now 2.3 s every time). kit's pipelines are a gather, a
    cut and tokenising, whose best parallelism is the machine's cores, and
    prefetching still adapts its buffer without the thread; steps ran as fast.

    Applied where kit's datasets begin (`examples`: options flow to every
    dataset built on one, such as the texts a vocabulary is learned from) and
    where they end (`finished`: batches drawn from examples held in memory).
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


class TrainingStream:
    """Shuffled training batches, pass after pass without end, starting from any global step.

    Pass `p` over the examples is shuffled with a seed made of the run's seed
    and `p` alone, so the batches from step `n` on are the same whether the
    run started at step 0 or resumed at step `n`: the data position of an
    interrupted run is just its optimizer's step count.

    The examples come as a tf.data dataset (streamed and shuffled through a
    buffer of `shuffle_buffer`) or as `HeldExamples` (each pass a full
    permutation, drawn from the same seeds).

    Example:
        >>> stream = TrainingStream(examples, batch_size=32, batches_per_pass=100, seed=42, shuffle_buffer=10000)
        >>> model.fit(stream.from_step(250), steps_per_epoch=100, initial_epoch=2, epochs=5)
    """

    def __init__(
        self,
        examples: tf.data.Dataset | HeldExamples,
        *,
        batch_size: int,
        batches_per_pass: int,
        seed: int,
        shuffle_buffer: int,
        drop_remainder: bool = True,
        trim_padding: bool = False,
        group_by_length: bool = False,
    ):
        self.examples = examples
        self.batch_size = batch_size
        self.batches_per_pass = max(int(batches_per_pass), 1)
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.drop_remainder = drop_remainder
        self.trim_padding = trim_padding
        self.group_by_length = group_by_length

    @tf.autograph.experimental.do_not_convert
    def one_pass(self, number: Any) -> tf.data.Dataset:
        number = tf.cast(number, tf.int64)
        if isinstance(self.examples, HeldExamples):
            seed = tf.stack([tf.constant(self.seed, tf.int64), number])
            return self.examples.shuffled_batches(seed, self.batch_size, self.drop_remainder, self.group_by_length)
        seed = tf.constant(self.seed, tf.int64) * 1_000_003 + number
        with _graph_seed_usable_with_tensor_seeds():
            shuffled = self.examples.shuffle(self.shuffle_buffer, seed=seed, reshuffle_each_iteration=False)
        return shuffled.batch(self.batch_size, drop_remainder=self.drop_remainder)

    def from_step(self, step: int) -> tf.data.Dataset:
        first_pass, skip = divmod(int(step), self.batches_per_pass)
        passes = tf.data.Dataset.range(first_pass, 2**62)  # endless; fit's steps_per_epoch bounds each epoch
        batches = passes.flat_map(self.one_pass).skip(skip)
        return finished(trimmed(batches) if self.trim_padding else batches)


@contextlib.contextmanager
def _graph_seed_usable_with_tensor_seeds() -> Iterator[None]:
    """Let `Dataset.shuffle` take a tensor seed whatever the global seed.

    TensorFlow's `get_seed` compares (graph seed, op seed) with (0, 0) in Python: with a global seed of 0
    (`tf.random.set_seed(0)`, a project's `seed: 0`) that compares the tensor with 0 and fails while tracing.
    Only then is the graph's seed set aside for the call, so the op seed alone (with TensorFlow's default
    graph seed) decides the order; every other global seed keeps the order it always gave.
    """
    graph = tf.compat.v1.get_default_graph()
    seed = getattr(graph, "seed", None)
    if seed is None or seed % (2**31 - 1) != 0:
        yield
        return
    graph.seed = None
    try:
        yield
    finally:
        graph.seed = seed
