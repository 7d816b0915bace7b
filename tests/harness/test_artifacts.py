"""model.keras as kit writes it: Keras's file, written without building it in memory, never half-written."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest


def text_model():
    """A model with an asset (an adapted StringLookup's vocabulary) as well as weights."""
    import keras

    keras.utils.set_random_seed(1)
    lookup = keras.layers.StringLookup()
    lookup.adapt(["low", "high", "high", "mid"])
    inputs = keras.Input((1,), dtype="string")
    ids = lookup(inputs)
    hidden = keras.layers.Flatten()(keras.layers.Embedding(5, 4)(ids))
    return keras.Model(inputs, keras.layers.Dense(2)(hidden))


def test_model_file_is_the_file_keras_writes_and_loads_plain_in_a_fresh_process(tmp_path):
    from kit.harness.artifacts import write_model_file

    model = text_model()
    words = np.array([["high"], ["low"], ["unknown"]])
    model.save(tmp_path / "keras.keras")
    write_model_file(model, tmp_path / "model.keras")
    with zipfile.ZipFile(tmp_path / "keras.keras") as theirs, zipfile.ZipFile(tmp_path / "model.keras") as mine:
        assert sorted(mine.namelist()) == sorted(theirs.namelist())
        assert any(name.startswith("assets/") for name in mine.namelist())
        assert mine.read("config.json") == theirs.read("config.json")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["keras.keras", "model.keras"]  # no temporaries
    np.save(tmp_path / "words.npy", words)
    code = (
        "import sys, numpy as np, keras, tensorflow as tf\n"
        "model = keras.saving.load_model(sys.argv[1])\n"
        "np.save(sys.argv[2], model.predict(tf.constant(np.load(sys.argv[3])), verbose=0))\n"
    )
    argv = [str(tmp_path / "model.keras"), str(tmp_path / "out.npy"), str(tmp_path / "words.npy")]
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    import tensorflow as tf

    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), model.predict(tf.constant(words), verbose=0))


def test_a_compiled_models_file_is_what_keras_writes_for_it_uncompiled(tmp_path):
    """kit saves the trained model itself (no copy), without its optimizer's state or its compile settings."""
    import h5py

    from kit.harness.artifacts import write_model_file

    model = text_model()
    model.save(tmp_path / "keras.keras")  # Keras's own file, uncompiled
    model.compile(optimizer="adam", loss="mse")
    model.train_on_batch(np.array([["low"], ["high"]]), np.zeros((2, 2)))  # the optimizer has state to leave out
    write_model_file(model, tmp_path / "model.keras", trained=True)

    def groups(path):
        with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as weights:
            with h5py.File(weights, "r") as handle:
                found = []
                handle.visit(found.append)
                return sorted(found)

    assert groups(tmp_path / "model.keras") == groups(tmp_path / "keras.keras")
    assert not any(name.startswith("optimizer") for name in groups(tmp_path / "model.keras"))

    def config(path):
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("config.json"))

    assert config(tmp_path / "model.keras") == config(tmp_path / "keras.keras")


def test_a_failed_write_keeps_the_earlier_model_file_and_leaves_no_temporary_files(tmp_path, monkeypatch):
    from kit.harness.artifacts import write_model_file

    model = text_model()
    path = tmp_path / "model.keras"
    write_model_file(model, path)
    before = path.read_bytes()

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(zipfile.ZipFile, "write", full)
    with pytest.raises(OSError) as failed:
        write_model_file(model, path)
    assert failed.value.errno == errno.ENOSPC
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]
