"""kit's own tf.data and preprocessing code is traced as it is, without AutoGraph rewriting its source first
(30-140 ms a function, 0.7 s of every MiniLM run); a plugin's preprocessing keeps AutoGraph."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from kit_plugins.backbones.bert import BertFromScratch
from kit_plugins.backbones.cnn import SmallCNN
from kit_plugins.backbones.mlp import MLP
from kit_plugins.backbones.pretrained_image import PretrainedImage
from kit_plugins.backbones.pretrained_text import PretrainedEncoder
from kit_plugins.backbones.roberta import RobertaFromScratch
from tensorflow.python.autograph.impl import api as autograph_api  # the step that rewrites source

import kit
from kit.backbone import needs_autograph
from kit.data.pipeline import HeldExamples, TrainingStream, trimmed
from kit.data.splits import traced_preprocessing


@pytest.fixture
def conversions(monkeypatch) -> list[str]:
    return record_conversions(monkeypatch)


def record_conversions(monkeypatch: Any) -> list[str]:
    """The functions AutoGraph rewrites from their source from now on, while the test runs."""
    converted: list[str] = []
    original = autograph_api._convert_actual

    def recording(entity: Any, program_ctx: Any) -> Any:
        converted.append(getattr(entity, "__qualname__", repr(entity)))
        return original(entity, program_ctx)

    monkeypatch.setattr(autograph_api, "_convert_actual", recording)
    return converted


def token_examples(lengths: list[int], sequence_length: int = 16) -> tf.data.Dataset:
    mask = np.array([[i < n for i in range(sequence_length)] for n in lengths])
    x = {"token_ids": np.where(mask, 5, 0).astype(np.int32), "padding_mask": mask}
    return tf.data.Dataset.from_tensor_slices((x, np.arange(len(lengths), dtype=np.int32)))


def test_kits_batches_and_training_stream_need_no_autograph(conversions):
    held = HeldExamples.collect(token_examples([1 + (i * 5) % 16 for i in range(64)]), limit=None)
    stream = TrainingStream(held, batch_size=8, batches_per_pass=8, seed=3, shuffle_buffer=1, group_by_length=True)
    training = list(trimmed(stream.from_step(0)).take(16).as_numpy_iterator())
    evaluation = list(trimmed(held.batches(8, by_length=True)).as_numpy_iterator())
    assert len(training) == 16 and sorted(np.concatenate([y for _, y in evaluation])) == list(range(64))
    streamed = TrainingStream(token_examples([3, 4, 5, 6]), batch_size=2, batches_per_pass=2, seed=1, shuffle_buffer=4)
    assert len(list(streamed.from_step(0).take(4))) == 4
    assert conversions == []


@pytest.mark.parametrize(
    "family", [BertFromScratch, RobertaFromScratch, PretrainedEncoder, SmallCNN, PretrainedImage, MLP]
)
def test_kits_own_preprocessing_is_plain_graph_code(family):
    assert not needs_autograph(family.__new__(family))


class OwnPreprocessing(kit.Backbone):
    """A plugin's family whose preprocessing branches in Python on a tensor's value: it needs AutoGraph."""

    name = "test-own-preprocessing"

    def preprocess(self, features: dict[str, Any]) -> dict[str, Any]:
        x = features["x"]
        if tf.reduce_sum(x) > 0:
            return {"x": x * 2.0}
        return {"x": x}


class OwnTextPreprocessing(BertFromScratch):
    """A subclass of kit's text family with its own `preprocess` (kit's `preprocess_batch` calls it)."""

    def preprocess(self, features: dict[str, Any]) -> dict[str, Any]:
        return OwnPreprocessing.preprocess(self, features)


def test_a_plugins_own_preprocessing_keeps_autograph(conversions):
    assert needs_autograph(OwnPreprocessing.__new__(OwnPreprocessing))
    assert needs_autograph(OwnTextPreprocessing.__new__(OwnTextPreprocessing))
    backbone = OwnPreprocessing.__new__(OwnPreprocessing)
    preprocess = traced_preprocessing(backbone)
    dataset = tf.data.Dataset.from_tensor_slices({"x": np.array([[1.0], [-1.0]], np.float32)}).map(preprocess)
    assert [float(x["x"][0]) for x in dataset.as_numpy_iterator()] == [2.0, -1.0]
    assert "OwnPreprocessing.preprocess" in conversions


class WordsPackedInPython(BertFromScratch):
    """A text family packing words with a Python `if` on a tensor (kit's `preprocess` and `pack` call it)."""

    def pack_words(self, words: Any) -> dict[str, Any]:
        if tf.size(tf.boolean_mask(words, tf.strings.length(words) > 0)) > 1:
            ids = tf.constant([2, 7, 7, 3], tf.int32)
        else:
            ids = tf.constant([2, 7, 3, 0], tf.int32)
        return {"token_ids": ids, "padding_mask": ids > 0, "word_starts": ids * 0, "word_mask": ids > 0}

    def backbone_input_names(self) -> list[str]:
        return ["token_ids", "padding_mask"]


def test_a_text_family_with_its_own_word_packing_keeps_autograph():
    import types

    family = WordsPackedInPython.__new__(WordsPackedInPython)
    family.kind = types.SimpleNamespace(name="tokens", columns=lambda: ["tokens"])
    family.config = types.SimpleNamespace(model=types.SimpleNamespace(sequence_length=4))
    assert needs_autograph(family)
    one = traced_preprocessing(family)({"tokens": tf.constant(["two", "words", ""])})  # kit run: one example
    assert list(one["token_ids"].numpy()) == [2, 7, 7, 3]
    batch = family.preprocess_batch({"tokens": tf.constant([["one", ""], ["two", "words"]])})  # exports
    assert batch["token_ids"].numpy().tolist() == [[2, 7, 3, 0], [2, 7, 7, 3]]
