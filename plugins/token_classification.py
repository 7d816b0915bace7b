"""The built-in `token_classification` task: one label per word (named entities with BIO tags).

Input rows hold a list of words (`data.tokens_column`, default `tokens`) and
one tag per word (`data.target`, default `tags`), e.g. JSON lines
`{"tokens": ["EU", "rejects", "German", "call"], "tags": ["B-ORG", "O", "B-MISC", "O"]}`.
Each word is tokenised on its own; the head reads the vector of each word's
first sub-word token, so labels never need re-aligning to sub-words.

Metrics are entity-level precision, recall and F1 (micro over entity types,
with the CoNLL chunking rules seqeval uses: B-/I-/E-/S- prefixes, an I- after
O or after another type starts an entity), per-type F1, and word accuracy.
Predictions are entity spans with their words and character offsets into the
words joined by single spaces.
"""

from __future__ import annotations

import functools
from typing import Any

import kit
from kit.data import TagsField

OUTSIDE = "O"


class TokenClassification(kit.Task):
    """Label every word (BIO/IOBES tags); a head over each word's first sub-word token."""

    name = "token_classification"
    description = (
        "One label per word (named entities, BIO tags); entity precision, recall, F1 as seqeval computes them."
    )
    default_target = ("tags",)
    input_kinds = ("tokens",)

    def target_fields(self, columns: list[str]) -> list[TagsField]:
        if len(columns) != 1:
            raise kit.ConfigError(f"token_classification takes one tag column; data.target names {columns}.")
        return [TagsField(columns[0], self.config.model.sequence_length)]

    def check_example(self, features: dict[str, Any], targets: dict[str, Any]) -> None:
        words, tags = next(iter(features.values())), next(iter(targets.values()))
        if len(words) != len(tags):
            raise kit.data.BadValue(f"{len(words)} words but {len(tags)} tags; give one tag per word")

    @property
    def tags(self) -> list[str]:
        return self.fields[0].vocabulary

    def build_model(self, built: kit.Built) -> Any:
        import keras

        logits = keras.layers.Dense(len(self.tags), dtype="float32", name="tag_logits")(built.representation)
        # A word whose first token did not fit in model.sequence_length is tagged O (it cannot be read): its
        # logits are fixed, O a little ahead, so its loss is bounded (about log of the tag count) and constant.
        outside = [1.0 if tag == OUTSIDE else 0.0 for tag in self.tags]
        fits = keras.ops.expand_dims(built.inputs["word_mask"], -1)
        logits = keras.ops.where(fits, logits, keras.ops.convert_to_tensor(outside, "float32"))
        return keras.Model(built.inputs, logits, name=f"{self.name}_model")

    def loss(self) -> Any:
        import keras

        return keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1)

    def served_outputs(self, outputs: Any) -> dict[str, Any]:
        """Each word's tag name and the probabilities of every tag (positions past the last word are padding)."""
        import keras

        probabilities = keras.layers.Softmax(name="tag_probabilities")(outputs)
        best = keras.ops.argmax(probabilities, axis=-1)
        names = keras.layers.StringLookup(vocabulary=self.tags, invert=True, num_oov_indices=0, name="tags")
        return {"tags": names(best), "tag_probabilities": probabilities}

    def export_metadata(self) -> dict[str, Any]:
        return {
            "tags": "one tag per word (the words given, then padding to model.sequence_length: ignore those)",
            "tag_probabilities": "per word, one probability per tag, in the order of `tag_names`",
            "tag_names": list(self.tags),
        }

    def metrics(self) -> list[Any]:
        return [word_accuracy_class()(name="accuracy")]

    def evaluate(self, targets: Any, outputs: Any) -> dict[str, float]:
        true, predicted = self.sentences(targets, outputs.argmax(axis=-1))
        return entity_metrics(true, predicted)

    def sentences(self, targets: Any, predicted: Any) -> tuple[list[list[str]], list[list[str]]]:
        """Tag strings per sentence, true and predicted, over the real words (targets >= 0)."""
        true, guessed = [], []
        for row_targets, row_predicted in zip(targets, predicted):
            real = row_targets >= 0
            true.append([self.tags[i] for i in row_targets[real]])
            guessed.append([self.tags[i] for i in row_predicted[real]])
        return true, guessed

    def predictions(self, outputs: Any, features: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        words_column = self.config.data.tokens_column
        results = []
        for row, words in zip(outputs.argmax(axis=-1), features[words_column]):
            words = [w.decode() if isinstance(w, bytes) else str(w) for w in words if len(w)]
            tags = [self.tags[i] for i in row[: len(words)]]
            results.append({"tags": tags, "entities": spans(words, tags)})
        return results


def spans(words: list[str], tags: list[str]) -> list[dict[str, Any]]:
    """Entities as {type, text, start, end, words}: character offsets into " ".join(words), word range [first, last+1)."""
    starts, position = [], 0
    for word in words:
        starts.append(position)
        position += len(word) + 1
    found = []
    for kind, first, last in entities(tags):
        start, end = starts[first], starts[last] + len(words[last])
        found.append({"type": kind, "text": " ".join(words[first : last + 1]), "start": start, "end": end,
                      "words": [first, last + 1]})  # fmt: skip
    return found


# ------------------------------------------------------------ entity chunking (seqeval / conlleval rules)


def _split(tag: str) -> tuple[str, str]:
    """("B", "PER") from "B-PER"; ("O", "") from "O"; a tag without prefix is its own type inside."""
    if tag == OUTSIDE or tag == ".":
        return tag, ""
    head, sep, rest = tag.partition("-")
    return (head, rest) if sep and head in "BIESU" and head else ("I", tag)


def _ends(prev_tag: str, tag: str, prev_type: str, kind: str) -> bool:
    if prev_tag in ("E", "S"):
        return True
    if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev_tag not in ("O", ".") and prev_type != kind


def _starts(prev_tag: str, tag: str, prev_type: str, kind: str) -> bool:
    if tag in ("B", "S"):
        return True
    if prev_tag in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag not in ("O", ".") and prev_type != kind


def entities(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, first word, last word) of every entity in one sentence's tags."""
    found, prev_tag, prev_type, begin = [], OUTSIDE, "", 0
    for i, tag in enumerate([*tags, OUTSIDE]):
        head, kind = _split(tag)
        head = "S" if head == "U" else head  # BILOU's unit tag is IOBES's single
        if _ends(prev_tag, head, prev_type, kind):
            found.append((prev_type, begin, i - 1))
        if _starts(prev_tag, head, prev_type, kind):
            begin = i
        prev_tag, prev_type = head, kind
    return found


def entity_metrics(true: list[list[str]], predicted: list[list[str]]) -> dict[str, float]:
    """Micro entity precision/recall/F1 and per-type F1 over sentences, plus word accuracy."""
    gold = {(n, *e) for n, tags in enumerate(true) for e in entities(tags)}
    guess = {(n, *e) for n, tags in enumerate(predicted) for e in entities(tags)}
    metrics = _prf(len(gold & guess), len(guess), len(gold))
    for kind in sorted({e[1] for e in gold}):
        gold_kind, guess_kind = {e for e in gold if e[1] == kind}, {e for e in guess if e[1] == kind}
        metrics[f"f1_{kind}"] = _prf(len(gold_kind & guess_kind), len(guess_kind), len(gold_kind))["f1"]
    words = sum(len(tags) for tags in true)
    correct = sum(a == b for t, p in zip(true, predicted) for a, b in zip(t, p))
    metrics["accuracy"] = correct / words if words else 0.0
    metrics["entities"] = float(len(gold))
    return metrics


def _prf(correct: int, predicted: int, gold: int) -> dict[str, float]:
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


@functools.cache
def word_accuracy_class() -> type:
    """`WordAccuracy`, a Keras metric: defined on first use, so importing the plugin does not import Keras."""
    import keras

    @keras.saving.register_keras_serializable(package="kit_plugins")
    class WordAccuracy(keras.metrics.Mean):
        """Share of real words (target >= 0) whose tag is predicted right, per epoch."""

        def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
            ops = keras.ops
            real = ops.cast(ops.greater_equal(y_true, 0), "float32")
            right = ops.cast(ops.equal(ops.cast(y_true, "int32"), ops.cast(ops.argmax(y_pred, -1), "int32")), "float32")
            super().update_state(right, sample_weight=real)

    return WordAccuracy


@kit.hookimpl
def register_tasks(register: Any) -> None:
    register(TokenClassification)
