"""Small, behaviour-gated fixes for bugs in the libraries kit builds on.

Each fix checks for the bug itself (not a version number), so it turns into a
no-op once the library is fixed. `fix_keras_saving()` is applied by
`kit.commands.quiet_tensorflow` (every command that loads a model calls it,
whether or not TensorFlow was imported before) and when kit's training
harness loads. Call `fix_keras_hub()` before building or
loading keras-hub models; it is idempotent. It also installs one speed-up that
every keras-hub user in kit wants, tokenizer graphs without ragged checks
(`kit.tokenizer_graphs`).
"""

from __future__ import annotations

import functools
import json
import threading
from typing import Any


@functools.cache
def fix_keras_hub() -> None:
    """Apply every keras-hub fix below (once per process), and trace its tokenizers without the ragged
    checks that cost byte-pair tokenizers seconds per graph (`kit.tokenizer_graphs`)."""
    from kit.tokenizer_graphs import lean_tokenizer_graphs

    _llama_keeps_tied_embeddings()
    _llama3_tokenizer_keeps_special_tokens()
    _byte_pair_tokenizers_tokenize_as_in_graphs()
    lean_tokenizer_graphs()


def _llama_keeps_tied_embeddings() -> None:
    """`LlamaBackbone.get_config()` drops `tie_word_embeddings` (keras-hub 0.32).

    A Llama with tied embeddings (Llama 3.2, SmolLM2) then comes back from its
    own config untied, with an extra output matrix, and loading its weights
    fails ("expected 2 variables, but received 0"): saving a fine-tuned model,
    `save_to_preset` and `from_preset` on that preset all break.
    """
    from keras_hub.src.models.llama.llama_backbone import LlamaBackbone

    original = LlamaBackbone.get_config
    if getattr(original, "kit_keeps_tied_embeddings", False):
        return

    def get_config(self):  # type: ignore[no-untyped-def]
        # Added only where keras-hub left it out (checked per call: building a Llama to probe took 0.08 s).
        return {"tie_word_embeddings": self.tie_word_embeddings, **original(self)}

    get_config.kit_keeps_tied_embeddings = True  # type: ignore[attr-defined]
    LlamaBackbone.get_config = get_config


def _llama3_tokenizer_keeps_special_tokens() -> None:
    """`Llama3Tokenizer.get_config()` drops its begin/end tokens (keras-hub 0.32).

    Rebuilt from its config (inside model.keras, or a saved preset), a
    tokenizer converted from a Hugging Face folder falls back to Meta's
    `<|begin_of_text|>`/`<|end_of_text|>` and fails on vocabularies that use
    others (SmolLM2's `<|im_start|>`...), or generates past its real end token.
    """
    from keras_hub.src.models.llama3.llama3_tokenizer import Llama3Tokenizer
    from keras_hub.src.tokenizers.byte_pair_tokenizer import BytePairTokenizer

    if Llama3Tokenizer.get_config is not BytePairTokenizer.get_config:
        return  # keras-hub defines its own now

    def get_config(self):  # type: ignore[no-untyped-def]
        misc = {getattr(self, name) for name in self._special_token_attrs if name.startswith("special_token_")}
        return {
            **BytePairTokenizer.get_config(self),
            "bos_token": self.start_token,
            "eos_token": self.end_token,
            "misc_special_tokens": sorted(misc),
        }

    original_from_config = Llama3Tokenizer.from_config.__func__

    def from_config(cls, config):  # type: ignore[no-untyped-def]
        if isinstance(config.get("misc_special_tokens"), list):  # JSON has no sets; __init__ wants one
            config = {**config, "misc_special_tokens": set(config["misc_special_tokens"])}
        return original_from_config(cls, config)

    Llama3Tokenizer.get_config = get_config
    Llama3Tokenizer.from_config = classmethod(from_config)


# Spaces before punctuation and indented lines: where keras-hub 0.32's two byte-pair paths part ways.
_WHITESPACE_PROBE = 'x   ::= "[" a\n      | b\n  c'


def _byte_pair_tokenizers_tokenize_as_in_graphs() -> None:
    """Byte-pair tokenizers (GPT-2, RoBERTa, Llama 3...) split text the same way eagerly as in tf.data.

    keras-hub 0.32 runs a pure-Python path (Hugging Face `tokenizers` with a Llama 3
    split pattern) when called eagerly, and a TensorFlow path inside `tf.function`
    and `tf.data`; they cut runs of spaces differently (12 vs 11 tokens on indented
    text). kit trains in tf.data, and the TensorFlow path is the one that matches
    GPT-2's own pre-tokenizer, so every eager call (`kit predict`, `kit generate`,
    export checks, serving) takes it too.

    The check tokenises a short text both ways (TensorFlow's path eagerly: tracing
    it as a graph cost 2.5 s), when a byte-pair tokenizer first asks which path to
    take, not in runs without one. Its answer depends only on the libraries, so it
    is kept in kit's cache (`$KIT_CACHE_DIR`, default `~/.cache/kit`) for their
    versions: the eager run of TensorFlow's path took 1.4 s of every command that
    loaded a byte-pair tokenizer.
    """
    from keras_hub.src.tokenizers.byte_pair_tokenizer import BytePairTokenizer

    original = BytePairTokenizer._use_tf_workflow
    if getattr(original, "kit_checked_lazily", False):
        return

    def use_tf_workflow(self: Any) -> bool:
        return original(self) or _byte_pair_paths_differ()

    use_tf_workflow.kit_checked_lazily = True  # type: ignore[attr-defined]
    BytePairTokenizer._use_tf_workflow = use_tf_workflow
    _byte_pair_tokenizers_skip_their_python_path(BytePairTokenizer)


def _byte_pair_tokenizers_skip_their_python_path(cls: Any) -> None:
    """Where every call takes TensorFlow's path (above), a byte-pair tokenizer does not also build the
    Hugging Face `tokenizers` object of the Python path from its vocabulary and merges (SmolLM2: 0.4 s at
    every load). keras-hub still builds it on first use if anything asks for that path."""
    original = cls.set_vocabulary_and_merges
    if getattr(original, "kit_skips_python_path", False):
        return

    def set_vocabulary_and_merges(self: Any, vocabulary: Any, merges: Any) -> None:
        skip = getattr(self, "_allow_python_workflow", False) and vocabulary is not None and merges is not None
        if not (skip and _byte_pair_paths_differ()):
            return original(self, vocabulary, merges)
        self._allow_python_workflow = False  # keras-hub's switch for "TensorFlow's path only", for this call
        try:
            return original(self, vocabulary, merges)
        finally:
            self._allow_python_workflow = True

    set_vocabulary_and_merges.kit_skips_python_path = True  # type: ignore[attr-defined]
    cls.set_vocabulary_and_merges = set_vocabulary_and_merges


_probe_lock = threading.RLock()
_probe_result: list[bool] = []  # filled once: whether keras-hub's two byte-pair paths disagree


def _byte_pair_paths_differ() -> bool:
    """Whether an eager byte-pair tokenizer splits `_WHITESPACE_PROBE` differently from one in a tf.function."""
    with _probe_lock:
        if _probe_result:
            return _probe_result[0]
        known = _remembered_probe()
        if known is not None:
            _probe_result.append(known)
            return known
        differ = _probe_byte_pair_paths()
        _remember_probe(differ)
        return differ


def _probe_byte_pair_paths() -> bool:
    with _probe_lock:
        _probe_result.append(False)  # while probing (re-entered from the probe's own calls): keras-hub's choice
        import numpy as np
        from keras_hub.src.tokenizers.byte_pair_tokenizer import BytePairTokenizer

        alphabet = [chr(c) for c in range(ord("!"), ord("~") + 1)] + ["Ġ", "Ċ", "ĠĠ"]
        probe = BytePairTokenizer(vocabulary={char: i for i, char in enumerate(alphabet)}, merges=["Ġ Ġ"])
        eager = np.asarray(probe(_WHITESPACE_PROBE)).tolist()
        # TensorFlow's path, run eagerly: the same operations tf.data runs, without tracing a graph (2.5 s).
        _probe_result[0] = True
        try:
            in_tensorflow = np.asarray(probe(_WHITESPACE_PROBE)).tolist()
        except BaseException:
            _probe_result[0] = False  # unprobed: keras-hub's own choice
            raise
        _probe_result[0] = eager != in_tensorflow
        return _probe_result[0]


_PROBE_FORMAT = 1  # raised when the probe or its text changes: older answers are then probed again


def _probe_key() -> str:
    """The libraries the probe's answer depends on, by version."""
    import keras
    import keras_hub
    import tensorflow as tf
    import tensorflow_text

    versions = (keras_hub.__version__, keras.__version__, tf.__version__, tensorflow_text.__version__)
    return json.dumps([_PROBE_FORMAT, *versions])


_PROBE_FILE = "keras-hub-checks.json"  # in kit's cache (`kit.cache`)


def _remembered_probe() -> bool | None:
    """The probe's answer kept for these library versions, or None (none kept, or an unreadable file)."""
    from kit.cache import read_json

    kept = read_json(_PROBE_FILE)
    answer = kept.get("byte_pair_paths_differ") if isinstance(kept, dict) else None
    if (
        not isinstance(answer, dict)
        or answer.get("libraries") != _probe_key()
        or type(answer.get("differ")) is not bool
    ):
        return None
    return answer["differ"]


def _remember_probe(differ: bool) -> None:
    """Keep the answer in kit's cache; a cache that cannot be written is skipped."""
    from kit.cache import write_json

    write_json(_PROBE_FILE, {"byte_pair_paths_differ": {"libraries": _probe_key(), "differ": differ}})


@functools.cache
def fix_keras_saving() -> None:
    """Let Keras's saving remember which attributes it skips, as it means to.

    Keras 3.15's `saving_lib.get_attr_skipset` keeps the set it computes under
    the key "saving_attr_skipset_..." and looks for it under
    "saving_attr_skiplist_...", so it never finds it. Every object that every
    save or load walks through then builds a fresh reference object (a
    `Layer()`, an `Optimizer(1.0)`, a `Metric()`) to list that type's
    attributes. Walking a MiniLM classifier took 95-136 ms instead of 28-31 ms,
    and kit walked it four times an epoch (the epoch's checkpoint and the
    training state, each also counted before it was written); for `kit new`'s
    tabular project, 30 epochs, that was half of its 16 s.

    kit keeps each type's set in Keras's own per-thread state, so
    `keras.backend.clear_session()` clears it as it would Keras's. The sets are
    the ones Keras computes. A Keras that finds its own sets is left alone.
    """
    from keras.src.backend.common import global_state
    from keras.src.saving import saving_lib

    original = getattr(saving_lib, "get_attr_skipset", None)
    if original is None or original("Layer") is original("Layer"):
        return

    def get_attr_skipset(obj_type: str) -> Any:
        key = f"kit_saving_attr_skipset_{obj_type}"
        found = global_state.get_global_attribute(key, None)
        if found is None:
            found = original(obj_type)
            global_state.set_global_attribute(key, found)
        return found

    get_attr_skipset.__wrapped__ = original  # type: ignore[attr-defined]
    saving_lib.get_attr_skipset = get_attr_skipset


@functools.cache
def fix_keras_distribution() -> None:
    """Let `model.fit` run under MirroredStrategy over several devices and MultiWorkerMirroredStrategy.

    Keras 3.15's TensorFlow trainer has two bugs there (see ../shared/STACK.md):

    1. `_maybe_symbolic_build` MEAN-reduces the first batch across replicas only
       to learn its shapes; a bool tensor (keras-hub's padding mask) cannot be
       reduced, and across workers the reduce fails outright. The first
       replica's local batch has the same shapes: kit builds from that.
    2. `reduce_per_replica` MEAN-reduces every log value along axis 0 across
       workers; scalar logs (the loss) have no axis 0. kit reduces scalars whole.

    Both are detected in Keras's source, so a Keras that fixes them is left alone.
    """
    import inspect

    from keras.src.backend.tensorflow import trainer

    if '"MEAN"' in inspect.getsource(trainer.TensorFlowTrainer._maybe_symbolic_build):
        trainer.TensorFlowTrainer._maybe_symbolic_build = _symbolic_build_from_first_replica
    if 'strategy.reduce("MEAN", v, axis=0)' in inspect.getsource(trainer.reduce_per_replica):
        original = trainer.reduce_per_replica

        def reduce_per_replica(values, strategy, reduction):  # type: ignore[no-untyped-def]
            if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
                from keras.src import tree

                def mean(value):  # type: ignore[no-untyped-def]
                    axis = None if getattr(value, "shape", None) is None or value.shape.rank == 0 else 0
                    return strategy.reduce("MEAN", value, axis=axis)

                return tree.map_structure(mean, values)
            return original(values, strategy, reduction)

        trainer.reduce_per_replica = reduce_per_replica


def _symbolic_build_from_first_replica(self, iterator=None, data_batch=None):  # type: ignore[no-untyped-def]
    """Keras's `_maybe_symbolic_build`, taking the first replica's batch instead of a cross-replica mean."""
    import tensorflow as tf
    from keras.src import tree

    if self._distribute_strategy is None:
        return
    if iterator is not None:
        for _, _, it in iterator:
            batch = next(it)
            data_batch = tree.map_structure(
                lambda x: (
                    self.distribute_strategy.experimental_local_results(x)[0]
                    if isinstance(x, tf.distribute.DistributedValues)
                    else x
                ),
                batch,
            )
            break
    with self.distribute_strategy.scope():
        self._symbolic_build(data_batch=data_batch)
