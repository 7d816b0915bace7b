"""Data sources: streaming readers that yield rows with their line numbers.

Every source yields `Row(line, values)`; `line` is what error messages quote
(the CSV/JSONL line where the row starts, or the file for folder sources).
Readers stream: nothing loads a whole file into memory.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from kit.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp"}
TEXT_SUFFIXES = {".txt", ".md", ".text", ""}


@dataclass
class Row:
    """One example as read: its raw values keyed by column, and where it came from."""

    line: int
    values: dict[str, Any]
    origin: str | None = None  # file name for folder sources


class Source:
    """Base class for data sources. Subclasses implement `rows()`.

    Attributes:
        name: how messages refer to the source (a path, `tfds:mnist`...).
        kind_hint: "text" or "image" when the source itself says what it holds.
        default_split: for sources with named splits (tfds, keras).
    """

    name: str = ""
    kind_hint: str | None = None

    def rows(self) -> Iterator[Row]:
        raise NotImplementedError

    def columns(self) -> list[str]:
        """Column names, read from the header or the first row."""
        for row in self.rows():
            return list(row.values)
        raise DataError(f"{self.name} holds no rows. Point the data section at a file with examples.")

    def where(self, row: Row) -> str:
        """Where a row came from, for messages: `file.csv, line 7` or the example's file."""
        return row.origin if row.origin else f"{self.name}, line {row.line}"

    def fingerprint(self) -> str:
        """A hash that changes when the data changes (recorded in run.json)."""
        import hashlib  # lazily: 3 ms that light commands need not pay

        return hashlib.sha256(self.name.encode()).hexdigest()[:16]


def _file_fingerprint(paths: list[Path]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.name).encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def _open_text(path: Path, encoding: str):
    try:
        return open(path, encoding=encoding, newline="")
    except FileNotFoundError:
        raise DataError(
            f"Data file {path} does not exist. Check `data.*` paths in kit.yaml (relative to the project)."
        ) from None
    except IsADirectoryError:
        raise DataError(
            f"{path} is a folder; set data.format to text_folder or image_folder, or name a file."
        ) from None
    except LookupError:
        raise DataError(f"Unknown text encoding '{encoding}' (data.encoding). Use e.g. utf-8 or latin-1.") from None
    except OSError as exc:
        raise DataError(f"Cannot read {path}: {exc.strerror}.") from None


def _decode_error(path: Path, line: int, encoding: str, exc: UnicodeDecodeError) -> DataError:
    """Text files are decoded in chunks, so the reader's line is only near the bad bytes: find the real one."""
    exact = _first_undecodable_line(path, encoding)
    where = f"line {exact}" if exact else f"near line {line}"
    return DataError(
        f"{path}, {where}: bytes are not valid {encoding} ({exc.reason}). "
        f"Set data.encoding to the file's encoding (e.g. latin-1) or re-save it as UTF-8."
    )


def _first_undecodable_line(path: Path, encoding: str) -> int | None:
    try:
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    raw.decode(encoding)
                except UnicodeDecodeError:
                    return number
    except (OSError, LookupError):
        return None
    return None


class CsvSource(Source):
    """A CSV file with a header row."""

    def __init__(self, path: Path, delimiter: str = ",", encoding: str = "utf-8"):
        self.path = Path(path)
        self.name = str(self.path)
        self.delimiter = delimiter
        self.encoding = encoding

    def columns(self) -> list[str]:
        with _open_text(self.path, self.encoding) as handle:
            try:
                header = next(csv.reader(handle, delimiter=self.delimiter), None)
            except UnicodeDecodeError as exc:
                raise _decode_error(self.path, 1, self.encoding, exc) from None
        if not header or not any(h.strip() for h in header):
            raise DataError(f"{self.path} is empty: expected a header line naming the columns (e.g. text,label).")
        return [h.strip() for h in header]

    def rows(self) -> Iterator[Row]:
        header = self.columns()
        with _open_text(self.path, self.encoding) as handle:
            reader = csv.reader(handle, delimiter=self.delimiter)
            line = 1
            try:
                next(reader)
                start = reader.line_num + 1
                for record in reader:
                    line = start
                    start = reader.line_num + 1
                    if not record or (len(record) == 1 and not record[0].strip()):
                        continue  # blank line
                    yield Row(line, _zip_record(header, record))
            except UnicodeDecodeError as exc:
                raise _decode_error(self.path, line + 1, self.encoding, exc) from None
            except csv.Error as exc:
                raise DataError(
                    f"{self.path}, line {reader.line_num}: malformed CSV ({exc}). Fix the quoting on that line."
                ) from None

    def fingerprint(self) -> str:
        return _file_fingerprint([self.path])


class RaggedRow(dict):
    """Values of a CSV row whose field count differs from the header."""

    def __init__(self, values: dict[str, Any], expected: int, got: int):
        super().__init__(values)
        self.expected = expected
        self.got = got


def _zip_record(header: list[str], record: list[str]) -> dict[str, Any]:
    values = dict(zip(header, record))
    if len(record) != len(header):
        return RaggedRow(values, len(header), len(record))
    return values


class JsonlSource(Source):
    """A file with one JSON object per line."""

    def __init__(self, path: Path, encoding: str = "utf-8"):
        self.path = Path(path)
        self.name = str(self.path)
        self.encoding = encoding

    def rows(self) -> Iterator[Row]:
        with _open_text(self.path, self.encoding) as handle:
            number = 0
            try:
                for number, text in enumerate(handle, start=1):
                    if not text.strip():
                        continue
                    yield Row(number, _parse_json_object(text))
            except UnicodeDecodeError as exc:
                raise _decode_error(self.path, number + 1, self.encoding, exc) from None

    def fingerprint(self) -> str:
        return _file_fingerprint([self.path])


class BadJson(dict):
    """Stands for a JSONL line that is not a JSON object; the scan reports it."""

    def __init__(self, reason: str):
        super().__init__()
        self.reason = reason


def _parse_json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return BadJson(f"invalid JSON ({exc.msg} at column {exc.colno})")
    if not isinstance(value, dict):
        return BadJson(f"expected a JSON object, got {type(value).__name__}")
    return value


class FolderSource(Source):
    """A folder with one sub-folder per label, holding one file per example."""

    def __init__(self, root: Path, kind: str, value_column: str, encoding: str = "utf-8"):
        self.root = Path(root)
        self.name = str(self.root)
        self.kind_hint = kind
        self.value_column = value_column
        self.encoding = encoding

    def files(self) -> list[tuple[str, Path]]:
        if not self.root.is_dir():
            raise DataError(f"Data folder {self.root} does not exist. Check the data paths in kit.yaml.")
        suffixes = IMAGE_SUFFIXES if self.kind_hint == "image" else TEXT_SUFFIXES
        found = []
        for label_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for path in sorted(label_dir.rglob("*")):
                if path.is_file() and path.suffix.lower() in suffixes and not path.name.startswith("."):
                    found.append((label_dir.name, path))
        if not found:
            if self.kind_hint == "image":
                raise DataError(
                    f"{self.root} holds no image files in label sub-folders. Expected {self.root}/LABEL/FILE "
                    f"(e.g. {self.root}/cat/001.png)."
                )
            raise DataError(
                f"{self.root} holds no text files. Expected label sub-folders {self.root}/LABEL/FILE.txt "
                f"(e.g. {self.root}/positive/review1.txt), or for a text corpus .txt/.md files directly inside."
            )
        return found

    def columns(self) -> list[str]:
        return [self.value_column, "label"]

    def rows(self) -> Iterator[Row]:
        for number, (label, path) in enumerate(self.files(), start=1):
            if self.kind_hint == "image":
                value: Any = str(path)
            else:
                value = self._read_text(path)
            yield Row(number, {self.value_column: value, "label": label}, origin=str(path))

    def _read_text(self, path: Path) -> Any:
        try:
            return path.read_text(encoding=self.encoding)
        except UnicodeDecodeError as exc:
            return BadJson(f"not valid {self.encoding} ({exc.reason}); set data.encoding")

    def fingerprint(self) -> str:
        import hashlib

        digest = hashlib.sha256()
        for label, path in self.files():
            stat = path.stat()
            digest.update(f"{label}/{path.name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
        return digest.hexdigest()[:16]


class CorpusSource(Source):
    """Plain text for language modelling: one `.txt`/`.md` file, or a folder of them (searched recursively).

    Files are read in passages of whole paragraphs (about `PASSAGE_CHARS`
    characters each), one row per passage, so the validation and test splits
    hold passages from every file, and error messages name file and line.
    """

    kind_hint = "text"
    PASSAGE_CHARS = 4000

    def __init__(self, path: Path, value_column: str, encoding: str = "utf-8", unwrap_lines: bool = False):
        self.path = Path(path)
        self.name = str(self.path)
        self.value_column = value_column
        self.encoding = encoding
        self.unwrap_lines = unwrap_lines

    def files(self) -> list[Path]:
        if self.path.is_file():
            return [self.path]
        found = sorted(
            p
            for p in self.path.rglob("*")
            if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES - {""} and not p.name.startswith(".")
        )
        if not found:
            raise DataError(f"{self.path} holds no .txt or .md files. Put the training text there, one or more files.")
        return found

    def columns(self) -> list[str]:
        return [self.value_column]

    def rows(self) -> Iterator[Row]:
        for path in self.files():
            for line, passage in self._passages(path):
                if self.unwrap_lines:  # hard-wrapped prose: a lone line break is just a space
                    passage = re.sub(r"(?<=\S)[ \t]*\n(?=[ \t]*\S)", " ", passage)
                yield Row(line, {self.value_column: passage}, origin=f"{path}, line {line}")

    def _passages(self, path: Path) -> Iterator[tuple[int, str]]:
        """(first line, text) of consecutive paragraph groups; blank lines kept inside."""
        lines: list[str] = []
        size, start, number = 0, 1, 0
        with _open_text(path, self.encoding) as handle:
            try:
                for number, line in enumerate(handle, start=1):
                    if not lines:
                        start = number
                    lines.append(line)
                    size += len(line)
                    if size >= self.PASSAGE_CHARS and not line.strip():
                        yield start, "".join(lines)
                        lines, size = [], 0
            except UnicodeDecodeError as exc:
                raise _decode_error(path, number + 1, self.encoding, exc) from None
        if "".join(lines).strip():
            yield start, "".join(lines)

    def fingerprint(self) -> str:
        return _file_fingerprint(self.files())


def detect_format(path: Path) -> str:
    """Guess the source format of a path from its extension or contents."""
    if path.is_dir():
        for child in path.iterdir():
            if child.is_dir():
                for item in child.iterdir():
                    if item.suffix.lower() in IMAGE_SUFFIXES:
                        return "image_folder"
        if any(child.is_file() and child.suffix.lower() in (".txt", ".md") for child in path.iterdir()):
            return "corpus"  # text files directly inside: a corpus, not label sub-folders
        return "text_folder"
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix in (".txt", ".md", ".text"):
        return "corpus"
    if suffix in (".csv", ".tsv"):
        return "csv"
    if not path.exists():
        raise DataError(f"Data file {path} does not exist. Check the data paths in kit.yaml (relative to the project).")
    raise DataError(
        f"Cannot tell the format of {path}. Set data.format to csv, jsonl, corpus, text_folder or image_folder."
    )


Opener = Callable[[str, Any, Path], Source]


def open_source(spec: str, data_config: Any, project_dir: Path, role: str, schemes: dict[str, Opener]) -> Source:
    """Open the source named by a `data.*` value.

    Args:
        spec: a path, or `SCHEME:REST` for registered schemes (tfds, keras, plugins).
        data_config: the `data` section (delimiter, encoding, format...).
        project_dir: relative paths are resolved against it.
        role: "train", "validation" or "test" (default split for named-split sources).
        schemes: scheme -> opener, from the plugin registry.
    """
    from kit.config import is_scheme

    if is_scheme(spec):
        scheme, _, rest = spec.partition(":")
        if scheme not in schemes:
            known = ", ".join(sorted(schemes)) or "none"
            raise DataError(f"Unknown data source scheme '{scheme}:' in '{spec}'. Known schemes: {known}.")
        return schemes[scheme](rest, data_config, project_dir, role)
    path = Path(os.path.expanduser(spec))
    path = path if path.is_absolute() else project_dir / path
    if not path.exists():
        raise DataError(
            f"Data {role} source {path} does not exist. Check the data paths in kit.yaml (relative to the project folder)."
        )
    fmt = data_config.format if data_config.format != "auto" else detect_format(path)
    if fmt == "csv":
        delimiter = "\t" if path.suffix.lower() == ".tsv" and data_config.delimiter == "," else data_config.delimiter
        return CsvSource(path, delimiter, data_config.encoding)
    if fmt == "jsonl":
        return JsonlSource(path, data_config.encoding)
    if fmt == "corpus":
        return CorpusSource(path, data_config.text_column, data_config.encoding, data_config.unwrap_lines)
    if fmt == "text_folder":
        return FolderSource(path, "text", data_config.text_column, data_config.encoding)
    return FolderSource(path, "image", data_config.image_column)
