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
