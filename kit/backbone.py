"""The inputs side of the plugin contract: input kinds and backbone families.

An **input kind** (`InputKind`) says what the features of one example are --
one text, a pair of texts, words with one label each, a table row, an image,
or a kind a plugin adds -- which columns hold them and how each is parsed.

A **backbone family** (`Backbone`) turns those features into a representation
a task's head can sit on: it learns what it needs from the training rows (a
vocabulary, statistics), preprocesses examples inside `tf.data`, builds the
Keras layers, and saves, loads and exports what it learned. One module per
family; kit's own families are built-in plugins registered through
`register_backbones`, exactly as a third party's would be.

A task declares the kinds it accepts (`Task.input_kinds`); kit picks the kind
(`data.inputs`, or detected from the data), then the family from
`model.backbone` (a `BackboneRef`, parsed once when the config is loaded), and
checks that the family builds that kind.

This module imports no TensorFlow: `kit tasks` and config validation use it.

Example, a family for a plugin's own kind::

    import kit

    class SpectrogramCNN(kit.Backbone):
        name = "spectrogram-cnn"
        description = "A small CNN over audio spectrograms."
        input_kinds = ("audio",)
        sizes = {"spectrogram-cnn": {"filters": 32}}

        def build(self):
            import keras
            column = self.kind.columns()[0]
            audio = keras.Input(shape=(None, 128, 1), name=column)
            x = keras.layers.Conv2D(self.size["filters"], 3, activation="relu")(audio)
            return kit.Built(inputs={column: audio}, representation=keras.layers.GlobalAveragePooling2D()(x))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from kit.config import Config
    from kit.data.fields import Field
    from kit.data.sources import Source
    from kit.references import BackboneRef


class InputKind:
    """What the features of one example are, and which columns hold them.

    Attributes:
        name: the kind's name (`data.inputs: NAME`, `Task.input_kinds`); unique across plugins.
        description: one line shown by `kit tasks --json` and in errors.
        default_backbone: the `model.backbone` used when it is `auto`.
        fallback: chosen by `data.inputs: auto` when no kind the task takes `detect`s the
            data (the built-in `tabular` kind is the fallback).
        per_example: True when backbones give one vector per example (so any task whose
            `input_kinds` holds "*" takes this kind); False for per-word kinds such as `tokens`.

    Subclasses implement `columns()` and `make_fields()`; `detect()` lets
    `data.inputs: auto` choose the kind from the data. A kind's feature fields
    are created by `setup()` (training) or `load()` (a trained run); their
    learned states are saved and restored by kit.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    default_backbone: ClassVar[str] = ""
    fallback: ClassVar[bool] = False
    per_example: ClassVar[bool] = True

    def __init__(self, config: Config):
        self.config = config
        self.target_columns: list[str] = []
        self.fields: list[Field] = []

    def columns(self) -> list[str]:
        """The data columns this kind reads, as the config names them."""
        raise NotImplementedError(f"{type(self).__name__} must implement columns()")

    def setting(self, column: str) -> str:
        """The config key that names `column` (quoted when the column is missing from the data)."""
        return "data.inputs"

    def make_fields(self, source: Source) -> list[Field]:
        """One `kit.data.Field` per column read: how each value is parsed, checked and encoded.

        `source` is the training `kit.data.Source`: its `columns()`, and `rows()` when the fields'
        types depend on the data (the tabular kind types each column from every row). The task's
        target columns are in `self.target_columns`.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement make_fields()")

    def setup(self, source: Source, target_columns: list[str]) -> list[Field]:
        """Create the fields once per run (their states are learned by the scan)."""
        self.target_columns = list(target_columns)
        self.fields = self.make_fields(source)
        return self.fields

    @classmethod
    def detect(cls, config: Config, columns: list[str], source_hint: str | None) -> bool:
        """Whether data with these columns (and the source's own hint) holds this kind. Default: never."""
        return False

    def save(self) -> dict[str, Any]:
        """JSON-able state from which `load` rebuilds the fields of a trained run (default: the columns read)."""
        return {"columns": self.columns()}

    def load(self, state: dict[str, Any], target_columns: list[str]) -> list[Field]:
        """Rebuild the fields from what `save` returned (their learned states are restored after).

        Default: `make_fields` on a source that has the saved columns and no rows.
        """
        from kit.data.sources import Source

        class Saved(Source):
            def columns(self) -> list[str]:
                return list(state["columns"])

            def rows(self) -> Any:
                return iter(())

        return self.setup(Saved(), target_columns)


@dataclass
class Built:
    """What `Backbone.build()` returns: the model's inputs and what a task's head sits on.

    Attributes:
        inputs: `keras.Input` tensors keyed like the output of `Backbone.preprocess`.
        representation: the tensor the task's head takes: one vector per example, or for
            the `tokens` kind one vector per word (`[batch, words, hidden]`).
        backbone: the keras-hub `Backbone` inside, when there is one (fine-tuning settings,
            presets, LoRA use it); None for plain Keras layers.
        preprocessor: the keras-hub `Preprocessor` that belongs to `backbone`, when there is one.
        sequence: one vector per token (`[batch, tokens, hidden]`), when the inputs are tokens.
    """

    inputs: dict[str, Any]
    representation: Any
    backbone: Any = None
    preprocessor: Any = None
    sequence: Any = None


def plain_graph_code(method: Callable[..., Any]) -> Callable[..., Any]:
    """Mark one of kit's preprocessing methods as needing no AutoGraph: no Python `if`, `for` or `while` on a
    tensor's value (`tf.cond` and `tf.map_fn` where it needs them). kit then traces it as it is, instead of
    having AutoGraph rewrite its source first, which costs 30-140 ms a function in every command
    (`kit.data.splits.traced_preprocessing`). A subclass's own `preprocess` carries no mark, so it keeps
    AutoGraph; a plugin's can opt out with TensorFlow's `tf.autograph.experimental.do_not_convert`."""
    method._kit_plain_graph_code = True  # type: ignore[attr-defined]
    return method


# The methods kit's preprocessing calls that a family may override: each must be kit's own, marked.
_PREPROCESSING_METHODS = ("preprocess", "preprocess_batch", "pack_words")


def needs_autograph(backbone: Any) -> bool:
    """Whether tracing `backbone`'s preprocessing needs AutoGraph: unless every preprocessing method its class
    has (`preprocess` and `preprocess_batch` may call each other, text families' call `pack_words`) is kit's
    own, marked `plain_graph_code`."""
    methods = (getattr(type(backbone), name, None) for name in _PREPROCESSING_METHODS)
    return not all(getattr(method, "_kit_plain_graph_code", False) for method in methods if method is not None)


class Backbone:
    """Base class of a backbone family: features in, a representation out.

    Attributes:
        name: the family's name, unique across plugins (shown by `kit backbones`).
        description: one line for listings.
        input_kinds: the input kinds this family builds (`text`, `text_pair`, `tokens`,
            `tabular`, `image`, or a plugin's own).
        sizes: built-in `model.backbone` names this family offers, each with its
            hyperparameters (`{"bert-tiny": {"num_layers": 2, ...}}`); names are unique
            across plugins.
        export_requirements: pip packages a process needs to load this family's
            exported SavedModel (e.g. `tensorflow-text` for keras-hub tokenizers).
        vectorised: True when `preprocess_batch` handles a whole batch at once (keras-hub's
            preprocessors do): kit then preprocesses the data in batches, which is several
            times faster. Its outputs must equal `preprocess` on each example.

    An instance serves one run: `reference` is the parsed `model.backbone`, `kind`
    the input kind it builds (with its fields), `config` the project's `Config`.
    `size` is the chosen entry of `sizes` (empty for pretrained references).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    input_kinds: ClassVar[Sequence[str]] = ()
    sizes: ClassVar[dict[str, dict[str, Any]]] = {}
    export_requirements: ClassVar[Sequence[str]] = ()
    vectorised: ClassVar[bool] = False

    def __init__(self, reference: BackboneRef, kind: InputKind, config: Config):
        self.reference = reference
        self.kind = kind
        self.config = config
        self.size = dict(self.sizes.get(reference.name or "", {}))

    @classmethod
    def loads_pretrained(cls) -> bool:
        """Whether this family loads pretrained references (it overrides `accepts`)."""
        return cls.accepts.__func__ is not Backbone.accepts.__func__  # type: ignore[attr-defined]

    @classmethod
    def accepts(cls, reference: BackboneRef) -> bool:
        """Whether this family loads a pretrained `reference` (a folder, file or preset name).

        Called only for references that are not built-in names; must be cheap and must not
        import TensorFlow (read `reference.manifest()`, the folder's config.json). Default: no.
        """
        return False

    # -- learning and preprocessing

    def adapt(self, training_features: Callable[[], Any]) -> None:
        """Learn from the training rows (a vocabulary), or load what a pretrained model brings.

        `training_features()` returns a `tf.data.Dataset` of the training split's encoded
        features, one dict per example, keyed by column. Called once, before `build()`;
        field statistics (means, vocabularies) are already learned by then.
        """

    @plain_graph_code
    def preprocess(self, features: dict[str, Any]) -> dict[str, Any]:
        """One example's features -> the model's inputs, inside `tf.data` (default: as they are)."""
        return features

    @plain_graph_code
    def preprocess_batch(self, features: dict[str, Any]) -> dict[str, Any]:
        """`preprocess` for a batch (exports and serving). Default: `preprocess`, which suits
        rank-polymorphic preprocessing such as keras-hub's preprocessors."""
        return self.preprocess(features)

    # -- the model

    def build(self) -> Built:
        """Create the Keras layers; return the model inputs and the representation (`Built`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement build()")

    # -- saving

    def save(self, folder: Path) -> dict[str, Any]:
        """Write what was learned (a vocabulary file...) into `folder`; return JSON-able state."""
        return {}

    def load(self, folder: Path, state: dict[str, Any]) -> None:
        """Restore what `save` wrote, for prediction. The trained weights come from model.keras."""

    def save_preset(self, built: Built, folder: Path) -> bool:
        """Write the trained keras-hub backbone and its preprocessor as a keras-hub preset.

        Another project then fine-tunes it with `model.backbone: RUN_DIR`. Returns False
        when there is nothing to write (no keras-hub backbone).
        """
        if built.backbone is None:
            return False
        built.backbone.save_to_preset(str(folder))
        if built.preprocessor is not None:
            built.preprocessor.save_to_preset(str(folder))
        return True

    def serving_signature(self) -> dict[str, Any]:
        """The raw features an export takes: column -> `tf.TensorSpec` with a batch dimension."""
        import tensorflow as tf

        dtypes = {"str": tf.string, "int32": tf.int32, "float32": tf.float32}
        return {f.column: tf.TensorSpec([None, *f.shape], dtypes[f.dtype], name=f.column) for f in self.kind.fields}
