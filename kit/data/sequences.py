"""Fields for words with one label each (named-entity recognition and other token tagging).

`WordsField` holds an example's words, `TagsField` one label per word. Both
encode to a fixed length (padding with "" and -1), so examples batch and are
held in memory like any other column; words past that length could not fit in
the model's sequence anyway (every word takes at least one token).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kit.data.fields import BadValue, Field

MAX_WORD_CHARS = 100


def _words(raw: Any, what: str) -> list[str]:
    """A JSON list of strings, or a text split at whitespace."""
    if isinstance(raw, str):
        items = raw.split()
    elif isinstance(raw, (list, tuple)):
        items = list(raw)
    else:
        raise BadValue(f"expected a list of {what} (or a text to split at spaces), got {type(raw).__name__}")
    if not items:
        raise BadValue(f"no {what}: the list is empty")
    for number, item in enumerate(items, start=1):
        if not isinstance(item, str) or not item.strip():
            raise BadValue(f"{what} {number} is {item!r}; every one must be a non-empty string")
    return [item.strip() for item in items]


class WordsField(Field):
    """An example's words: a JSON list of strings, or a text split at whitespace.

    Encoded as `length` strings, "" after the last word.
    """

    dtype = "str"

    def __init__(self, column: str, length: int):
        super().__init__(column)
        self.length = length
        self.shape = (length,)

    def parse(self, raw: Any) -> list[str]:
        words = _words(raw, "words")
        long = next((w for w in words if len(w) > MAX_WORD_CHARS), None)
        if long is not None:
            raise BadValue(f"the word '{long[:30]}...' has {len(long)} characters; is this column really words?")
        return words

    def encode(self, value: list[str]) -> Any:
        padded = np.full(self.length, "", dtype=object)
        kept = value[: self.length]
        padded[: len(kept)] = kept
        return padded


class TagsField(Field):
    """One label per word (B-PER, I-PER, O...), learned from the training rows like `LabelField`.

    Encoded as `length` label indices, -1 after the last word (the loss ignores -1).
    Labels in validation or test data that training never saw make the row malformed.
    """

    dtype = "int32"

    def __init__(self, column: str, length: int):
        super().__init__(column)
        self.length = length
        self.shape = (length,)
        self.counts: dict[str, int] = {}
        self.vocabulary: list[str] = []
        self.index: dict[str, int] = {}

    def parse(self, raw: Any) -> list[str]:
        return _words(raw, "tags")

    def observe(self, value: list[str]) -> None:
        for tag in value:
            self.counts[tag] = self.counts.get(tag, 0) + 1

    def finish(self) -> None:
        self.vocabulary = sorted(self.counts)
        self.index = {tag: i for i, tag in enumerate(self.vocabulary)}

    def check(self, value: list[str]) -> None:
        unknown = next((tag for tag in value if tag not in self.index), None)
        if unknown is not None:
            known = ", ".join(self.vocabulary[:12]) + (" ..." if len(self.vocabulary) > 12 else "")
            raise BadValue(f"tag '{unknown}' does not occur in the training data (known: {known})")

    def encode(self, value: list[str]) -> Any:
        encoded = np.full(self.length, -1, dtype=np.int32)
        kept = value[: self.length]
        encoded[: len(kept)] = [self.index[tag] for tag in kept]
        return encoded

    @property
    def size(self) -> int:
        return len(self.vocabulary)

    def get_state(self) -> dict[str, Any]:
        return {"vocabulary": self.vocabulary}

    def set_state(self, state: dict[str, Any]) -> None:
        self.vocabulary = list(state["vocabulary"])
        self.index = {tag: i for i, tag in enumerate(self.vocabulary)}
