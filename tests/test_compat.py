"""kit's keras-hub fixes: what they promise, checked against the installed keras-hub."""

from __future__ import annotations

import numpy as np


def test_an_eager_byte_pair_tokenizer_splits_text_as_a_traced_one():
    """Indented text and spaces before punctuation, where keras-hub 0.32's eager and TensorFlow paths part ways."""
    import tensorflow as tf
    from keras_hub.src.tokenizers.byte_pair_tokenizer import BytePairTokenizer

    from kit.compat import _WHITESPACE_PROBE, fix_keras_hub

    fix_keras_hub()
    alphabet = [chr(c) for c in range(ord("!"), ord("~") + 1)] + ["Ġ", "Ċ", "ĠĠ"]
    tokenizer = BytePairTokenizer(vocabulary={char: i for i, char in enumerate(alphabet)}, merges=["Ġ Ġ"])
    for text in (_WHITESPACE_PROBE, "a  ,  b\n\n    c  .", "plain words"):
        eager = np.asarray(tokenizer(text)).tolist()
        traced = tf.function(tokenizer)(tf.constant(text)).numpy().tolist()
        assert eager == traced, text


def test_the_byte_pair_check_is_kept_for_the_installed_libraries(monkeypatch):
    """Probed once, then read from kit's cache: a new process need not run TensorFlow's path eagerly (1.4 s).
    Other library versions, a damaged file or an unwritable cache mean probing again."""
    import json

    import kit.compat as compat
    from kit.cache import cache_dir

    kept_file = cache_dir() / compat._PROBE_FILE
    compat.fix_keras_hub()
    monkeypatch.setattr(compat, "_probe_result", [])
    first = compat._byte_pair_paths_differ()
    kept = json.loads(kept_file.read_text(encoding="utf-8"))["byte_pair_paths_differ"]
    assert kept == {"libraries": compat._probe_key(), "differ": first}

    probes: list[int] = []

    def probe() -> bool:
        probes.append(1)
        compat._probe_result.append(not first)
        return not first

    monkeypatch.setattr(compat, "_probe_byte_pair_paths", probe)
    monkeypatch.setattr(compat, "_probe_result", [])
    assert compat._byte_pair_paths_differ() is first and probes == []  # a new process: the kept answer

    for damaged in ("{not json", json.dumps({"byte_pair_paths_differ": {"libraries": "keras-hub 0.1", "differ": 1}})):
        kept_file.write_text(damaged, encoding="utf-8")
        monkeypatch.setattr(compat, "_probe_result", [])
        assert compat._byte_pair_paths_differ() is (not first)
    assert len(probes) == 2
    assert json.loads(kept_file.read_text(encoding="utf-8"))["byte_pair_paths_differ"]["differ"] is (not first)

    monkeypatch.setenv("KIT_CACHE_DIR", "/dev/null/not-a-folder")  # cannot be written: probed, nothing kept
    monkeypatch.setattr(compat, "_probe_result", [])
    assert compat._byte_pair_paths_differ() is (not first) and len(probes) == 3


def test_a_byte_pair_tokenizer_builds_no_python_path_it_will_not_take():
    """Where kit sends every eager call down TensorFlow's path, the `tokenizers` object of keras-hub's Python
    path is not built at load (0.4 s for SmolLM2's); the layer's switch is left as it was, and the object
    is still built if anything asks for it."""
    from keras_hub.src.tokenizers.byte_pair_tokenizer import BytePairTokenizer

    from kit.compat import _byte_pair_paths_differ, fix_keras_hub

    fix_keras_hub()
    alphabet = [chr(c) for c in range(ord("!"), ord("~") + 1)] + ["Ġ", "Ċ", "ĠĠ"]
    tokenizer = BytePairTokenizer(vocabulary={char: i for i, char in enumerate(alphabet)}, merges=["Ġ Ġ"])
    assert tokenizer._allow_python_workflow is True
    if not _byte_pair_paths_differ():  # a keras-hub whose two paths agree: the Python path is kit's too
        assert tokenizer._tokenizer is not None
        return
    assert getattr(tokenizer, "_tokenizer", None) is None
    assert np.asarray(tokenizer("a  b")).tolist() == np.asarray(tokenizer("a  b")).tolist()
    tokenizer._maybe_initialized_tokenizers()
    assert tokenizer._tokenizer is not None


def test_keras_saving_lists_each_types_attributes_once(tmp_path, monkeypatch):
    """Keras 3.15 looks for its kept attribute sets under another key than it keeps them under, so every
    object of every save or load built a reference Layer (or Optimizer, Metric) first."""
    import keras
    from keras.src.layers.layer import Layer
    from keras.src.saving import saving_lib

    from kit.compat import fix_keras_saving

    fix_keras_saving()
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Dense(5)(inputs)))
    model.compile(optimizer="adam", loss="mse")
    model.save_weights(tmp_path / "first.weights.h5")
    built = []
    keras_init = Layer.__init__

    def counted_init(self, *args, **kwargs):
        built.append(type(self))
        keras_init(self, *args, **kwargs)

    monkeypatch.setattr(Layer, "__init__", counted_init)
    model.save_weights(tmp_path / "second.weights.h5")
    model.load_weights(tmp_path / "second.weights.h5")  # loading walks the same way
    monkeypatch.undo()
    assert built == []
    kept = saving_lib.get_attr_skipset("Layer")
    assert kept is saving_lib.get_attr_skipset("Layer")
    assert kept == getattr(saving_lib.get_attr_skipset, "__wrapped__", saving_lib.get_attr_skipset)("Layer")


def test_a_keras_that_finds_its_own_attribute_sets_is_left_alone(monkeypatch):
    from keras.src.saving import saving_lib

    import kit.compat as compat

    kept = {"_self_unconditional_dependency_names"}
    monkeypatch.setattr(saving_lib, "get_attr_skipset", lambda obj_type: kept)
    own = saving_lib.get_attr_skipset
    compat.fix_keras_saving.__wrapped__()
    assert saving_lib.get_attr_skipset is own
