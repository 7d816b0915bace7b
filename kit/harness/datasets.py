"""The tf.data side of training: every split's batches, the shuffled training stream, and what adapt reads."""

from __future__ import annotations

from typing import Any, Callable

import tensorflow as tf

from kit.assembly import Pieces
from kit.config import Config
from kit.data.pipeline import TrainingStream, examples, finished, hold_in_memory, prepared, trimmable, trimmed
from kit.errors import TrainingError


def make_datasets(
    config: Config, pieces: Pieces, reports: dict[str, Any], strategy: Any = None
) -> tuple[dict[str, tf.data.Dataset], dict[str, int], TrainingStream]:
    """Batched datasets in file order for every split that has rows (for evaluation), how many
    examples each holds, and the shuffled training stream `model.fit` reads."""
    data = config.data
    trim = trims_padding(config, strategy or tf.distribute.get_strategy())
    datasets, sizes, train_examples = {}, {}, None
    preprocess = traced_preprocessing(pieces.backbone)
    for split, report in reports.items():
        if report.rows == 0:
            continue
        examples_, size = split_examples(pieces, split, report.rows, preprocess)
        held = hold_in_memory(examples_, data.cache)
        if held is not None:
            # Evaluated shortest first when batches are cut to their longest text; training reads the stream.
            examples_, size, batches = held, held.count, held.batches(data.batch_size, by_length=trim)
        else:
            if size is None:  # examples the task re-shaped: cache them, so counting is the only extra pass
                examples_ = examples_.cache()
                size = count_examples(examples_)
                examples_ = examples_.apply(tf.data.experimental.assert_cardinality(size))
            batches = examples_.batch(data.batch_size)
        if size == 0:
            continue
        datasets[split] = finished(trimmed(batches) if trim else batches)
        sizes[split] = size
        if split == "train":
            train_examples, train_spec = examples_, batches.element_spec
    if train_examples is None:
        raise TrainingError(
            "The training data yields no examples (for generation: fewer tokens than one window of "
            "model.sequence_length + 1). Add text or lower model.sequence_length."
        )
    # A smaller last batch would retrace (and with XLA recompile) the train step: drop it, unless it is all.
    drop = sizes["train"] >= data.batch_size
    stream = TrainingStream(
        train_examples,
        batch_size=data.batch_size,
        batches_per_pass=steps_per_epoch(sizes["train"], data.batch_size, drop),
        seed=config.seed,
        shuffle_buffer=data.shuffle_buffer,
        drop_remainder=drop,
        trim_padding=trim,
        group_by_length=trimmable(train_spec) and (trim if data.group_by_length == "auto" else data.group_by_length),
    )
    return datasets, sizes, stream


def trims_padding(config: Config, strategy: Any) -> bool:
    """`data.trim_padding` settled: `auto` trims when training runs on CPU without XLA.

    XLA compiles once per input shape and TPUs need static shapes, so batches of
    varying length are for CPU, where Keras's `jit_compile: auto` means no XLA.
    """
    setting = config.data.trim_padding
    if setting != "auto":
        return bool(setting)
    accelerated = tf.config.list_physical_devices("GPU") or isinstance(strategy, tf.distribute.TPUStrategy)
    return config.train.jit_compile is not True and not accelerated


def traced_preprocessing(backbone: Any) -> Callable[[Any], Any]:
    """The backbone's preprocessing (of a batch when it is vectorised) as one `tf.function` for every split.

    tf.data traces the function of each `map` anew; tracing a keras-hub tokenizer's graph takes most of a
    second (MiniLM's: 0.7 s), so the test split paid it again. Splits share the traced graph instead.
    """
    return tf.function(backbone.preprocess_batch if backbone.vectorised else backbone.preprocess)


def split_examples(
    pieces: Pieces, split: str, rows: int, preprocess: Callable[[Any], Any]
) -> tuple[tf.data.Dataset, int | None]:
    """One split's unbatched, preprocessed examples and their number (None when the task re-shapes rows
    into examples: known only once they are held or counted). `preprocess`: `traced_preprocessing`'s."""
    stream = examples(pieces.plan, split, pieces.kind.fields, pieces.targets, rows, pieces.check_example)
    reshaped = pieces.task.prepare(stream, pieces.backbone, split)
    if reshaped is not None:
        return reshaped, None
    return prepared(stream, lambda x, y: (preprocess(x), y), vectorised=pieces.backbone.vectorised), rows


def training_features(pieces: Pieces) -> Callable[[], tf.data.Dataset]:
    """What `Backbone.adapt` reads: the training split's encoded features, one dict per example."""

    def features() -> tf.data.Dataset:
        return examples(pieces.plan, "train", pieces.kind.fields, [], check=None)

    return features


def count_examples(dataset: tf.data.Dataset) -> int:
    """Elements of a finite dataset, counted in one pass (which also fills its cache)."""
    return int(dataset.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))


def steps_per_epoch(rows: int, batch_size: int, drop_remainder: bool) -> int:
    """Batches in one pass over `rows` examples (a partial last batch counts unless dropped)."""
    full, rest = divmod(rows, batch_size)
    return max(full + (1 if rest and not drop_remainder else 0), 1)
