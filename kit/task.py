"""The task-type contract every task plugin implements.

A task type turns examples into a trained model and predictions. It declares
the input kinds it takes (`input_kinds`: one text, a pair of texts, words,
a table row, an image, or a plugin's kind; see `kit.InputKind`), and kit
builds those inputs with the backbone family `model.backbone` names (see
`kit.Backbone`). The task owns the *target* side:

- `target_fields`: which columns are targets and how each is parsed and
  encoded (a label vocabulary, a normalised number...), learned from the
  training rows;
- `build_head` (or `build_model`): the layer(s) on top of the backbone's
  representation;
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
        input_kinds = ("text", "text_pair")

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

    from kit.backbone import Backbone, Built
    from kit.config import Config
    from kit.data.fields import Field


class Task:
    """Base class for task types. Subclass it and register it with `register_tasks`.

    Attributes:
        name: the name projects use in `task:`; unique across plugins.
        description: one line shown by `kit tasks`.
        default_target: target column(s) used when `data.target` is unset (a name or a tuple of names).
        input_kinds: the input kinds the task takes, by name (text, text_pair, tokens, tabular, image,
            or a plugin's); "*" adds every other registered kind with one vector per example, so a
            plugin's new kind works with the task. With `data.inputs: auto`: the only one, or the one
            the data shows.
        Options: an optional dataclass validating the `options:` section.
        predicts: whether `kit predict` makes sense for the task; a task that sets it False
            (generation continues text) raises `kit.UsageError` from `predictions()` saying
            what to use instead.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    default_target: ClassVar[str | Sequence[str]] = ("label",)
    input_kinds: ClassVar[Sequence[str]] = ("text", "tabular", "image")
    Options: ClassVar[type | None] = None
    predicts: ClassVar[bool] = True

    def __init__(self, config: Config, options: Any = None):
        self.config = config
        self.options = options
        self.fields: list[Field] = []

    # -- targets

    def target_columns(self) -> list[str]:
        """The target columns: `data.target` if set, else `default_target`."""
        default = [self.default_target] if isinstance(self.default_target, str) else self.default_target
        return list(self.config.data.target or default)

    def setup_fields(self) -> list[Field]:
        """Create the target fields (called once per run; states are learned later)."""
        self.fields = self.target_fields(self.target_columns())
        return self.fields

    def target_fields(self, columns: list[str]) -> list[Field]:
        """Return one `kit.data.Field` per target column."""
        raise NotImplementedError(f"{type(self).__name__} must implement target_fields()")

    def prepare(self, dataset: Any, backbone: Backbone, split: str) -> Any:
        """Reshape the unbatched example stream of one split before batching.

        Default: `None`, meaning "use the examples as they are" (one example per
        row, preprocessed by the backbone). A task whose examples are not rows
        returns a new unbatched `tf.data.Dataset` of `(x, y)` pairs: the
        generation task tokenises documents with `backbone.tokenizer` and packs
        them into fixed-length next-token windows. kit caches the result and
        counts its elements to size the epochs.
        """
        return None

    def check_example(self, features: dict[str, Any], targets: dict[str, Any]) -> None:
        """Check one parsed example as a whole (each column is checked by its field already).

        Raise `kit.data.BadValue` to mark the row malformed: the scan reports it with its
        line, or leaves it out with `data.bad_rows: skip`. `token_classification` checks
        that there is one tag per word. Default: nothing to check.
        """

    # -- model

    def build_model(self, built: Built) -> Any:
        """Put the head on the backbone's representation and return a `keras.Model`.

        `built` (a `kit.Built`) holds the model inputs, the representation, and the keras-hub
        backbone and preprocessor where there are some. Default: a functional model from
        `built.inputs` to `build_head(built.representation)`. Use only Keras and keras-hub
        layers (or your own registered serialisable ones) so `model.keras` loads in safe mode.
        """
        import keras

        return keras.Model(built.inputs, self.build_head(built.representation), name=f"{self.name}_model")

    def model_to_save(self, model: Any, backbone: Backbone) -> Any:
        """The model written to `model.keras`. Default: `model` itself.

        `model` is the trained model itself when it is a plain functional model without LoRA adapters (kit
        then writes it as Keras writes it uncompiled, without optimizer state), else an uncompiled copy with
        the adapters merged. Do not change `model`: the final evaluation runs on it after saving. Return a
        new model to save something else (kit then writes it as Keras would, compile settings included).

        The generation task trains a causal LM without its preprocessor (kit feeds token ids)
        and returns it here with the preprocessor attached, so `generate("text")` works on the
        saved model with plain keras-hub.
        """
        return model

    def build_head(self, representation: Any) -> Any:
        """Return the output tensor computed from `representation` (a KerasTensor)."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_head()")

    def loss(self) -> Any:
        """A `keras.losses.Loss` (or its name) for `model.compile`."""
        raise NotImplementedError(f"{type(self).__name__} must implement loss()")

    def metrics(self) -> list[Any]:
        """Keras metrics reported each epoch (on encoded targets)."""
        return []

    def metric_names(self) -> list[str] | None:
        """The names each epoch's logs give `metrics()` (what `train.monitor` may name, with `loss` and
        `val_` forms); None when they cannot be told before training. Default: each metric's name."""
        metrics = self.metrics()
        names = [m if isinstance(m, str) else getattr(m, "name", None) or getattr(m, "__name__", None) for m in metrics]
        return names if all(isinstance(name, str) for name in names) else None

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

    def predictions(self, outputs: np.ndarray, features: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Turn a batch of model outputs into one JSON-able dict per example.

        `features` holds the batch's encoded input features by column (numpy), for tasks
        whose predictions quote the input (`token_classification` returns entity spans).
        A subclass may leave the parameter out: kit passes it only when it is declared.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement predictions()")

    def postprocess(self, outputs: Any) -> Any:
        """Map raw outputs to the numbers a user reads, with `keras.ops` (default: identity).

        Classification returns probabilities, regression undoes the target
        normalisation. `served_outputs` uses it by default.
        """
        return outputs

    # -- exports

    def served_outputs(self, outputs: Any) -> dict[str, Any]:
        """The named outputs every export serves, computed from the model's raw outputs.

        Called once on a symbolic `keras.Input` shaped like the raw outputs; kit makes a
        `keras.Model` of it and runs it after the model in every export (Keras, SavedModel,
        TFLite) and when it checks them, so use Keras layers and `keras.ops` only. Outputs
        should be what `predictions()` reports: label names and probabilities, numbers in
        the user's units. String outputs are left out where a format has no strings (TFLite;
        `export_metadata` then gives the names). Default: `{"outputs": postprocess(outputs)}`.

        Args:
            outputs: the raw outputs (a KerasTensor), e.g. logits of shape (batch, labels).

        Returns:
            Output name -> KerasTensor.

        Example::

            def served_outputs(self, outputs):
                import keras
                probabilities = keras.layers.Softmax(name="probabilities")(outputs)
                return {"probabilities": probabilities}
        """
        return {"outputs": self.postprocess(outputs)}

    def export_metadata(self) -> dict[str, Any]:
        """What a user of an export needs to read its outputs, JSON-able (default: nothing).

        Written into the export's `export.json` under "outputs" (and shown in its README):
        classification gives its labels in the order of its probabilities, regression its
        target columns and units. Example: `{"labels": ["neg", "pos"]}`.
        """
        return {}

    def exporter(self, fmt: str) -> Any:
        """The task's own writer of export format `fmt` (see `kit.exports.Exporter`), or None for kit's.

        The generation task writes SavedModels that take prompts and sampler settings
        and Hugging Face folders this way. Default: None.
        """
        return None

    # -- serving

    def generator(self, trained: Any) -> Any:
        """What continues prompts for `kit serve`'s /generate, for a task that generates; None otherwise.

        Args:
            trained: the run, loaded (a `kit.inference.TrainedModel`).

        Returns:
            An object with `settings(values) -> settings` (sampler settings from a JSON object, raising
            `kit.UsageError` in the command line's words), `steps(prompts, settings, streamed)` (yielding
            each prompt's new text per decoding step), `generate(prompts, settings)` (completions at once,
            for settings that cannot stream), `generated_tokens` (per prompt, by the last call) and
            `tokenizer`. The generation task returns `kit generate`'s `Generator`. Default: None.
        """
        return None
