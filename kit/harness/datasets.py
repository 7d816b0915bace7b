"""The tf.data side of training: every split's batches, the shuffled training stream, and what adapt reads."""

from __future__ import annotations

from typing import Any, Callable

import tensorflow as tf

from kit.assembly import Pieces
from kit.config import Config
from kit.data.pipeline import HeldExamples, TrainingStream, examples, finished, trimmable, trimmed
from kit.data.splits import evaluation_batches, split_examples, traced_preprocessing, trims_padding
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
        examples_, size, batches = split_batches(examples_, size, data, trim)
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


def split_batches(
    examples_: tf.data.Dataset, size: int | None, data: Any, trim: bool
) -> tuple[tf.data.Dataset | HeldExamples, int, tf.data.Dataset]:
    """A split's examples (held in memory when `data.cache` allows), how many there are, and its batches for
    evaluation (`evaluation_batches`). Streamed examples the task re-shaped (`size` None) are cached, so
    counting is the only extra pass. `data`: a `DataConfig`."""
    held, batches = evaluation_batches(examples_, data, trim)
    if held is not None:
        return held, held.count, batches
    if size is None:
        examples_ = examples_.cache()
        size = count_examples(examples_)
        examples_ = examples_.apply(tf.data.experimental.assert_cardinality(size))
        batches = examples_.batch(data.batch_size)
    return examples_, size, batches


def training_features(pieces: Pieces) -> Callable[[], tf.data.Dataset]:
    """What `Backbone.adapt` reads: the training split's encoded features, one dict per example."""

    def features() -> tf.data.Dataset:
        return examples(pieces.plan, "train", pieces.kind.fields, [], check=None)

    return features


def steps_per_epoch(rows: int, batch_size: int, drop_remainder: bool) -> int:
    """Batches in one pass over `rows` examples (a partial last batch counts unless dropped)."""
    full, rest = divmod(rows, batch_size)
    return max(full + (1 if rest and not drop_remainder else 0), 1)


def count_examples(dataset: tf.data.Dataset) -> int:
    """Elements of a finite dataset, counted in one pass (which also fills its cache)."""
    return int(dataset.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))
