"""Data sources: streaming readers that yield rows with their line numbers.

Every source yields `Row(line, values)`; `line` is what error messages quote
(the CSV/JSONL line where the row starts, or the file for folder sources).
Readers stream: nothing loads a whole file into memory.
"""

from __future__ import annotations

import codecs
import csv
import errno
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from kit.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp"}
TEXT_SUFFIXES = {".txt", ".md", ".text", ""}
# Formats people point kit at that it does not read, and what to do instead.
FOREIGN_SUFFIXES = {
    ".xlsx": "an Excel workbook: save it as CSV",
    ".xls": "an Excel workbook: save it as CSV",
    ".parquet": "a Parquet file: write it as CSV or JSONL (e.g. pandas' to_csv)",
    ".gz": "a compressed file: decompress it first",
    ".zip": "a zip archive: extract it first",
    ".bz2": "a compressed file: decompress it first",
    ".xz": "a compressed file: decompress it first",
    ".pdf": "a PDF: extract its text into a .txt file",
}


@dataclass
class Row:
    """One example as read: its raw values keyed by column, and where it came from.

    `folder` is where relative paths in the row (image files named in a CSV) start.
    """

    line: int
    values: dict[str, Any]
    origin: str | None = None  # file name for folder sources
    folder: str | None = None


class Source:
    """Base class for data sources. Subclasses implement `rows()`.

    Attributes:
        name: how messages refer to the source (a path, `tfds:mnist`...).
        kind_hint: "text" or "image" when the source itself says what it holds.
        notes: remarks found while reading (files left out...), shown with the scan's report.
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

    def hint(self) -> str:
        """Advice added when a column is not found (how this source names its columns)."""
        return ""

    def where(self, row: Row) -> str:
        """Where a row came from, for messages: `file.csv, line 7` or the example's file."""
        return row.origin if row.origin else f"{self.name}, line {row.line}"

    def fingerprint(self) -> str:
        """A hash that changes when the data changes (recorded in run.json)."""
        import hashlib  # lazily: 3 ms that light commands need not pay

        return hashlib.sha256(self.name.encode()).hexdigest()[:16]

    @property
    def notes(self) -> list[str]:
        return self.__dict__.setdefault("_notes", [])


def _file_fingerprint(paths: list[Path]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.name).encode())
        with _open_binary(path) as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------- paths


def path_problem(path: Path, described: str = "Data file") -> str | None:
    """Why `path` cannot be read as data (missing, a symlink loop, a FIFO...), or None.

    Checked before opening: opening a FIFO blocks forever, and `exists()` calls a symlink loop missing.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return _stat_problem(path, exc, described)
    except ValueError:  # a NUL character: no file system allows it
        return f"{described} {str(path)!r} contains a NUL character, which no file name can hold. Fix the path."
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return (
        f"{described} {path} is {kind}, not a file: kit reads its data more than once (a check, then every "
        f"epoch). Save the data to a regular file and point at that."
    )


def _stat_problem(path: Path, exc: OSError, described: str) -> str:
    if exc.errno == errno.ELOOP:
        return f"{described} {path} is a symbolic link loop (it leads back to itself). Point it at the real file."
    if exc.errno == errno.ENOENT and os.path.islink(path):
        return f"{described} {path} is a symbolic link to {os.readlink(path)}, which does not exist. Fix or remove the link."
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return f"{described} {path} does not exist."
    if exc.errno == errno.ENAMETOOLONG:
        return f"{described} {str(path)[:80]}... is too long a name for the file system ({len(str(path))} characters)."
    if exc.errno == errno.EACCES:
        return (
            f"{described} {path} cannot be read: permission denied. Give yourself read access (chmod u+r) or copy it."
        )
    return f"{described} {path} cannot be read: {exc.strerror}."


def _require_file(path: Path) -> None:
    problem = path_problem(path)
    if problem:
        raise DataError(problem)
    if path.is_dir():
        raise DataError(f"{path} is a folder; set data.format to text_folder, image_folder or corpus, or name a file.")


def _text_encoding(encoding: str) -> str:
    """UTF-8 files saved by Excel and Notepad start with a byte-order mark: read it as such, not as a character."""
    try:
        codec = codecs.lookup(encoding)
    except LookupError:
        raise DataError(f"Unknown text encoding '{encoding}' (data.encoding). Use e.g. utf-8 or latin-1.") from None
    if not getattr(codec, "_is_text_encoding", True):  # rot13, base64: bytes to bytes
        raise DataError(f"'{encoding}' (data.encoding) is not a text encoding. Use e.g. utf-8 or latin-1.")
    return "utf-8-sig" if codec.name == "utf-8" else encoding


def _open_text(path: Path, encoding: str):
    _require_file(path)
    try:
        return open(path, encoding=_text_encoding(encoding), newline="")
    except OSError as exc:
        raise DataError(_stat_problem(path, exc, "Data file")) from None


def _open_binary(path: Path):
    _require_file(path)
    try:
        return open(path, "rb")
    except OSError as exc:
        raise DataError(_stat_problem(path, exc, "Data file")) from None


# ---------------------------------------------------------------- decoding


# The first bytes of files that are not text at all, whatever the encoding.
BINARY_STARTS = {
    b"\x1f\x8b": "gzip-compressed",
    b"PK\x03\x04": "a zip archive (or an Excel workbook)",
    b"%PDF": "a PDF",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"PAR1": "a Parquet file",
    b"SQLite format": "an SQLite database",
}


def _decode_error(path: Path, line: int, encoding: str, exc: UnicodeDecodeError) -> DataError:
    """Text files are decoded in chunks, so the reader's line is only near the bad bytes: find the real one."""
    binary = _binary_kind(path)
    if binary:
        return DataError(f"{path} is not text: it is {binary}. Point kit at the CSV, JSONL or text file itself.")
    exact = _first_undecodable_line(path, encoding)
    where = f"line {exact}" if exact else f"near line {line}"
    return DataError(
        f"{path}, {where}: bytes are not valid {encoding} ({exc.reason}). "
        f"Set data.encoding to the file's encoding ({_likely_encoding(path)}) or re-save it as UTF-8."
    )


def _head_bytes(path: Path, size: int = 16) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except OSError:
        return b""


def _binary_kind(path: Path) -> str | None:
    head = _head_bytes(path)
    return next((kind for start, kind in BINARY_STARTS.items() if head.startswith(start)), None)


def _likely_encoding(path: Path) -> str:
    """A guess from the file's first bytes: UTF-16 files (Excel's "Unicode text") start with a byte-order mark."""
    head = _head_bytes(path, 4)
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "it starts like utf-32"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "it starts like utf-16"
    return "e.g. latin-1 or cp1252"


def _first_undecodable_line(path: Path, encoding: str) -> int | None:
    try:
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    raw.decode(_text_encoding(encoding) if number == 1 else encoding)
                except UnicodeDecodeError:
                    return number
    except (OSError, LookupError, DataError):
        return None
    return None


# ---------------------------------------------------------------- CSV


class CsvSource(Source):
    """A CSV file with a header row naming every column once."""

    def __init__(self, path: Path, delimiter: str = ",", encoding: str = "utf-8"):
        self.path = Path(path)
        self.name = str(self.path)
        self.delimiter = _checked_delimiter(delimiter)
        self.encoding = encoding

    def columns(self) -> list[str]:
        with _open_text(self.path, self.encoding) as handle:
            try:
                header = next(csv.reader(handle, delimiter=self.delimiter), None)
            except UnicodeDecodeError as exc:
                raise _decode_error(self.path, 1, self.encoding, exc) from None
            except csv.Error as exc:
                raise self._csv_error(exc, 1, 1) from None
        if not header or not any(h.strip() for h in header):
            raise DataError(f"{self.path} is empty: expected a header line naming the columns (e.g. text,label).")
        return _checked_header(self.path, [h.strip() for h in header])

    def hint(self) -> str:
        columns = self.columns()
        if len(columns) != 1:
            return ""
        for other in (";", "\t", "|", ","):
            if other != self.delimiter and other in columns[0]:
                shown = "\\t" if other == "\t" else other
                return (
                    f" The header holds one column: are fields separated by '{shown}'? Set data.delimiter: \"{shown}\"."
                )
        return ""

    def rows(self) -> Iterator[Row]:
        header = self.columns()
        folder = str(self.path.parent)
        with _open_text(self.path, self.encoding) as handle:
            reader = csv.reader(handle, delimiter=self.delimiter)
            line = start = 1
            try:
                next(reader)
                start = reader.line_num + 1
                for record in reader:
                    line = start
                    start = reader.line_num + 1
                    if not record or (len(record) == 1 and not record[0].strip()):
                        continue  # blank line
                    yield Row(line, _zip_record(header, record), folder=folder)
            except UnicodeDecodeError as exc:
                raise _decode_error(self.path, line + 1, self.encoding, exc) from None
            except csv.Error as exc:
                raise self._csv_error(exc, start, reader.line_num) from None

    def _csv_error(self, exc: csv.Error, start: int, end: int) -> DataError:
        if "field larger than field limit" in str(exc):
            span = f" (it runs on to line {end})" if end > start else ""
            return DataError(
                f"{self.path}, line {start}: a field is longer than {csv.field_size_limit():,} characters{span}, "
                f'the most kit reads in one CSV field. Usually a quote (") opened there is never closed: close it, '
                f'and double any quote inside a quoted field (""). If the text really is that long, shorten it '
                f"(models read only the first model.sequence_length tokens) or use a JSONL file."
            )
        return DataError(f"{self.path}, line {end}: malformed CSV ({exc}). Fix the quoting on that line.")

    def fingerprint(self) -> str:
        return _file_fingerprint([self.path])


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _checked_delimiter(delimiter: str) -> str:
    if len(delimiter) == 1 and delimiter not in '"\r\n':
        return delimiter
    tab = ' (for a tab, write "\\t" in double quotes)' if delimiter == "\\t" else ""
    raise DataError(
        f"data.delimiter must be one character other than a quote or a line break, got {delimiter!r}{tab}. "
        f"Set it to the character between fields, e.g. ',' or ';'."
    )


def _checked_header(path: Path, names: list[str]) -> list[str]:
    """Every column needs a name, and one name per column: otherwise values would silently go astray."""
    if all(_is_number(name) for name in names):
        raise DataError(
            f"{path}, line 1: the first line holds numbers, not column names. Add a header line naming the "
            f"columns (e.g. x1,x2,y) above the data."
        )
    first: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        if not name:
            raise DataError(
                f"{path}, line 1 (the header): column {position} of {len(names)} has no name. Name every column "
                f"in the header line, or remove the extra delimiter (a trailing comma makes an empty column)."
            )
        if name in first:
            raise DataError(
                f"{path}, line 1 (the header): column '{name}' appears twice (columns {first[name]} and {position}), "
                f"so kit cannot tell which one to use. Rename or remove one of them."
            )
        first[name] = position
    return names


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


# ---------------------------------------------------------------- JSON lines


class JsonlSource(Source):
    """A file with one JSON object per line."""

    def __init__(self, path: Path, encoding: str = "utf-8"):
        self.path = Path(path)
        self.name = str(self.path)
        self.encoding = encoding

    def rows(self) -> Iterator[Row]:
        folder = str(self.path.parent)
        with _open_text(self.path, self.encoding) as handle:
            number = 0
            try:
                for number, text in enumerate(handle, start=1):
                    if not text.strip():
                        continue
                    yield Row(number, _parse_json_object(text), folder=folder)
            except UnicodeDecodeError as exc:
                raise _decode_error(self.path, number + 1, self.encoding, exc) from None

    def columns(self) -> list[str]:
        """The keys of the first object (among the first lines: one bad line is a malformed row, not the format)."""
        if self._head().startswith("["):
            raise DataError(f"{self.path} is not JSON lines (one JSON object per line). {self._looks_like()}")
        first = None
        for count, row in enumerate(self.rows()):
            if not isinstance(row.values, BadJson):
                return list(row.values)
            first = first or row
            if count >= 20:
                break
        if first is None:
            raise DataError(f"{self.path} holds no rows. Point the data section at a file with examples.")
        raise DataError(
            f"{self.path} does not look like JSON lines (one JSON object per line): line {first.line}: "
            f"{first.values.reason}. {self._looks_like()}"
        )

    def hint(self) -> str:
        return " A JSONL file's columns are the keys of its first object: give every object the same keys."

    def _head(self) -> str:
        with _open_text(self.path, self.encoding) as handle:
            try:
                return handle.read(4096).lstrip()
            except UnicodeDecodeError:
                return ""  # reported with its line when the rows are read

    def _looks_like(self) -> str:
        if self._head().startswith(("[", "{")):
            return (
                "It looks like one JSON document; write one object per line instead "
                "(e.g. `jq -c '.[]' data.json > data.jsonl`)."
            )
        return "If it is CSV, set data.format: csv (or leave data.format at auto for a .csv file)."

    def fingerprint(self) -> str:
        return _file_fingerprint([self.path])


class BadJson(dict):
    """Stands for a JSONL line that is not a JSON object; the scan reports it."""

    def __init__(self, reason: str):
        super().__init__()
        self.reason = reason


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object hook: a key given twice would otherwise silently keep its last value."""
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(key for key, _ in pairs if key in seen or seen.add(key)))
    return value


JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "true/false", type(None): "null"}


def json_type(value: Any) -> str:
    """What a JSON value is, in JSON's words (messages about JSONL rows)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "a number"
    return JSON_TYPES.get(type(value), type(value).__name__)


def _parse_json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        return BadJson(f"invalid JSON ({exc.msg} at column {exc.colno})")
    except _DuplicateKey as exc:
        return BadJson(f"key '{exc.args[0]}' appears twice in one object; keep one")
    except RecursionError:
        return BadJson("JSON nested too deeply to read")
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        return BadJson(f"unreadable JSON ({str(exc).split(';')[0]})")
    if not isinstance(value, dict):
        return BadJson(f"expected a JSON object, got {json_type(value)}")
    return value


# ---------------------------------------------------------------- folders


class FolderSource(Source):
    """A folder with one sub-folder per label, holding one file per example."""

    def __init__(self, root: Path, kind: str, value_column: str, encoding: str = "utf-8"):
        self.root = Path(root)
        self.name = str(self.root)
        self.kind_hint = kind
        self.value_column = value_column
        self.encoding = encoding
        self._files: list[tuple[str, Path]] | None = None

    def files(self) -> list[tuple[str, Path]]:
        """(label, file) of every example; listed once, so every pass sees the same files."""
        if self._files is None:
            self._files = self._list_files()
        return self._files

    def _list_files(self) -> list[tuple[str, Path]]:
        if not self.root.is_dir():
            raise DataError(path_problem(self.root, "Data folder") or f"{self.root} is not a folder.")
        suffixes = IMAGE_SUFFIXES if self.kind_hint == "image" else TEXT_SUFFIXES
        found, left_out, empty = [], [], []
        for label_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            files = [p for p in sorted(label_dir.rglob("*")) if p.is_file() and not p.name.startswith(".")]
            kept = [p for p in files if p.suffix.lower() in suffixes]
            found += [(label_dir.name, p) for p in kept]
            left_out += [p for p in files if p not in kept]
            if not kept:
                empty.append(label_dir.name)
        if not found:
            raise DataError(self._nothing_found())
        self._refuse_one_level_up(found)
        self._note_left_out(left_out, empty)
        return found

    def _refuse_one_level_up(self, found: list[tuple[str, Path]]) -> None:
        """root/train/cat/1.png given as root: one "label", train, whose sub-folders are the real labels."""
        labels = {label for label, _ in found}
        if len(labels) != 1:
            return
        inner = self.root / labels.pop()
        if sum(1 for p in inner.iterdir() if p.is_dir() and not p.name.startswith(".")) > 1:
            raise DataError(
                f"{self.root} has one label folder, {inner.name}, which holds folders itself: kit would learn a single "
                f"class. Point the data path at {inner} (its sub-folders are the labels)."
            )

    def _note_left_out(self, left_out: list[Path], empty: list[str]) -> None:
        kinds = "image" if self.kind_hint == "image" else "text"
        if empty:
            self.notes.append(f"{self.root}: label folders with no {kinds} files, so no class: {', '.join(empty)}")
        if left_out:
            allowed = " ".join(sorted(IMAGE_SUFFIXES if self.kind_hint == "image" else TEXT_SUFFIXES - {""}))
            self.notes.append(
                f"{self.root}: {len(left_out)} files are not {kinds} files kit reads ({allowed}) and were left out "
                f"(first: {left_out[0]})"
            )

    def _nothing_found(self) -> str:
        loose = [p for p in self.root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        tables = sorted(p.name for p in self.root.iterdir() if p.suffix.lower() in (".csv", ".tsv", ".jsonl", ".json"))
        if tables:
            return (
                f"{self.root} is a folder of data files ({', '.join(tables[:3])}): kit reads one file per split. "
                f"Name one in data.train (and data.validation / data.test), or join them into one file."
            )
        if loose:
            return (
                f"{self.root} holds images directly, not in label sub-folders: put each class's images in a "
                f"sub-folder named after its label ({self.root}/cat/001.png, {self.root}/dog/002.png)."
            )
        if self.kind_hint == "image":
            return (
                f"{self.root} holds no image files in label sub-folders. Expected {self.root}/LABEL/FILE "
                f"(e.g. {self.root}/cat/001.png; {', '.join(sorted(IMAGE_SUFFIXES))})."
            )
        return (
            f"{self.root} holds no text files. Expected label sub-folders {self.root}/LABEL/FILE.txt "
            f"(e.g. {self.root}/positive/review1.txt), or for a text corpus .txt/.md files directly inside."
        )

    def columns(self) -> list[str]:
        self.files()  # a folder laid out otherwise is refused with advice before any column is looked for
        return [self.value_column, "label"]

    def hint(self) -> str:
        return f" {self.root} is read as a folder of label sub-folders: its columns are always these two."

    def rows(self) -> Iterator[Row]:
        for number, (label, path) in enumerate(self.files(), start=1):
            if self.kind_hint == "image":
                value: Any = str(path)
            else:
                value = self._read_text(path)
            values = value if isinstance(value, BadJson) else {self.value_column: value, "label": label}
            yield Row(number, values, origin=str(path))  # an unreadable file is a malformed row

    def _read_text(self, path: Path) -> Any:
        try:
            with _open_text(path, self.encoding) as handle:
                return handle.read()
        except UnicodeDecodeError as exc:
            return BadJson(f"not valid {self.encoding} ({exc.reason}); set data.encoding to the files' encoding")
        except DataError as exc:
            return BadJson(str(exc).rstrip("."))

    def fingerprint(self) -> str:
        import hashlib

        digest = hashlib.sha256()
        for label, path in self.files():
            stat_ = path.stat()
            digest.update(f"{label}/{path.name}:{stat_.st_size}:{int(stat_.st_mtime)}".encode())
        return digest.hexdigest()[:16]


# ---------------------------------------------------------------- plain-text corpus


class CorpusSource(Source):
    """Plain text for language modelling: one `.txt`/`.md` file, or a folder of them (searched recursively).

    Files are read in passages of about `PASSAGE_CHARS` characters, one row
    per passage, so the validation and test splits hold passages from every
    file, and error messages name file and line. A passage ends at a
    paragraph break (a blank line) when one falls in its second half, else
    at a line break; a single line longer than a passage is cut at a sentence
    end, else at a space.
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

    def hint(self) -> str:
        return (
            f" {self.path} is read as plain text for generation (data.format: corpus), one column: "
            f"{self.value_column}. For labelled examples use a CSV/JSONL file or label sub-folders "
            f"(data.format: text_folder or image_folder)."
        )

    def rows(self) -> Iterator[Row]:
        for path in self.files():
            for line, passage in self._passages(path):
                if self.unwrap_lines:  # hard-wrapped prose: a lone line break is just a space
                    passage = re.sub(r"(?<=\S)[ \t]*\n(?=[ \t]*\S)", " ", passage)
                yield Row(line, {self.value_column: passage}, origin=f"{path}, line {line}")

    def _passages(self, path: Path) -> Iterator[tuple[int, str]]:
        """(first line, text) of consecutive passages; together they are the whole file."""
        passage = _Passage(self.PASSAGE_CHARS)
        for number, piece in self._pieces(path):
            yield from _with_text(passage.add(number, piece))
        yield from _with_text(passage.rest())

    def _pieces(self, path: Path) -> Iterator[tuple[int, str]]:
        """(line number, text) of each line, or of each passage-sized part of a longer line."""
        number = 1
        with _open_text(path, self.encoding) as handle:
            try:
                for piece in iter(lambda: handle.readline(self.PASSAGE_CHARS), ""):
                    yield number, piece
                    number += piece.endswith(("\n", "\r"))
            except UnicodeDecodeError as exc:
                raise _decode_error(path, number, self.encoding, exc) from None

    def fingerprint(self) -> str:
        return _file_fingerprint(self.files())


def _with_text(passages: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    return (item for item in passages if item[1].strip())  # a run of blank lines is no passage


class _Passage:
    """Gathers lines into passages of at most `size` characters, cut where the text allows.

    Cut points are remembered as lines arrive: after a blank line (a paragraph
    end) or any line end, once the passage is at least half its size.
    """

    def __init__(self, size: int):
        self.size = size
        self.pieces: list[tuple[int, str]] = []
        self.length = 0
        self.paragraph_end = 0  # number of pieces up to the best cut point so far
        self.line_end = 0

    def add(self, number: int, piece: str) -> Iterator[tuple[int, str]]:
        self.pieces.append((number, piece))
        self.length += len(piece)
        if self.size // 2 <= self.length <= self.size and piece.endswith(("\n", "\r")):
            self.line_end = len(self.pieces)
            if not piece.strip():
                self.paragraph_end = len(self.pieces)
        while self.length >= self.size:
            yield self._cut()

    def _cut(self) -> tuple[int, str]:
        keep = self.paragraph_end or self.line_end
        self.paragraph_end = self.line_end = 0
        if not keep:
            return self._cut_inside()
        taken, self.pieces = self.pieces[:keep], self.pieces[keep:]
        self.length = sum(len(p) for _, p in self.pieces)
        return taken[0][0], "".join(p for _, p in taken)

    def _cut_inside(self) -> tuple[int, str]:
        """No line end in reach: cut inside the long line, at a sentence end or else a space."""
        first, last = self.pieces[0][0], self.pieces[-1][0]
        text = "".join(p for _, p in self.pieces)
        end = _break_point(text, self.size)
        self.pieces = [(last, text[end:])] if text[end:] else []  # a cut at or after half: inside the last piece
        self.length = len(text) - end
        return first, text[:end]

    def rest(self) -> Iterator[tuple[int, str]]:
        if self.pieces:
            yield self.pieces[0][0], "".join(p for _, p in self.pieces)


def _break_point(text: str, size: int) -> int:
    """Where to cut `text` at or before `size`: after the last sentence end, else the last space, else at `size`."""
    window = text[:size]
    sentence = max(window.rfind(mark) for mark in (". ", "! ", "? ", "; ", ".\n", "\n"))
    if sentence >= size // 2:
        return sentence + 2 if window[sentence] != "\n" else sentence + 1
    space = max(window.rfind(" "), window.rfind("\t"))
    return space + 1 if space >= size // 2 else size


# ---------------------------------------------------------------- opening


def _folder_format(path: Path) -> str:
    children = [child for child in path.iterdir() if not child.name.startswith(".")]
    files = {child.suffix.lower() for child in children if child.is_file()}
    if files & {".txt", ".md"}:
        return "corpus"  # text files directly inside: a corpus, not label sub-folders
    if files & IMAGE_SUFFIXES or _holds_images(children, depth=2):
        return "image_folder"  # images in label folders, or (refused with advice) loose or one level down
    if files & {".csv", ".tsv", ".jsonl", ".json"}:
        return "text_folder"  # refused with advice: one file per split
    return "text_folder"


def _holds_images(folders: list[Path], depth: int) -> bool:
    """Whether images lie within `depth` levels under these folders (looking at a few entries of each)."""
    for folder in (f for f in folders if f.is_dir()):
        entries = [item for _, item in zip(range(50), folder.iterdir())]
        if any(item.suffix.lower() in IMAGE_SUFFIXES for item in entries):
            return True
        if depth > 1 and _holds_images(entries, depth - 1):
            return True
    return False


def detect_format(path: Path) -> str:
    """Guess the source format of a path from its extension or contents."""
    if path.is_dir():
        return _folder_format(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix in (".txt", ".md", ".text"):
        return "corpus"
    if suffix in (".csv", ".tsv"):
        return "csv"
    if not path.exists():
        raise DataError(f"Data file {path} does not exist. Check the data paths in kit.yaml (relative to the project).")
    what = FOREIGN_SUFFIXES.get(suffix)
    if what:
        raise DataError(f"{path} is {what}. kit reads CSV, JSONL, plain text and folders of files.")
    raise DataError(
        f"Cannot tell the format of {path}. Set data.format to csv, jsonl, corpus, text_folder or image_folder."
    )


Opener = Callable[[str, Any, Path], Source]


def is_scheme(value: str) -> bool:
    """True for `tfds:mnist`-style sources (but not Windows drive letters)."""
    head, sep, _ = value.partition(":")
    return bool(sep) and len(head) > 1 and head.isidentifier()


def open_source(
    spec: str,
    data_config: Any,
    project_dir: Path,
    role: str,
    schemes: dict[str, Opener],
    described: str | None = None,
) -> Source:
    """Open the source named by a `data.*` value.

    Args:
        spec: a path, or `SCHEME:REST` for registered schemes (tfds, keras, plugins).
        data_config: the `data` section (delimiter, encoding, format...).
        project_dir: relative paths are resolved against it.
        role: "train", "validation" or "test" (default split for named-split sources).
        schemes: scheme -> opener, from the plugin registry.
        described: what messages call the source (default `data.ROLE`; `kit predict` says "The input").
    """
    if is_scheme(spec):
        scheme, _, rest = spec.partition(":")
        if scheme not in schemes:
            known = ", ".join(sorted(schemes)) or "none"
            raise DataError(f"Unknown data source scheme '{scheme}:' in '{spec}'. Known schemes: {known}.")
        return schemes[scheme](rest, data_config, project_dir, role)
    path = _source_path(spec, project_dir, described or f"data.{role}")
    fmt = data_config.format if data_config.format != "auto" else detect_format(path)
    return _open_format(fmt, path, data_config)


def _source_path(spec: str, project_dir: Path, described: str) -> Path:
    path = Path(os.path.expanduser(spec))
    path = path if path.is_absolute() else project_dir / path
    problem = path_problem(path, described)
    if problem:
        fix = (
            f"Check {described} in kit.yaml (relative paths start at the project folder)."
            if described.startswith("data.")
            else f"Check the path (relative paths start at {project_dir})."
        )
        raise DataError(f"{problem} {fix}" if problem.endswith("does not exist.") else problem)
    return path


def _open_format(fmt: str, path: Path, data_config: Any) -> Source:
    if fmt in ("csv", "jsonl") and path.is_dir():
        raise DataError(
            f"{path} is a folder but data.format is {fmt}. Name the {fmt.upper()} file, or set data.format to "
            f"text_folder, image_folder or corpus (or auto)."
        )
    if fmt == "csv":
        delimiter = "\t" if path.suffix.lower() == ".tsv" and data_config.delimiter == "," else data_config.delimiter
        return CsvSource(path, delimiter, data_config.encoding)
    if fmt == "jsonl":
        return JsonlSource(path, data_config.encoding)
    if fmt == "corpus":
        return CorpusSource(path, data_config.text_column, data_config.encoding, data_config.unwrap_lines)
    if fmt in ("text_folder", "image_folder") and not path.is_dir():
        raise DataError(f"{path} is a file but data.format is {fmt}: name the folder that holds the label folders.")
    if fmt == "text_folder":
        return FolderSource(path, "text", data_config.text_column, data_config.encoding)
    return FolderSource(path, "image", data_config.image_column)
