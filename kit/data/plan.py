"""Splits, the validating scan, and per-split row iteration.

`DataPlan` knows which source feeds each split. When `data.validation` or
`data.test` is unset, those rows are split off the training source by a
seeded hash of each row's position: streaming, deterministic, and stable when
rows are appended. `scan()` reads every split once before training, so a
malformed row stops the run at once (with its line) instead of mid-epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from kit.data.fields import BadValue, Field, ImageField
from kit.data.sources import BadJson, RaggedRow, Row, Source, open_source
from kit.errors import DataError

SPLITS = ("train", "validation", "test")
_MASK = (1 << 64) - 1


def split_point(seed: int, position: int) -> float:
    """A uniform number in [0, 1) from (seed, position): splitmix64."""
    z = (seed * 0x9E3779B97F4A7C15 + (position + 1) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return (z ^ (z >> 31)) / float(1 << 64)


@dataclass
class SplitReport:
    """What the scan found in one split."""

    rows: int = 0
    bad: int = 0
    examples: list[str] = field(default_factory=list)  # the first few problems, with their place

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "bad_rows": self.bad, "first_problems": self.examples}


class DataPlan:
    """The sources of each split, and how rows are assigned to splits."""

    def __init__(self, data_config: Any, project_dir: Path, seed: int, schemes: dict[str, Callable[..., Source]]):
        self.config = data_config
        self.seed = seed
        self.sources: dict[str, Source] = {
            "train": open_source(data_config.train, data_config, project_dir, "train", schemes)
        }
        self.shared: dict[str, float] = {}  # split -> fraction taken off the training source
        for split, spec, fraction in (
            ("validation", data_config.validation, data_config.validation_fraction),
            ("test", data_config.test, data_config.test_fraction),
        ):
            if spec:
                self.sources[split] = open_source(spec, data_config, project_dir, split, schemes)
            elif fraction > 0:
                self.shared[split] = fraction
        if sum(self.shared.values()) >= 1:
            raise DataError(
                "data.validation_fraction + data.test_fraction must be below 1 (nothing would be left to train on)."
            )

    def splits(self) -> list[str]:
        return [s for s in SPLITS if s == "train" or s in self.sources or s in self.shared]

    def source(self, split: str) -> Source:
        return self.sources.get(split, self.sources["train"])

    def rows(self, split: str) -> Iterator[Row]:
        """The raw rows of one split, in file order."""
        if split in self.sources and split != "train":
            yield from self.sources[split].rows()
            return
        test_cut = self.shared.get("test", 0.0)
        validation_cut = test_cut + self.shared.get("validation", 0.0)
        for position, row in enumerate(self.sources["train"].rows()):
            if validation_cut:
                point = split_point(self.seed, position)
                assigned = "test" if point < test_cut else "validation" if point < validation_cut else "train"
            else:
                assigned = "train"
            if assigned == split:
                yield row

    def fingerprint(self) -> dict[str, str]:
        return {split: source.fingerprint() for split, source in self.sources.items()}


def parse_row(row: Row, fields: list[Field]) -> list[Any]:
    """Parse one row with every field; raise BadValue naming the column."""
    values = row.values
    if isinstance(values, BadJson):
        raise BadValue(values.reason)
    if isinstance(values, RaggedRow):
        raise BadValue(f"expected {values.expected} fields, got {values.got}")
    parsed = []
    for f in fields:
        if f.column not in values:
            raise BadValue(f"missing column '{f.column}'")
        try:
            parsed.append(f.parse(values[f.column]))
        except BadValue as exc:
            raise BadValue(f"column '{f.column}': {exc}") from None
    return parsed


def check_value(f: Field, value: Any) -> None:
    try:
        f.check(value)
    except BadValue as exc:
        raise BadValue(f"column '{f.column}': {exc}") from None


def check_columns(source: Source, fields: list[Field], setting: Callable[[str], str]) -> None:
    """Fail early, and clearly, when a needed column is absent from a source."""
    columns = source.columns()
    for f in fields:
        if f.column not in columns:
            raise DataError(
                f"Column '{f.column}' ({setting(f.column)}) is not in {source.name}. "
                f"Its columns are: {', '.join(columns)}."
            )


def scan(plan: DataPlan, fields: list[Field], policy: str, learn: bool = True) -> dict[str, SplitReport]:
    """Validate every row of every split; learn field statistics from training rows.

    With policy "fail", the first malformed row raises `DataError` quoting its
    place; with "skip", malformed rows are counted and left out. With
    `learn=False` (evaluating a trained model) every split is only checked.
    """
    reports = {}
    for split in plan.splits():
        report = SplitReport()
        source = plan.source(split)
        learning = learn and split == "train"
        for row in plan.rows(split):
            try:
                values = parse_row(row, fields)
                for f, value in zip(fields, values):
                    f.observe(value) if learning else check_value(f, value)
            except BadValue as exc:
                _bad_row(report, source, row, str(exc), policy)
                continue
            report.rows += 1
        if learning:
            for f in fields:
                f.finish()
        if split == "train":
            _remember_image_shape(plan, fields)
        reports[split] = report
    _require_rows(reports, plan)
    return reports


def _bad_row(report: SplitReport, source: Source, row: Row, reason: str, policy: str) -> None:
    place = source.where(row)
    if policy == "fail":
        raise DataError(f"{place}: {reason}. Fix that row, or set `data.bad_rows: skip` to leave malformed rows out.")
    report.bad += 1
    if len(report.examples) < 5:
        report.examples.append(f"{place}: {reason}")


def _remember_image_shape(plan: DataPlan, fields: list[Field]) -> None:
    for f in fields:
        if isinstance(f, ImageField):
            for row in plan.rows("train"):
                value = row.values.get(f.column)
                f.array_shape = getattr(value, "shape", None)  # None: the images are file paths
                break


def _require_rows(reports: dict[str, SplitReport], plan: DataPlan) -> None:
    train = reports["train"]
    if train.rows == 0:
        raise DataError(
            f"No usable training rows in {plan.sources['train'].name} "
            f"({train.bad} malformed). " + (train.examples[0] if train.examples else "The source is empty.")
        )


def report_text(reports: dict[str, SplitReport]) -> str:
    """One line per split, for the console and run.json."""
    lines = []
    for split, report in reports.items():
        line = f"{split}: {report.rows} rows"
        if report.bad:
            line += f", {report.bad} malformed rows skipped (first: {report.examples[0]})"
        lines.append(line)
    return "\n".join(lines)
