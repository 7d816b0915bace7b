"""A split's examples as a model reads them, shared by training (`kit.harness.datasets`) and by `kit eval
--data` and `kit predict` (`kit.inference`): preprocessed through one traced graph, batched for
evaluation, and whether batches of texts are cut to their longest text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import tensorflow as tf

from kit.backbone import needs_autograph
from kit.data.pipeline import HeldExamples, examples, hold_in_memory, prepared
from kit.data.plan import DataPlan

if TYPE_CHECKING:
    from kit.assembly import Pieces
    from kit.config import Config


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
    kit's own preprocessing is traced without AutoGraph (`kit.backbone.plain_graph_code`); a plugin's keeps it.
    """
    function = backbone.preprocess_batch if backbone.vectorised else backbone.preprocess
    return tf.function(function, autograph=needs_autograph(backbone))


def split_examples(
    pieces: Pieces, split: str, rows: int, preprocess: Callable[[Any], Any], plan: DataPlan | None = None
) -> tuple[tf.data.Dataset, int | None]:
    """One split's unbatched, preprocessed examples and their number (None when the task re-shapes rows
    into examples: known only once they are held or counted). `preprocess`: `traced_preprocessing`'s.
    `plan`: where the rows come from, the run's own data by default; with another plan (`kit eval --data`),
    its `split` holds data the user named, which the task's `prepare` sees as the split "data"."""
    stream = examples(plan or pieces.plan, split, pieces.kind.fields, pieces.targets, rows, pieces.check_example)
    reshaped = pieces.task.prepare(stream, pieces.backbone, "data" if plan else split)
    if reshaped is not None:
        return reshaped, None
    with_targets = tf.autograph.experimental.do_not_convert(lambda x, y: (preprocess(x), y))
    return prepared(stream, with_targets, vectorised=pieces.backbone.vectorised), rows


def evaluation_batches(
    examples_: tf.data.Dataset, data: Any, trim: bool
) -> tuple[HeldExamples | None, tf.data.Dataset]:
    """A split's batches for evaluation, not yet trimmed, and its examples when they are held in memory
    (`data.cache` allows): then shortest first when `trim`, since evaluation does not depend on the order;
    otherwise streamed in file order (None). `data`: a `DataConfig`."""
    held = hold_in_memory(examples_, data.cache)
    if held is not None:
        return held, held.batches(data.batch_size, by_length=trim)
    return None, examples_.batch(data.batch_size)
