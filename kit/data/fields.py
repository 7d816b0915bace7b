"""Fields: how one column is parsed, checked, learned from and encoded.

The scan calls `parse` on every row (a `BadValue` marks the row malformed),
`observe` on training rows to learn statistics (vocabularies, means), and
`check` on validation/test rows (e.g. labels never seen in training). The
pipeline then calls `encode` to produce what goes into tf.data.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys
from typing import Any, Iterator, NamedTuple

from kit.errors import DataError

FLOAT32_MAX = 3.4028234663852886e38  # examples are fed to TensorFlow as float32
# Largest spread whose variance (std squared) still fits a float32 Normalization layer.
SPREAD_MAX = math.sqrt(FLOAT32_MAX)


class BadValue(Exception):
    """A value that makes its row malformed; the message says why."""


def _kind(raw: Any) -> str:
    """What a value is, in JSON's words (values come from CSV, JSONL or data-set libraries)."""
    from kit.data.sources import json_type

    return json_type(raw)


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
        """Called once the training rows have been observed; may raise `DataError` when they cannot train."""

    def notes(self) -> list[str]:
        """Remarks on what was learned that a user should see (shown with the scan's report)."""
        return []

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
    raise BadValue(f"expected text, got {_kind(raw)}")


class TextField(Field):
    """Free text; empty text is malformed.

    Learns the mean and spread of the training texts' length in characters, which
    `kit serve` compares live texts against (drift).
    """

    dtype = "str"

    def __init__(self, column: str):
        super().__init__(column)
        self.length = Spread()

    def parse(self, raw: Any) -> str:
        text = _text(raw)
        if not text.strip():
            raise BadValue("empty text")
        return text

    def observe(self, value: str) -> None:
        self.length.add(len(value))

    def get_state(self) -> dict[str, Any]:
        if not self.length.count:
            return {}
        return {"length_mean": self.length.mean, "length_std": self.length.std(), "count": self.length.count}

    def set_state(self, state: dict[str, Any]) -> None:
        if "length_mean" in state:  # runs trained before kit kept text lengths have none
            self.length.count = int(state.get("count", 0))
            self.length.mean = float(state["length_mean"])
            self.length.m2 = float(state.get("length_std", 0.0)) ** 2 * self.length.count


class Spread:
    """Running mean and variance in one pass (Welford), no values stored."""

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (value - self.mean)

    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count else 0.0


# Values a NumberField keeps to learn its deciles: a seeded reservoir sample, so memory stays flat
# however long the file, and the same data gives the same deciles (kit serve's population stability index).
QUANTILE_SAMPLE = 4096


class Deciles:
    """The training values' deciles and the share of a reservoir sample in each of the ten bins they cut."""

    def __init__(self) -> None:
        import random

        self.sample: list[float] = []
        self.seen = 0
        self.random = random.Random(0)
        self.cuts: list[float] = []
        self.shares: list[float] = []

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self.sample) < QUANTILE_SAMPLE:
            self.sample.append(value)
            return
        slot = self.random.randrange(self.seen)
        if slot < QUANTILE_SAMPLE:
            self.sample[slot] = value

    def finish(self) -> None:
        import bisect

        ordered = sorted(self.sample)
        if not ordered:
            return
        cuts = [ordered[min(len(ordered) - 1, (len(ordered) * k) // 10)] for k in range(1, 10)]
        self.cuts = sorted(set(cuts))  # ties (few distinct values) merge bins
        counts = [0] * (len(self.cuts) + 1)
        for value in ordered:
            counts[bisect.bisect_left(self.cuts, value)] += 1  # bins are (cut[i-1], cut[i]]
        self.shares = [count / len(ordered) for count in counts]
        self.sample = []


class NumberField(Field):
    """A finite number. With `normalize`, encoded as (x - mean) / std of the training values."""

    def __init__(self, column: str, normalize: bool = False):
        super().__init__(column)
        self.normalize = normalize
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0  # Welford's running sum of squares: one pass, no stored values
        self.std = 1.0
        self.deciles = Deciles()

    def parse(self, raw: Any) -> float:
        if isinstance(raw, str):
            value = _number_from_text(raw)
        elif isinstance(raw, (int, float)) and not isinstance(raw, bool):
            value = _float(raw)
        elif raw is None:
            raise BadValue("missing value where a number is expected")
        elif isinstance(raw, bool):
            raise BadValue(f"expected a number, got {str(raw).lower()}")
        else:
            raise BadValue(f"expected a number, got {_kind(raw)}: {_shown(raw)}")
        if not math.isfinite(value):
            raise BadValue(f"{value} is not a finite number")
        if abs(value) > FLOAT32_MAX:
            raise BadValue(
                f"{_shown(raw)} is too large for training in 32-bit floats (at most 3.4e38); rescale the column"
            )
        return value

    def observe(self, value: float) -> None:
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (value - self.mean)
        self.deciles.add(value)

    def finish(self) -> None:
        self.deciles.finish()
        variance = self.m2 / self.count if self.count else 1.0
        self.std = math.sqrt(variance) if variance > 0 else 1.0
        self.constant = self.count > 1 and variance == 0
        if self.std > SPREAD_MAX or not math.isfinite(self.std):
            raise DataError(
                f"Column '{self.column}': its values spread too widely (standard deviation {self.std:.3g}) to be "
                f"normalised in 32-bit floats. Rescale the column (e.g. a log, or divide by a power of ten)."
            )

    def notes(self) -> list[str]:
        if self.normalize and getattr(self, "constant", False):  # a target: nothing to learn
            return [f"column '{self.column}' holds the same value ({self.mean:g}) in every training row"]
        return []

    def encode(self, value: float) -> float:
        return (value - self.mean) / self.std if self.normalize else value

    def decode(self, encoded: Any) -> Any:
        return encoded * self.std + self.mean if self.normalize else encoded

    def get_state(self) -> dict[str, Any]:
        state = {"mean": self.mean, "std": self.std, "count": self.count}
        if self.deciles.cuts:  # the training distribution, for drift (kit serve's population stability index)
            state.update(deciles=self.deciles.cuts, decile_shares=self.deciles.shares)
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        self.mean, self.std, self.count = state["mean"], state["std"], state.get("count", 0)
        cuts, shares = state.get("deciles"), state.get("decile_shares")
        if isinstance(cuts, list) and isinstance(shares, list) and len(shares) == len(cuts) + 1:
            self.deciles.cuts, self.deciles.shares = [float(c) for c in cuts], [float(s) for s in shares]


def _number_from_text(raw: str) -> float:
    if not raw.strip():
        raise BadValue("empty value where a number is expected")
    try:
        value = float(raw)
    except ValueError:
        value = None
    if value is not None:
        if math.isinf(value) and "inf" not in raw.lower():  # 1e400: a number, but beyond any float
            raise BadValue(f"{_shown(raw)} is too large for training in 32-bit floats (at most 3.4e38)")
        return value
    if re.fullmatch(r"\s*[-+]?\d+,\d+\s*", raw):
        raise BadValue(f"'{raw.strip()}' is not a number (a decimal comma? write '{raw.strip().replace(',', '.')}')")
    raise BadValue(f"{_shown(raw)} is not a number")


def _float(raw: int | float) -> float:
    try:
        return float(raw)
    except OverflowError:  # an integer beyond any float
        raise BadValue(f"{_shown(raw)} is too large for training in 32-bit floats (at most 3.4e38)") from None


def _shown(raw: Any) -> str:
    """A value as messages quote it: short, on one line."""
    text = raw if isinstance(raw, str) else repr(raw)
    text = text if len(text) <= 40 else text[:37] + "..."
    return repr(text) if isinstance(raw, str) else text


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
        self.typing_note: str | None = None  # why a mostly numeric column is read as categories

    def parse(self, raw: Any) -> str:
        return _text(raw).strip()

    def observe(self, value: str) -> None:
        self.counts[value] = self.counts.get(value, 0) + 1

    def finish(self) -> None:
        self.vocabulary = sorted(self.counts)

    def notes(self) -> list[str]:
        typing = [self.typing_note] if self.typing_note else []
        if self.vocabulary == [""]:
            typing.append(f"column '{self.column}' is empty in every training row: leave it out with data.features")
        return typing + _mostly_unique(self.column, self.counts, "values")

    def get_state(self) -> dict[str, Any]:
        return {"vocabulary": self.vocabulary}

    def set_state(self, state: dict[str, Any]) -> None:
        self.vocabulary = list(state["vocabulary"])


def _mostly_unique(column: str, counts: dict[str, int], what: str) -> list[str]:
    """An identifier or a number read as categories: nearly every row its own, so nothing generalises."""
    rows = sum(counts.values())
    if len(counts) <= 100 or len(counts) * 2 <= rows:
        return []
    advice = "a number to predict with task: regression" if what == "labels" else "better left out (data.features)"
    return [
        f"column '{column}' has {len(counts):,} distinct {what} in {rows:,} training rows, most seen once: "
        f"is it an identifier, or {advice}?"
    ]


def _look_alikes(column: str, labels: list[str]) -> list[str]:
    """Labels that are probably one class written two ways ('Yes'/'yes', '1'/'1.0')."""
    groups: dict[str, list[str]] = {}
    for label in labels:
        groups.setdefault(_label_key(label), []).append(label)
    alike = [" / ".join(repr(label) for label in group) for group in groups.values() if len(group) > 1]
    if not alike:
        return []
    return [
        f"column '{column}': labels that differ only in case, spacing or number format are different classes: "
        + "; ".join(alike[:5])
    ]


def _label_key(label: str) -> str:
    try:
        return repr(float(label))
    except ValueError:
        return " ".join(label.lower().split())


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
        if "\n" in value or "\r" in value:  # CSV: a quote left open swallows the lines that follow
            raise BadValue(f'the label runs over several lines ({_shown(value)}): is a quote (") left unclosed?')
        return value

    def finish(self) -> None:
        super().finish()
        self.index = {label: i for i, label in enumerate(self.vocabulary)}
        if len(self.vocabulary) == 1:
            raise DataError(
                f"Column '{self.column}' holds one label ('{self.vocabulary[0]}') in every training row: a classifier "
                f"needs at least two. Check data.target, or add examples of the other classes."
            )

    def notes(self) -> list[str]:
        return _look_alikes(self.column, self.vocabulary) + _mostly_unique(self.column, self.counts, "labels")

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
    """An image: a file path (decoded in tf.data) or an array of pixels.

    The scan decodes every image file as the pipeline will (`check_image`),
    so a file TensorFlow cannot decode is a malformed row with its path,
    not a crash mid-epoch; such files stay malformed in every later pass.
    """

    dtype = "str"

    def __init__(self, column: str, channels: int | None = None):
        super().__init__(column)
        self.channels = channels  # what the pipeline decodes to (1 or 3); the scan sets it from data.color_mode
        self.unreadable: dict[str, str] = {}  # image file -> why the pipeline could not decode it
        self.first_shape: tuple[int, ...] | None = None  # of pixel arrays: every one must match

    def parse(self, raw: Any) -> Any:
        if isinstance(raw, str):
            if not raw.strip():
                raise BadValue("empty image path")
            if raw in self.unreadable:
                raise BadValue(self.unreadable[raw])
            return raw
        if getattr(raw, "ndim", None) in (2, 3):  # a numpy array of pixels
            if self.first_shape is not None and tuple(raw.shape) != self.first_shape:
                raise BadValue(
                    f"the image is {_size(raw.shape)} but the first one is {_size(self.first_shape)}: "
                    f"images given as pixel arrays must all have one size"
                )
            return raw
        raise BadValue(f"expected an image path or pixel array, got {_kind(raw)}")

    def locate(self, raw: Any, folder: str) -> Any:
        """An image path named in a CSV/JSONL file, relative to that file's folder (not to where kit runs)."""
        if not isinstance(raw, str) or not raw.strip():
            return raw
        path = os.path.expanduser(raw)
        if os.path.isabs(path) or WEB_ADDRESS.match(path):  # web addresses are refused by the check
            return path
        return os.path.join(folder, path)

    def observe(self, value: Any) -> None:
        self._require_decodable(value)

    def check(self, value: Any) -> None:
        self._require_decodable(value)

    def _require_decodable(self, value: Any) -> None:
        if not isinstance(value, str):
            self.first_shape = self.first_shape or tuple(value.shape)
            return
        problem = check_image(value, self.channels or 0)
        if problem:
            self.unreadable[value] = problem
            raise BadValue(problem)


def _size(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape)


# Pillow's decompression-bomb limit: about 270 MB once decoded to RGB, for an image kit shrinks to a few pixels.
IMAGE_PIXELS_MAX = 89_478_485


class ImageHeader(NamedTuple):
    """What Pillow reads from an image file's header, without decoding it."""

    kind: str  # format and mode, e.g. "JPEG CMYK"
    size: str  # "WxH"
    pixels: int


WEB_ADDRESS = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def check_image(path: str, channels: int) -> str | None:
    """Why kit's pipeline could not decode the image file at `path`, or None when it can.

    The file is decoded as the pipeline decodes it (`kit.data.images.decode`:
    TensorFlow's `decode_image` at the file's own channel count, first frame of
    an animation, then converted). Only TensorFlow's own decoder can say what
    TensorFlow accepts (it refuses 1-bit BMPs, TIFF... which Pillow reads), and
    it is already imported when data is scanned for a model. Pillow reads the
    header first, so a decompression bomb is refused before it is decoded.
    """
    problem = _file_problem(path)
    if problem:
        return problem
    header = _image_header(path)
    if header and header.pixels > IMAGE_PIXELS_MAX:
        return (
            f"the image is {header.size} pixels, more than kit decodes ({IMAGE_PIXELS_MAX:,}; a decompression "
            f"bomb or a huge scan); shrink it (kit resizes every image to data.image_size anyway)"
        )
    refusal = _tensorflow_refusal(path, channels)
    return _explained(refusal, header, channels, path) if refusal else None


def _file_problem(path: str) -> str | None:
    """A path that is no image file at all: a web address, missing, a FIFO (TensorFlow would wait forever)..."""
    from pathlib import Path

    from kit.data.sources import path_problem

    if WEB_ADDRESS.match(path):
        return f"{path[:60]} is a web address: kit reads image files on disk; download the images and name their paths"
    problem = path_problem(Path(path), "the image file")
    if problem:
        return problem
    if os.path.isdir(path):
        return f"{path} is a folder, not an image file"
    if os.path.getsize(path) == 0:
        return "the image file is empty (0 bytes): replace it, or remove it"
    return None


def _image_header(path: str) -> ImageHeader | None:
    """The file's header as Pillow reads it; None when Pillow does not know the format."""
    import warnings

    try:
        from PIL import Image  # matplotlib's dependency; reads headers only here
    except ImportError:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about big images: kit's own limit decides
            with Image.open(path) as image:
                width, height = image.size
                return ImageHeader(f"{image.format} {image.mode}", f"{width}x{height}", width * height)
    except Image.DecompressionBombError:
        return ImageHeader("", "over 178 million", IMAGE_PIXELS_MAX * 2)
    except Exception:  # noqa: BLE001  Pillow does not know every format TensorFlow reads: TensorFlow decides
        return None


def _tensorflow_refusal(path: str, channels: int) -> str | None:
    """TensorFlow's error when decoding the file as the pipeline does, or None."""
    import tensorflow as tf

    from kit.data.images import decode

    try:
        with _quiet_stderr():  # libjpeg prints its complaints straight to the terminal
            image = decode(tf.io.read_file(path), channels)
    except tf.errors.OpError as exc:
        return re.sub(r"\{\{.*?\}\}|\[Op:.*", "", exc.message).strip()
    return None if min(image.shape[:2]) > 0 else "the image has no pixels"


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as sink:
            os.dup2(sink.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# TensorFlow's decoders refuse these in grayscale (data.color_mode's default).
_COLOUR_ONLY = {"for GIF": "GIF", "for BMP": "BMP", "WebP only": "WebP"}


def _what_file(found: str, path: str) -> str:
    if found:
        return f"the file is a {found} image, which TensorFlow does not read"
    with open(path, "rb") as handle:
        head = handle.read(512)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "the file is not an image TensorFlow reads"
    return "the file holds text, not an image" if text.isprintable() or "\n" in text else "the file is not an image"


def _explained(refusal: str, header: ImageHeader | None, channels: int, path: str) -> str:
    """TensorFlow's decoding error in a user's words, with what to do."""
    found = header.kind.split()[0] if header and header.kind else ""
    for marker, kind in _COLOUR_ONLY.items():
        if marker in refusal:
            return (
                f"a {kind} image, which TensorFlow decodes only in colour: set data.color_mode: rgb, "
                f"or convert the images to PNG"
            )
    if channels == 1 and header and header.kind == "JPEG CMYK":
        return (
            "a CMYK JPEG, which TensorFlow cannot decode to grayscale: set data.color_mode: rgb, or convert it to RGB"
        )
    if "Unknown image file format" in refusal:
        return f"{_what_file(found, path)}: replace it with a PNG, JPEG, GIF or BMP image, or remove it"
    if "channels inherent" in refusal:
        return "a BMP TensorFlow cannot decode (it reads 24- and 32-bit BMPs): convert it to PNG"
    for kind in ("JPEG", "PNG", "GIF", "BMP"):
        if kind.lower() in refusal.lower():
            return f"damaged or truncated {kind} data ({refusal}): replace the file, or remove it"
    return f"TensorFlow cannot decode the image ({refusal}): re-save it as PNG, or remove it"
