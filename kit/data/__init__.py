"""Reading, validating and splitting examples (no TensorFlow at import time).

Public API for plugins: `Source`, `Row` (new data sources), `Field` and its
subclasses (features and targets: numbers, categories, labels, texts, images,
words and one tag per word), `tabular_fields` (typing table columns from their
rows), `BadValue` (malformed values).
"""

from kit.data.columns import tabular_fields
from kit.data.fields import BadValue, CategoryField, Field, ImageField, LabelField, NumberField, TextField
from kit.data.sequences import TagsField, WordsField
from kit.data.sources import CsvSource, FolderSource, JsonlSource, Row, Source

__all__ = [
    "BadValue",
    "CategoryField",
    "CsvSource",
    "Field",
    "FolderSource",
    "ImageField",
    "JsonlSource",
    "LabelField",
    "NumberField",
    "Row",
    "Source",
    "TagsField",
    "TextField",
    "WordsField",
    "tabular_fields",
]
