"""The task-type contract every task plugin implements.

A task type turns examples into a trained model and predictions. kit owns the
*inputs* side (reading sources, text/tabular/image features, the backbone);
a task owns the *target* side:

- `target_fields`: which columns are targets and how each is parsed and
  encoded (a label vocabulary, a normalised number...), learned from the
  training rows;
- `build_head`: the layer(s) on top of the backbone's representation;
- `loss` and `metrics`: Keras objects for `model.compile`;
- `evaluate`: final metrics in the task's own terms (original units, labels);
- `predictions`: model outputs turned into what a user reads.

This module imports no TensorFlow, so listing tasks stays fast; import Keras
inside the methods.

Example::

    import kit
    from kit.data import LabelField

    class SentimentTask(kit.Task):
        name = "sentiment"
        description = "Positive/negative text classification."
        default_target = "label"
        input_kinds = ("text",)

        def target_fields(self, columns):
            return [LabelField(columns[0])]

        def build_head(self, representation):
            import keras
            n = self.fields[0].size
            return keras.layers.Dense(n, name="logits")(representation)

        def loss(self):
            import keras
            return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        def metrics(self):
            return ["accuracy"]
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from kit.config import Config
    from kit.data.fields import Field


class Task:
    """Base class for task types. Subclass it and register it with `register_tasks`.

    Attributes:
        name: the name projects use in `task:`; unique across plugins.
        description: one line shown by `kit tasks`.
        default_target: target column(s) used when `data.target` is unset.
        input_kinds: which feature kinds the task accepts (text, tabular, image).
        Options: an optional dataclass validating the `options:` section.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    default_target: ClassVar[Sequence[str]] = ("label",)
    input_kinds: ClassVar[Sequence[str]] = ("text", "tabular", "image")
    Options: ClassVar[type | None] = None

    def __init__(self, config: Config, options: Any = None):
        self.config = config
        self.options = options
        self.fields: list[Field] = []

    # -- targets

    def target_columns(self) -> list[str]:
        """The target columns: `data.target` if set, else `default_target`."""
        return list(self.config.data.target or self.default_target)

    def setup_fields(self) -> list[Field]:
        """Create the target fields (called once per run; states are learned later)."""
        self.fields = self.target_fields(self.target_columns())
        return self.fields

    def target_fields(self, columns: list[str]) -> list[Field]:
        """Return one `kit.data.Field` per target column."""
        raise NotImplementedError(f"{type(self).__name__} must implement target_fields()")

    def input_kind(self, guessed: str) -> str:
        """The inputs kind to build, given the one guessed from the data (text, tabular, image).

        Default: the guess. The generation task turns "text" into "decoder"
        (a GPT-style backbone with a causal-LM tokenizer).
        """
        return guessed

    def prepare(self, dataset: Any, inputs: Any, split: str) -> Any:
        """Reshape the unbatched example stream of one split before batching.

        Default: `None`, meaning "use the examples as they are" (one example per
        row). A task whose examples are not rows returns a new unbatched
        `tf.data.Dataset` of `(x, y)` pairs: the generation task tokenises
        documents and packs them into fixed-length next-token windows. kit
        caches the result and counts its elements to size the epochs.
        """
        return None

    # -- model

    def build_model(self, inputs: Any, representation: Any) -> Any:
        """Put the head on the backbone's representation and return a `keras.Model`."""
        import keras

        return keras.Model(inputs, self.build_head(representation), name=f"{self.name}_model")

    def build_head(self, representation: Any) -> Any:
        """Return the output tensor computed from `representation` (a KerasTensor)."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_head()")

    def loss(self) -> Any:
        """A `keras.losses.Loss` (or its name) for `model.compile`."""
        raise NotImplementedError(f"{type(self).__name__} must implement loss()")

    def metrics(self) -> list[Any]:
        """Keras metrics reported each epoch (on encoded targets)."""
        return []

    # -- results

    def evaluate_model(self, model: Any, dataset: Any) -> dict[str, float] | None:
        """Final metrics for one split straight from the model and a batched dataset.

        Default: `None`, meaning kit collects all outputs and calls `evaluate()`.
        Override when outputs are too large to hold (a language model's
        per-token logits): the generation task uses `model.evaluate()`.
        """
        return None

    def evaluate(self, targets: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
        """Final metrics for one split, from encoded targets and raw model outputs."""
        return {}

    def write_reports(self, run_dir: Path, split: str, targets: np.ndarray, outputs: np.ndarray) -> list[Path]:
        """Write extra report files (plots, tables) for a split; return their paths."""
        return []

    def predictions(self, outputs: np.ndarray) -> list[dict[str, Any]]:
        """Turn a batch of model outputs into one JSON-able dict per example."""
        raise NotImplementedError(f"{type(self).__name__} must implement predictions()")

    def postprocess(self, outputs: Any) -> Any:
        """Map raw outputs to served outputs inside TensorFlow (SavedModel export).

        Default: identity. Classification returns probabilities, regression
        undoes the target normalisation.
        """
        return outputs
