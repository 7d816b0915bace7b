"""kit's built-in input kinds: one text, a pair of texts, words with one label each, a table row, an image.

Each is an ordinary `kit.InputKind` registered through `register_input_kinds`;
a plugin adds its own kind the same way.
"""

from __future__ import annotations

from typing import Any

import kit
from kit.data import CategoryField, ImageField, NumberField, Source, TextField, WordsField, tabular_fields


def text_columns(config: Any) -> list[str]:
    """`data.text_column` as a list (one name, or the two of a pair)."""
    column = config.data.text_column
    return [column] if isinstance(column, str) else list(column)


class Text(kit.InputKind):
    name = "text"
    description = "One text per example (data.text_column)."
    default_backbone = "bert-tiny"

    def columns(self) -> list[str]:
        columns = text_columns(self.config)
        if len(columns) != 1:
            raise kit.ConfigError(
                f"data.text_column names {len(columns)} columns ({', '.join(columns)}); one text per example needs "
                f"one. For a pair of texts set data.inputs: text_pair (or leave it auto)."
            )
        return columns

    def setting(self, column: str) -> str:
        return "data.text_column"

    def make_fields(self, source: Source) -> list[Any]:
        return [TextField(column) for column in self.columns()]

    @classmethod
    def detect(cls, config: Any, columns: list[str], source_hint: str | None) -> bool:
        wanted = text_columns(config)
        return len(wanted) == 1 and wanted[0] in columns


class TextPair(Text):
    name = "text_pair"
    description = "Two texts per example (data.text_column: [first, second]): paraphrase, entailment, similarity."
    default_backbone = "bert-tiny"

    def columns(self) -> list[str]:
        columns = text_columns(self.config)
        if len(columns) != 2 or columns[0] == columns[1]:
            raise kit.ConfigError(
                f"A pair of texts needs data.text_column to name two different columns, e.g. "
                f"[premise, hypothesis]; got {self.config.data.text_column!r}."
            )
        return columns

    @classmethod
    def detect(cls, config: Any, columns: list[str], source_hint: str | None) -> bool:
        wanted = text_columns(config)
        return len(wanted) == 2 and all(column in columns for column in wanted)


class Tokens(kit.InputKind):
    name = "tokens"
    description = "Words with one label each (data.tokens_column: a list of words per row, or a text split at spaces)."
    default_backbone = "bert-tiny"
    per_example = False  # one vector per word

    def columns(self) -> list[str]:
        return [self.config.data.tokens_column]

    def setting(self, column: str) -> str:
        return "data.tokens_column"

    def make_fields(self, source: Source) -> list[Any]:
        return [WordsField(self.config.data.tokens_column, self.config.model.sequence_length)]

    @classmethod
    def detect(cls, config: Any, columns: list[str], source_hint: str | None) -> bool:
        return config.data.tokens_column in columns


TYPES = {NumberField: "number", CategoryField: "category"}  # how a tabular column's type is saved


class Tabular(kit.InputKind):
    name = "tabular"
    description = "A table row: numeric columns (normalised) and text categories (data.features, data.categorical)."
    default_backbone = "mlp"
    fallback = True  # what data is when no other kind recognises it

    def columns(self) -> list[str]:
        return [f.column for f in self.fields] or list(self.config.data.features or [])

    def setting(self, column: str) -> str:
        return "data.features"

    def make_fields(self, source: Source) -> list[Any]:
        data, columns = self.config.data, source.columns()
        wanted = data.features or [c for c in columns if c not in self.target_columns]
        missing = [c for c in wanted if c not in columns]
        if missing:
            raise kit.DataError(
                f"data.features names {', '.join(missing)}, not in the data. Columns are: {', '.join(columns)}."
            )
        if not wanted:
            raise kit.DataError("No feature columns left: every column is a target. Add feature columns to the data.")
        # Typed from every row: one stray word in a numeric column is a malformed row, not 450 categories.
        return tabular_fields((row.values for row in source.rows()), wanted, data.categorical or [])

    def save(self) -> dict[str, Any]:
        return {"columns": [{"name": f.column, "type": TYPES[type(f)]} for f in self.fields]}

    def load(self, state: dict[str, Any], target_columns: list[str]) -> list[Any]:
        self.target_columns = list(target_columns)
        by_name = {name: cls for cls, name in TYPES.items()}
        self.fields = [by_name[c["type"]](c["name"]) for c in state["columns"]]
        return self.fields


class Image(kit.InputKind):
    name = "image"
    description = "One image per example: a file path or an array of pixels (data.image_column)."
    default_backbone = "cnn"

    def columns(self) -> list[str]:
        return [self.config.data.image_column]

    def setting(self, column: str) -> str:
        return "data.image_column"

    def make_fields(self, source: Source) -> list[Any]:
        return [ImageField(self.config.data.image_column)]

    @classmethod
    def detect(cls, config: Any, columns: list[str], source_hint: str | None) -> bool:
        return source_hint == "image" or config.data.image_column in columns


@kit.hookimpl
def register_input_kinds(register: Any) -> None:
    for kind in (Text, TextPair, Tokens, Tabular, Image):
        register(kind)
