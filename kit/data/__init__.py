"""Reading, validating and splitting examples (no TensorFlow at import time).

Public API for plugins: `Source`, `Row` (new data sources), `Field` and its
subclasses (task targets), `BadValue` (malformed values).
"""

from kit.data.fields import BadValue, CategoryField, Field, ImageField, LabelField, NumberField, TextField
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
    "TextField",
]
