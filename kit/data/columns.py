"""Typing tabular columns as numbers or categories, from every training row.

A column is numeric when at least `NUMERIC_SHARE` of its non-empty values
are numbers: the few others are then malformed rows, reported by the scan
with their lines (`data.bad_rows: skip` leaves them out), rather than
turning every number into a category. A column with more non-numbers is
categorical, and the scan says so when most of it was numbers.
`data.categorical` forces categories. Typing reads the whole file, not a
sample: one text value at row 5 and at row 5,000 give the same model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from kit.data.fields import CategoryField, Field, NumberField

NUMERIC_SHARE = 0.95


@dataclass
class ColumnCount:
    """How many of a column's non-empty values are numbers, and the first one that is not."""

    numbers: int = 0
    others: int = 0
    example: Any = None

    def add(self, value: Any) -> None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return  # missing: neither kind (a malformed row either way)
        if _is_number(value):
            self.numbers += 1
            return
        self.others += 1
        if self.example is None:
            self.example = value

    @property
    def numeric(self) -> bool:
        return self.numbers > 0 and self.others <= (1 - NUMERIC_SHARE) * (self.numbers + self.others)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def count_columns(rows: Iterable[dict[str, Any]], columns: list[str]) -> dict[str, ColumnCount]:
    """Count number and non-number values of each column over all `rows` (one pass)."""
    counts = {column: ColumnCount() for column in columns}
    for values in rows:
        for column, count in counts.items():
            count.add(values.get(column))
    return counts


def tabular_fields(rows: Iterable[dict[str, Any]], columns: list[str], categorical: Iterable[str] = ()) -> list[Field]:
    """A `NumberField` or `CategoryField` for each column, typed from every row in `rows`."""
    forced = set(categorical)
    counts = count_columns(rows, [c for c in columns if c not in forced])
    fields: list[Field] = []
    for column in columns:
        count = counts.get(column)
        if count is not None and count.numeric:
            fields.append(NumberField(column))
            continue
        field = CategoryField(column)
        if count is not None and count.numbers > count.others:
            field.typing_note = _categories_note(column, count)
        fields.append(field)
    return fields


def _categories_note(column: str, count: ColumnCount) -> str:
    total = count.numbers + count.others
    return (
        f"column '{column}' is read as categories: {count.others:,} of its {total:,} values are not numbers "
        f"(e.g. {str(count.example)[:40]!r}); a numeric column may hold at most {1 - NUMERIC_SHARE:.0%} of those"
    )
