"""Splits, the validating scan, and per-split row iteration.

`DataPlan` knows which source feeds each split. When `data.validation` or
`data.test` is unset, those rows are split off the training source by a
seeded hash of each row's position: streaming, deterministic, and stable when
rows are appended. `scan()` reads every split once before training, so a
malformed row stops the run at once (with its line) instead of mid-epoch.
"""

from __future__ import annotations

import os
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
    notes: list[str] = field(default_factory=list)  # remarks a user should see (look-alike labels, files left out)

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "bad_rows": self.bad, "first_problems": self.examples, "notes": self.notes}


class DataPlan:
    """The sources of each split, and how rows are assigned to splits."""

    def __init__(
        self,
        data_config: Any,
        project_dir: Path,
        seed: int,
        schemes: dict[str, Callable[..., Source]],
        train_described: str = "data.train",
    ):
        """`train_described` is what messages call the training source (`kit predict`: "The input")."""
        self.config = data_config
        self.seed = seed
        self.described = {"train": train_described, "validation": "data.validation", "test": "data.test"}
        self.sources: dict[str, Source] = {
            "train": open_source(data_config.train, data_config, project_dir, "train", schemes, train_described)
        }
        self.shared: dict[str, float] = {}  # split -> fraction taken off the training source
        for split, spec, fraction in (
            ("validation", data_config.validation, data_config.validation_fraction),
            ("test", data_config.test, data_config.test_fraction),
        ):
            if spec:
                self.sources[split] = open_source(spec, data_config, project_dir, split, schemes)
                _refuse_leak(self.sources["train"], self.sources[split], split)
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


def _refuse_leak(train: Source, other: Source, split: str) -> None:
    """Scoring a model on the rows it trained on says nothing: refuse it rather than report perfect metrics."""
    if not _same_data(train, other):
        return
    raise DataError(
        f"data.{split} is the training data itself ({other.name}): {split} metrics would score examples the model "
        f"trained on. Remove data.{split} to split {split} rows off the training data (data.{split}_fraction), "
        f"or point it at held-out examples."
    )


def _same_data(one: Source, other: Source) -> bool:
    first, second = getattr(one, "path", None), getattr(other, "path", None)
    if first is not None and second is not None:
        try:
            return os.path.samefile(first, second)
        except OSError:
            return False
    return one.name == other.name


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
        raw = values[f.column]
        if isinstance(f, ImageField) and row.folder:
            raw = f.locate(raw, row.folder)
        try:
            parsed.append(f.parse(raw))
        except BadValue as exc:
            if _repeats_header(values):
                raise BadValue("the header line again (were files joined?); remove it") from None
            raise BadValue(f"column '{f.column}': {exc}") from None
    return parsed


def _repeats_header(values: dict[str, Any]) -> bool:
    return len(values) > 1 and all(isinstance(v, str) and v.strip() == k for k, v in values.items())


def check_value(f: Field, value: Any, learning: bool = False) -> None:
    """`f.check` a value (or, from training rows, `f.observe` it); a BadValue names the column."""
    try:
        f.observe(value) if learning else f.check(value)
    except BadValue as exc:
        raise BadValue(f"column '{f.column}': {exc}") from None


def check_columns(source: Source, fields: list[Field], setting: Callable[[str], str]) -> None:
    """Fail early, and clearly, when a needed column is absent from a source."""
    columns = source.columns()
    for f in fields:
        if f.column not in columns:
            raise DataError(
                f"Column '{f.column}' ({setting(f.column)}) is not in {source.name}. "
                f"Its columns are: {', '.join(columns)}.{source.hint()}"
            )


def scan(
    plan: DataPlan,
    fields: list[Field],
    policy: str,
    learn: bool = True,
    check: Callable[[list[Any]], None] | None = None,
) -> dict[str, SplitReport]:
    """Validate every row of every split; learn field statistics from training rows.

    With policy "fail", the first malformed row raises `DataError` quoting its
    place; with "skip", malformed rows are counted and left out. With
    `learn=False` (evaluating a trained model) every split is only checked.
    Image files are decoded as the pipeline will decode them. `check`, given a
    row's parsed values, may raise `BadValue` about the row as a whole (the task's
    `check_example`: one tag per word).
    """
    _prepare_images(plan, fields)
    reports = {}
    for split in plan.splits():
        if split in plan.sources and split != "train":
            _require_columns(plan, split, fields)
        reports[split] = _scan_split(plan, split, fields, policy, learn and split == "train", check)
        if split == "train" and learn:
            _require_rows({"train": reports["train"]}, plan)  # nothing learned: the other splits cannot be checked
    _require_rows(reports, plan)
    return reports


def _scan_split(
    plan: DataPlan, split: str, fields: list[Field], policy: str, learning: bool, check: Callable[..., None] | None
) -> SplitReport:
    report = SplitReport()
    source = plan.source(split)
    for row in plan.rows(split):
        try:
            values = parse_row(row, fields)
            if check is not None:
                check(values)
            for f, value in zip(fields, values):
                check_value(f, value, learning)
        except BadValue as exc:
            _bad_row(report, source, row, str(exc), policy)
            continue
        report.rows += 1
    if learning and report.rows:
        _finish(fields, source)
        report.notes += [note for f in fields for note in f.notes()]
    if split == "train":
        _remember_image_shape(fields)
    if split in plan.sources:  # what the source itself found (files left out); once, with its own split
        report.notes += source.notes
    return report


def _finish(fields: list[Field], source: Source) -> None:
    for f in fields:
        try:
            f.finish()
        except DataError as exc:
            raise DataError(f"{source.name}: {exc}") from None


def _require_columns(plan: DataPlan, split: str, fields: list[Field]) -> None:
    """Validation and test files need the training columns: say so once, not on every row."""
    source = plan.sources[split]
    columns = source.columns()
    missing = [f.column for f in fields if f.column not in columns]
    if missing:
        raise DataError(
            f"{plan.described[split]} {source.name} has no column '{missing[0]}', which the model uses. "
            f"Its columns are: {', '.join(columns)}. Give it the same columns as the training data."
        )


def _bad_row(report: SplitReport, source: Source, row: Row, reason: str, policy: str) -> None:
    place = source.where(row)
    reason = reason.rstrip(".")
    if policy == "fail":
        raise DataError(f"{place}: {reason}. Fix that row, or set `data.bad_rows: skip` to leave malformed rows out.")
    report.bad += 1
    if len(report.examples) < 5:
        report.examples.append(f"{place}: {reason}")


def _prepare_images(plan: DataPlan, fields: list[Field]) -> None:
    """Image files are checked by decoding them to the channels the pipeline will ask for."""
    for f in fields:
        if isinstance(f, ImageField) and f.channels is None:
            f.channels = 1 if getattr(plan.config, "color_mode", "rgb") == "grayscale" else 3


def _remember_image_shape(fields: list[Field]) -> None:
    for f in fields:
        if isinstance(f, ImageField):
            f.array_shape = f.first_shape  # None: the images are file paths


def _require_rows(reports: dict[str, SplitReport], plan: DataPlan) -> None:
    train = reports["train"]
    if train.rows == 0:
        what = "training rows" if plan.described["train"] == "data.train" else "rows"
        raise DataError(
            f"No usable {what} in {plan.sources['train'].name} "
            f"({train.bad} malformed). " + (train.examples[0] if train.examples else "The source is empty.")
        )
    for split, report in reports.items():
        if split != "train" and report.rows == 0:
            read = sum(reports[s].rows + reports[s].bad for s in ("train", *plan.shared))
            raise DataError(_empty_split(plan, split, report, read))


def _empty_split(plan: DataPlan, split: str, report: SplitReport, read: int) -> str:
    """A split with no rows would train and report without its metrics, without a word: say why instead."""
    if split in plan.sources:
        return f"No usable rows in {plan.described[split]} {plan.sources[split].name} ({report.bad} malformed). " + (
            report.examples[0] if report.examples else f"Put {split} examples there, or remove data.{split}."
        )
    fraction = plan.shared[split]
    return (
        f"The {split} split is empty: data.{split}_fraction is {fraction} but none of the rows read "
        f"from {plan.sources['train'].name} ({read:,}) fell into it (each row goes to a split by a seeded hash; a corpus "
        f"gives one row per passage of about 4,000 characters). Add data, set data.{split} to a file of {split} "
        f"examples, or set data.{split}_fraction: 0 to go without {split} metrics."
    )


def report_text(reports: dict[str, SplitReport]) -> str:
    """One line per split, for the console and run.json."""
    lines = []
    for split, report in reports.items():
        line = f"{split}: {report.rows} rows"
        if report.bad:
            line += f", {report.bad} malformed rows skipped (first: {report.examples[0]})"
        lines.append(line)
        lines += [f"  note: {note}" for note in report.notes]
    return "\n".join(lines)
