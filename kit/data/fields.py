"""Fields: how one column is parsed, checked, learned from and encoded.

The scan calls `parse` on every row (a `BadValue` marks the row malformed),
`observe` on training rows to learn statistics (vocabularies, means), and
`check` on validation/test rows (e.g. labels never seen in training). The
pipeline then calls `encode` to produce what goes into tf.data.
"""

from __future__ import annotations

import math
from typing import Any


class BadValue(Exception):
    """A value that makes its row malformed; the message says why."""


class Field:
    """One column of an example.

    Attributes:
        column: the column name in the source.
        dtype: numpy dtype of the encoded value ("float32", "int32", "str"...).
        shape: shape of one encoded value (() for scalars).
    """

    dtype = "float32"
    shape: tuple[int | None, ...] = ()

    def __init__(self, column: str):
        self.column = column

    def parse(self, raw: Any) -> Any:
        """Turn a raw value (CSV string, JSON value...) into a Python value or raise BadValue."""
        return raw

    def observe(self, value: Any) -> None:
        """Learn from one training value."""

    def finish(self) -> None:
        """Called once the training rows have been observed."""

    def check(self, value: Any) -> None:
        """Validate one validation/test value against what was learned; raise BadValue."""

    def encode(self, value: Any) -> Any:
        """The value as fed to tf.data."""
        return value

    def get_state(self) -> dict[str, Any]:
        """JSON-able learned state, saved with the model."""
        return {}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore `get_state()` output."""


def _text(raw: Any) -> str:
    if raw is None:
        raise BadValue("missing value")
    if isinstance(raw, float) and math.isnan(raw):
        raise BadValue("missing value (NaN)")
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    if isinstance(raw, (int, float, str)):
        return str(raw)
    raise BadValue(f"expected text, got {type(raw).__name__}")


class TextField(Field):
    """Free text; empty text is malformed."""

    dtype = "str"

    def parse(self, raw: Any) -> str:
        text = _text(raw)
        if not text.strip():
            raise BadValue("empty text")
        return text


class NumberField(Field):
    """A finite number. With `normalize`, encoded as (x - mean) / std of the training values."""

    def __init__(self, column: str, normalize: bool = False):
        super().__init__(column)
        self.normalize = normalize
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0  # Welford's running sum of squares: one pass, no stored values
        self.std = 1.0

    def parse(self, raw: Any) -> float:
        if isinstance(raw, bool):
            raise BadValue(f"expected a number, got {raw!r}")
        if isinstance(raw, str):
            if not raw.strip():
                raise BadValue("empty value where a number is expected")
            try:
                value = float(raw)
            except ValueError:
                raise BadValue(f"'{raw[:40]}' is not a number") from None
        elif isinstance(raw, (int, float)):
            value = float(raw)
        elif raw is None:
            raise BadValue("missing value where a number is expected")
        else:
            raise BadValue(f"expected a number, got {type(raw).__name__}")
        if not math.isfinite(value):
            raise BadValue(f"{value} is not a finite number")
        return value

    def observe(self, value: float) -> None:
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (value - self.mean)

    def finish(self) -> None:
        variance = self.m2 / self.count if self.count else 1.0
        self.std = math.sqrt(variance) if variance > 0 else 1.0

    def encode(self, value: float) -> float:
        return (value - self.mean) / self.std if self.normalize else value

    def decode(self, encoded: Any) -> Any:
        return encoded * self.std + self.mean if self.normalize else encoded

    def get_state(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "count": self.count}

    def set_state(self, state: dict[str, Any]) -> None:
        self.mean, self.std, self.count = state["mean"], state["std"], state.get("count", 0)


class CategoryField(Field):
    """A category given as text; the vocabulary is learned from training rows.

    Categories unseen in training are fine for features (they map to an
    out-of-vocabulary bucket inside the model).
    """

    dtype = "str"

    def __init__(self, column: str):
        super().__init__(column)
        self.counts: dict[str, int] = {}
        self.vocabulary: list[str] = []

    def parse(self, raw: Any) -> str:
        return _text(raw).strip()

    def observe(self, value: str) -> None:
        self.counts[value] = self.counts.get(value, 0) + 1

    def finish(self) -> None:
        self.vocabulary = sorted(self.counts)

    def get_state(self) -> dict[str, Any]:
        return {"vocabulary": self.vocabulary}

    def set_state(self, state: dict[str, Any]) -> None:
        self.vocabulary = list(state["vocabulary"])


class LabelField(CategoryField):
    """A class label; encoded as its index in the sorted training vocabulary.

    A label in validation/test data that never occurs in training is
    malformed: the model cannot predict it.
    """

    dtype = "int32"

    def parse(self, raw: Any) -> str:
        value = _text(raw).strip()
        if not value:
            raise BadValue("empty label")
        return value

    def finish(self) -> None:
        super().finish()
        self.index = {label: i for i, label in enumerate(self.vocabulary)}

    def check(self, value: str) -> None:
        if value not in self.index:
            known = ", ".join(self.vocabulary[:10]) + (" ..." if len(self.vocabulary) > 10 else "")
            raise BadValue(f"label '{value}' does not occur in the training data (known: {known})")

    def encode(self, value: str) -> int:
        return self.index[value]

    @property
    def size(self) -> int:
        return len(self.vocabulary)

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.index = {label: i for i, label in enumerate(self.vocabulary)}


class ImageField(Field):
    """An image: a file path (decoded in tf.data) or an array of pixels."""

    dtype = "str"

    def parse(self, raw: Any) -> Any:
        if isinstance(raw, str):
            if not raw.strip():
                raise BadValue("empty image path")
            return raw
        if getattr(raw, "ndim", None) in (2, 3):  # a numpy array of pixels
            return raw
        raise BadValue(f"expected an image path or pixel array, got {type(raw).__name__}")
