"""Drift: live inputs compared with the training data's statistics that kit keeps in kit_model.json.

Over a rolling window of the last `window` rows, per input column:

- numbers: the mean shift in training standard deviations, `(live mean - training mean) / training std`,
  and the population stability index (PSI) over the training deciles,
  `sum((live share - training share) * ln(live share / training share))` over the ten bins (runs trained
  before kit kept deciles use the deciles of a normal distribution with the training mean and std);
- categories: the share of values training never saw;
- text: the mean length in characters and its shift in training standard deviations, and the share of
  tokens the tokenizer did not know (its unknown token: WordPiece's [UNK]; byte-level BPE has none).

A PSI under 0.1 is usually read as no shift, 0.1-0.25 as a moderate one, above 0.25 as a large one.

Example:
    >>> drift = Drift(trained.kind.fields, window=1000)
    >>> drift.observe([{"x": 3.2}, {"x": 2.9}])
    >>> drift.figures()   # {"x": {"mean_shift": ..., "psi": ..., "rows": 2}}
"""

from __future__ import annotations

import bisect
import collections
import math
import threading
from typing import Any, Iterable

# ln(share ratio) is infinite for an empty bin: shares are floored at this (a common choice for PSI).
SHARE_FLOOR = 1e-4
# Deciles of the standard normal distribution, for runs that kept only a mean and std.
NORMAL_DECILES = (-1.2816, -0.8416, -0.5244, -0.2533, 0.0, 0.2533, 0.5244, 0.8416, 1.2816)


class NumberDrift:
    """A numeric column's mean shift and PSI against its training mean, std and deciles."""

    kind = "number"

    def __init__(self, column: str, state: dict[str, Any], window: int):
        self.column = column
        self.mean = float(state.get("mean", 0.0))
        self.std = float(state.get("std", 1.0)) or 1.0
        cuts, shares = state.get("deciles"), state.get("decile_shares")
        if not cuts:  # an older run: the deciles of a normal distribution with its mean and std
            cuts, shares = [self.mean + z * self.std for z in NORMAL_DECILES], [0.1] * 10
        self.cuts, self.shares = list(cuts), list(shares)
        self.values: collections.deque[float] = collections.deque(maxlen=window)
        self.counts = [0] * len(self.shares)
        self.total = 0.0

    def add(self, value: Any) -> None:
        value = float(value)
        if len(self.values) == self.values.maxlen:
            old = self.values[0]
            self.total -= old
            self.counts[bisect.bisect_left(self.cuts, old)] -= 1
        self.values.append(value)
        self.total += value
        self.counts[bisect.bisect_left(self.cuts, value)] += 1

    def figures(self) -> dict[str, float]:
        rows = len(self.values)
        if not rows:
            return {"rows": 0}
        live = [count / rows for count in self.counts]
        return {
            "rows": rows,
            "mean": self.total / rows,
            "training_mean": self.mean,
            "mean_shift": (self.total / rows - self.mean) / self.std,
            "psi": psi(self.shares, live),
        }


def psi(expected: list[float], actual: list[float]) -> float:
    """Population stability index of `actual` bin shares against `expected` ones."""
    total = 0.0
    for e, a in zip(expected, actual):
        e, a = max(e, SHARE_FLOOR), max(a, SHARE_FLOOR)
        total += (a - e) * math.log(a / e)
    return total


class CategoryDrift:
    """A categorical column's share of values training never saw (and the most frequent of them)."""

    kind = "category"

    def __init__(self, column: str, state: dict[str, Any], window: int):
        self.column = column
        self.known = set(state.get("vocabulary", []))
        self.unseen: collections.deque[str | None] = collections.deque(maxlen=window)

    def add(self, value: Any) -> None:
        value = str(value)
        self.unseen.append(None if value in self.known else value)

    def figures(self) -> dict[str, Any]:
        rows = len(self.unseen)
        if not rows:
            return {"rows": 0}
        new = collections.Counter(value for value in self.unseen if value is not None)
        return {
            "rows": rows,
            "unseen_rate": sum(new.values()) / rows,
            "unseen_values": [value for value, _ in new.most_common(5)],
        }


class TextDrift:
    """A text column's length against training, and the share of tokens the tokenizer did not know."""

    kind = "text"

    def __init__(self, column: str, state: dict[str, Any], window: int):
        self.column = column
        self.mean = state.get("length_mean")
        self.std = float(state.get("length_std") or 0.0) or 1.0
        self.lengths: collections.deque[int] = collections.deque(maxlen=window)
        self.tokens: collections.deque[tuple[int, int]] = collections.deque(maxlen=window)

    def add(self, value: Any) -> None:
        if isinstance(value, (list, tuple)):  # words of the tokens kind: their text joined by spaces
            value = " ".join(str(word) for word in value)
        self.lengths.append(len(str(value)))

    def add_tokens(self, unknown: int, tokens: int) -> None:
        self.tokens.append((unknown, tokens))

    def figures(self) -> dict[str, Any]:
        rows = len(self.lengths)
        if not rows:
            return {"rows": 0}
        mean = sum(self.lengths) / rows
        found: dict[str, Any] = {"rows": rows, "length_mean": mean}
        if self.mean is not None:
            found.update(training_length_mean=float(self.mean), length_shift=(mean - float(self.mean)) / self.std)
        tokens = sum(count for _, count in self.tokens)
        if tokens:
            found["unknown_token_rate"] = sum(unknown for unknown, _ in self.tokens) / tokens
        return found


class Drift:
    """Drift of every input column the run's input kind reads (images are not tracked).

    Thread-safe: rows are observed on the event loop, token counts in the model's worker thread,
    figures read by /metrics and /stats.
    """

    def __init__(self, fields: Iterable[Any], window: int = 1000):
        from kit.data.fields import CategoryField, NumberField, TextField
        from kit.data.sequences import WordsField

        kinds = ((NumberField, NumberDrift), (CategoryField, CategoryDrift), (TextField, TextDrift),
                 (WordsField, TextDrift))  # fmt: skip
        self.columns: dict[str, Any] = {}
        for f in fields:
            for field_type, tracker in kinds:
                if isinstance(f, field_type):
                    self.columns[f.column] = tracker(f.column, f.get_state(), window)
                    break
        self.lock = threading.Lock()

    def observe(self, rows: list[dict[str, Any]]) -> None:
        """Take checked rows (column -> parsed value) into the windows."""
        with self.lock:
            for row in rows:
                for column, tracker in self.columns.items():
                    if column in row:
                        tracker.add(row[column])

    def observe_tokens(self, column: str, counts: Iterable[tuple[int, int]]) -> None:
        """Take (unknown tokens, tokens) per row of a text column, from the model's preprocessing."""
        tracker = self.columns.get(column)
        if not isinstance(tracker, TextDrift):
            return
        with self.lock:
            for unknown, tokens in counts:
                tracker.add_tokens(int(unknown), int(tokens))

    def figures(self) -> dict[str, dict[str, Any]]:
        """Column -> its figures (`kind` says which: number, category or text)."""
        with self.lock:
            return {column: {"kind": t.kind, **t.figures()} for column, t in self.columns.items()}
