"""Catalogue: malformed, missing or surprising data."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.catalogue import CLASSIFY, REGRESSION, case, labelled, project, tabular_project, write_csv
from tests.conftest import make_tabular


@case("data", "does not exist")
def missing_data_file(root, mp):
    """`data.train` names a file that does not exist"""
    return ["run", str(project(root / "p", REGRESSION.format(data=root / "missing.csv")))]


@case("data", "Column 'y' (data.target) is not in")
def missing_column(root, mp):
    """The target column is not in the file"""
    data = write_csv(root / "d.csv", ["x", "z"], [["1", "2"]] * 20)
    return ["run", str(project(root / "p", REGRESSION.format(data=data)))]


@case("data", "line 5: column 'y': 'twelve' is not a number")
def unparseable_number(root, mp):
    """A number column holding text (`twelve`)"""
    rows = [[str(i), str(2 * i)] for i in range(30)]
    rows[3][1] = "twelve"
    data = write_csv(root / "d.csv", ["x", "y"], rows)
    return ["run", str(project(root / "p", REGRESSION.format(data=data)))]


@case("data", "is empty: expected a header line")
def empty_file(root, mp):
    """An empty (0-byte) data file"""
    (root / "d.csv").write_text("")
    return ["run", str(project(root / "p", REGRESSION.format(data=root / "d.csv")))]


@case("data", "No usable training rows")
def header_only(root, mp):
    """A CSV with a header and no rows"""
    (root / "d.csv").write_text("x,y\n")
    return ["run", str(project(root / "p", REGRESSION.format(data=root / "d.csv")))]


@case("data", "line 3: column 'label': label 'maybe' does not occur in the training data")
def unknown_label(root, mp):
    """A test-set label the training data never had"""
    train = labelled(root, [[str(i), "yes" if i % 2 else "no"] for i in range(40)])
    test = write_csv(root / "test.csv", ["x", "label"], [["1", "yes"], ["2", "maybe"]])
    config = CLASSIFY.format(data=train).replace("  features", f"  test: {test}\n  features")
    return ["run", str(project(root / "p", config))]


@case("data", "line 3: bytes are not valid utf-8 (invalid continuation byte). Set data.encoding")
def wrong_encoding(root, mp):
    """A Latin-1 file read as UTF-8"""
    (root / "d.csv").write_bytes("x,y\n1,2\ncaf\xe9,3\n".encode("latin-1"))
    return ["run", str(project(root / "p", REGRESSION.format(data=root / "d.csv")))]


@case("data", "line 4: expected 2 fields, got 3")
def ragged_row(root, mp):
    """A CSV row with an extra field"""
    (root / "d.csv").write_text("x,y\n1,2\n2,4\n3,6,9\n4,8\n")
    return ["run", str(project(root / "p", REGRESSION.format(data=root / "d.csv")))]


@case("data", "line 3: column 'y': nan is not a finite number")
def nan_target(root, mp):
    """A regression target that is `nan`"""
    (root / "d.csv").write_text("x,y\n1,2\n2,nan\n3,6\n")
    return ["run", str(project(root / "p", REGRESSION.format(data=root / "d.csv")))]


@case("data", "line 2: invalid JSON")
def malformed_jsonl(root, mp):
    """A JSONL line that is not valid JSON"""
    (root / "d.jsonl").write_text('{"x": 1, "y": 2}\n{"x": 2, "y": \n')
    return ["run", str(project(root / "p", REGRESSION.format(data=root / "d.jsonl")))]


@case("data", "leaves no training rows")
def splits_leave_nothing_to_train(root, mp):
    """Validation + test fractions that leave no training rows"""
    return [
        "run",
        str(tabular_project(root)),
        "--set",
        "data.validation_fraction=0.6",
        "--set",
        "data.test_fraction=0.6",
    ]


# ---------------------------------------------------------------- helpers

IMAGES = "task: classification\ndata:\n  train: {data}\n{extra}train:\n  epochs: 1\n  verbose: 0\n"


def numbers(count: int = 60) -> str:
    """`x,y` rows of a learnable regression."""
    return "".join(f"{i},{2 * i}\n" for i in range(count))


def with_data(config: str, extra: str) -> str:
    """`config` with more keys in its data section."""
    return config.replace("data:\n", "data:\n" + extra, 1)


def csv_project(root: Path, text: str, extra: str = "", config: str = REGRESSION) -> list[str]:
    (root / "d.csv").write_text(text, encoding="utf-8")
    return ["run", str(project(root / "p", with_data(config.format(data=root / "d.csv"), extra)))]


def jsonl_project(root: Path, rows: list[dict], tail: str = "", config: str = REGRESSION) -> list[str]:
    (root / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + tail, encoding="utf-8")
    return ["run", str(project(root / "p", config.format(data=root / "d.jsonl")))]


def image_folder(root: Path, per_label: int = 6) -> Path:
    """Two label folders of small grayscale PNGs."""
    from PIL import Image

    folder = root / "images"
    for label in ("cat", "dog"):
        (folder / label).mkdir(parents=True)
        for i in range(per_label):
            Image.new("L", (12, 12), color=i * 20).save(folder / label / f"{i}.png")
    return folder


def image_project(root: Path, name: str, write, extra: str = "") -> list[str]:
    """An image folder with one more file in `cat/`, written by `write(path)`."""
    folder = image_folder(root)
    write(folder / "cat" / name)
    return ["run", str(project(root / "p", IMAGES.format(data=folder, extra=extra)))]


def rgb_image(path: Path, mode: str = "RGB", **options) -> None:
    from PIL import Image

    Image.new("RGB", (12, 12), color=(200, 30, 30)).convert(mode).save(path, **options)


def png_header(width: int, height: int) -> bytes:
    """A valid PNG of a huge size that compresses to a few bytes (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * (width + 1), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


# ---------------------------------------------------------------- images (issue 13, item 8)


@case("data", "cat/bad.png: column 'image': damaged or truncated PNG data")
def image_corrupt_png(root, mp):
    """An image folder holding a PNG whose data is damaged"""

    def write(path):
        rgb_image(path)
        data = bytearray(path.read_bytes())
        data[40:60] = b"\x00" * 20
        path.write_bytes(bytes(data))

    return image_project(root, "bad.png", write)


@case("data", "cat/cut.jpg: column 'image': damaged or truncated JPEG data")
def image_truncated_jpeg(root, mp):
    """A JPEG cut short by an interrupted copy"""

    def write(path):
        rgb_image(path, quality=95)
        path.write_bytes(path.read_bytes()[:200])

    return image_project(root, "cut.jpg", write)


@case("data", "cat/zero.png: column 'image': the image file is empty (0 bytes)")
def image_empty_file(root, mp):
    """A 0-byte `.png` file in a label folder"""
    return image_project(root, "zero.png", lambda path: path.write_bytes(b""))


@case("data", "cat/notes.png: column 'image': the file holds text, not an image")
def image_text_named_png(root, mp):
    """A text file named `.png`"""
    return image_project(root, "notes.png", lambda path: path.write_text("remember to label the dogs\n"))


@case("data", "cat/bomb.png: column 'image': the image is over 178 million pixels")
def image_decompression_bomb(root, mp):
    """A 100-byte PNG that claims 30,000 x 30,000 pixels (a decompression bomb)"""
    return image_project(root, "bomb.png", lambda path: path.write_bytes(png_header(30000, 30000)))


@case("data", "cat/photo.png: column 'image': the file is a TIFF image, which TensorFlow does not read")
def image_tiff_named_png(root, mp):
    """A TIFF image saved with a `.png` name"""
    return image_project(root, "photo.png", lambda path: rgb_image(path, format="TIFF"))


@case("data", "line 14: column 'image': the image file")
def image_path_missing_in_csv(root, mp):
    """A CSV `image` column naming a file that is not there"""
    folder = image_folder(root)
    rows = [f"{folder.name}/{label}/{i}.png,{label}\n" for label in ("cat", "dog") for i in range(6)]
    (root / "list.csv").write_text("image,label\n" + "".join(rows) + "images/cat/missing.png,cat\n")
    return ["run", str(project(root / "p", IMAGES.format(data=root / "list.csv", extra="")))]


@case("data", "holds images directly, not in label sub-folders")
def images_without_label_folders(root, mp):
    """A folder of images with no label sub-folders"""
    from PIL import Image

    (root / "images").mkdir()
    for i in range(6):
        Image.new("L", (12, 12)).save(root / "images" / f"{i}.png")
    return ["run", str(project(root / "p", IMAGES.format(data=root / "images", extra="")))]


# ---------------------------------------------------------------- column types and values (items 11, 12)


@case("data", "table.csv, line 6: column 'x1': 'abc' is not a number")
def mostly_numeric_column(root, mp):
    """One text value (`abc`) among 400 numbers, in the first rows (it used to make the column categorical)"""
    data = make_tabular(root)
    lines = data.read_text().splitlines()
    lines[5] = "abc," + lines[5].split(",", 1)[1]
    data.write_text("\n".join(lines) + "\n")
    return ["run", str(project(root / "p", REGRESSION.format(data=data)))]


@case("data", "line 1 (the header): column 'x' appears twice (columns 1 and 2)")
def duplicate_csv_columns(root, mp):
    """A CSV header naming a column twice (`x,x,y`)"""
    return csv_project(root, "x,x,y\n" + "".join(f"{i},{i},{i}\n" for i in range(30)))


@case("data", "d.jsonl, line 31: key 'y' appears twice in one object")
def duplicate_jsonl_keys(root, mp):
    """A JSONL object giving a key twice (`{"x": 1, "y": 3, "y": 4}`)"""
    return jsonl_project(root, [{"x": i, "y": i} for i in range(30)], '{"x": 1, "y": 3, "y": 4}\n')


@case("data", "line 1 (the header): column 2 of 3 has no name")
def unnamed_csv_column(root, mp):
    """A CSV header with an empty column name (`x,,y`)"""
    return csv_project(root, "x,,y\n" + "".join(f"{i},0,{i}\n" for i in range(30)))


@case("data", "line 1 (the header): column 3 of 3 has no name")
def trailing_comma_header(root, mp):
    """A spreadsheet export whose lines end in a comma (`x,y,`)"""
    return csv_project(root, "x,y,\n" + "".join(f"{i},{i},\n" for i in range(30)))


@case("data", "is too large for training in 32-bit floats")
def huge_number(root, mp):
    """A value of `1e308` in a number column"""
    return csv_project(root, "x,y\n" + numbers(30) + "1e308,3\n")


@case("data", "'1e400' is too large for training in 32-bit floats")
def number_beyond_any_float(root, mp):
    """A value (`1e400`) that no float can hold"""
    return csv_project(root, "x,y\n" + numbers(30) + "1e400,3\n")


@case("data", "'0,5' is not a number (a decimal comma? write '0.5')")
def decimal_comma(root, mp):
    """Numbers written with a decimal comma in a `;`-separated file"""
    rows = "".join(f"{i};{i},5\n" for i in range(30))
    return csv_project(root, "x;y\n" + rows, "  delimiter: ';'\n")


@case("data", "line 31: column 'x': expected a number, got an array: [1, 2]")
def jsonl_array_value(root, mp):
    """A JSONL number column holding an array"""
    return jsonl_project(root, [{"x": i, "y": i} for i in range(30)], '{"x": [1, 2], "y": 3}\n')


@case("data", "line 31: unreadable JSON (Exceeds the limit (4300 digits)")
def huge_integer_in_jsonl(root, mp):
    """A JSONL integer of 5,000 digits"""
    return jsonl_project(root, [{"x": i, "y": i} for i in range(30)], '{"x": ' + "9" * 5000 + ', "y": 3}\n')


@case("data", "line 31: JSON nested too deeply to read")
def deeply_nested_jsonl(root, mp):
    """A JSONL line nesting 100,000 arrays"""
    return jsonl_project(root, [{"x": i, "y": i} for i in range(30)], '{"x": ' + "[" * 100000 + "]" * 100000 + "}\n")


@case("data", "holds one label ('yes') in every training row: a classifier needs at least two")
def single_class(root, mp):
    """A classification label column with one value"""
    return csv_project(root, "x,label\n" + "".join(f"{i},yes\n" for i in range(30)), config=CLASSIFY)


@case("data", "column 'label': the label runs over several lines")
def unclosed_quote_in_label(root, mp):
    """A quote left open in a label (`5,"b`): it swallows the next lines into one label"""
    rows = "".join(f"{i},{'ab'[i % 2]}\n" for i in range(30))
    return csv_project(root, "x,label\n" + rows + '5,"b\n6,a\n7,b\n', config=CLASSIFY)


# ---------------------------------------------------------------- files and formats


@case("data", "a field is longer than 131,072 characters")
def long_csv_field(root, mp):
    """A CSV field of 200,000 characters (or a quote never closed)"""
    return csv_project(root, 'x,y\n1,2\n"' + "a" * 200_000 + '",3\n')


@case("data", "is a named pipe (FIFO), not a file")
def fifo_as_data(root, mp):
    """A named pipe (FIFO) as `data.train` (reading it would wait forever)"""
    os.mkfifo(root / "d.csv")
    return ["run", str(project(root / "p", REGRESSION.format(data=root / "d.csv")))]


@case("data", "is a symbolic link loop (it leads back to itself)")
def symlink_loop_as_data(root, mp):
    """`data.train` is a symbolic link that points to itself"""
    os.symlink(root / "d.csv", root / "d.csv")
    return ["run", str(project(root / "p", REGRESSION.format(data=root / "d.csv")))]


@case("data", "is a symbolic link to")
def broken_symlink_as_data(root, mp):
    """`data.train` is a symbolic link to a file that was deleted"""
    os.symlink(root / "gone.csv", root / "d.csv")
    return ["run", str(project(root / "p", REGRESSION.format(data=root / "d.csv")))]


@case("data", "does not look like JSON lines (one JSON object per line): line 1")
def jsonl_format_on_csv(root, mp):
    """`data.format: jsonl` set on a CSV file"""
    return csv_project(root, "x,y\n" + numbers(), "  format: jsonl\n")


@case("data", "It looks like one JSON document; write one object per line")
def json_document_not_lines(root, mp):
    """A pretty-printed JSON array saved as `.json` instead of JSON lines"""
    (root / "d.json").write_text(json.dumps([{"x": i, "y": i} for i in range(30)], indent=1))
    return ["run", str(project(root / "p", REGRESSION.format(data=root / "d.json")))]


@case("data", "The header holds one column: are fields separated by ';'? Set data.delimiter")
def semicolon_file_read_as_comma(root, mp):
    """A `;`-separated file read with the default `,` delimiter"""
    return csv_project(root, "x;y\n" + "".join(f"{i};{i}\n" for i in range(30)))


@case(
    "data",
    "bytes are not valid utf-8 (invalid start byte). Set data.encoding to the file's encoding (it starts like utf-16)",
)
def utf16_file(root, mp):
    """A CSV saved as UTF-16 ("Unicode text" in Excel)"""
    (root / "d.csv").write_bytes(("x,y\n" + numbers()).encode("utf-16"))
    return ["run", str(project(root / "p", REGRESSION.format(data=root / "d.csv")))]


@case("data", "is an Excel workbook: save it as CSV")
def excel_workbook(root, mp):
    """An Excel workbook (`.xlsx`) as `data.train`"""
    (root / "d.xlsx").write_bytes(b"PK\x03\x04 a zip of XML")
    return ["run", str(project(root / "p", REGRESSION.format(data=root / "d.xlsx")))]


@case("data", "is a folder but data.format is csv")
def folder_with_format_csv(root, mp):
    """`data.format: csv` with `data.train` naming a folder"""
    (root / "tables").mkdir()
    return ["run", str(project(root / "p", with_data(REGRESSION.format(data=root / "tables"), "  format: csv\n")))]


@case("data", "is read as plain text for generation (data.format: corpus)")
def corpus_for_classification(root, mp):
    """A `.txt` file as classification data (it is read as a corpus, without labels)"""
    (root / "t.txt").write_text("a fine film\n" * 50)
    return ["run", str(project(root / "p", CLASSIFY.format(data=root / "t.txt").replace("  features: [x]\n", "")))]


@case("data", "/pos/2.txt: not valid utf-8 (invalid continuation byte); set data.encoding")
def undecodable_text_file_in_folder(root, mp):
    """A Latin-1 `.txt` file among UTF-8 ones in a text folder"""
    for label in ("pos", "neg"):
        (root / "docs" / label).mkdir(parents=True)
        for i in range(6):
            (root / "docs" / label / f"{i}.txt").write_text(f"review {i} of {label}")
    (root / "docs" / "pos" / "2.txt").write_bytes("un caf\xe9 tr\xe8s bon".encode("latin-1"))
    config = CLASSIFY.format(data=root / "docs").replace("  features: [x]\n", "")
    return ["run", str(project(root / "p", config))]


# ---------------------------------------------------------------- sources and splits


@case("data", "The validation split is empty: data.validation_fraction is 0.1")
def empty_validation_split(root, mp):
    """Three rows with the default 10% validation and test fractions"""
    return csv_project(root, "x,y\n1,2\n2,4\n3,6\n")


@case("data", "data.validation is the training data itself")
def validation_is_train(root, mp):
    """`data.validation` naming the training file"""
    (root / "d.csv").write_text("x,y\n" + numbers())
    config = with_data(REGRESSION.format(data=root / "d.csv"), f"  validation: {root / 'd.csv'}\n")
    return ["run", str(project(root / "p", config))]


@case("data", "t.csv has no column 'y', which the model uses. Its columns are: x, z")
def test_lacks_columns(root, mp):
    """A `data.test` file whose columns differ from the training file's"""
    (root / "d.csv").write_text("x,y\n" + numbers())
    (root / "t.csv").write_text("x,z\n" + numbers(10))
    config = with_data(REGRESSION.format(data=root / "d.csv"), f"  test: {root / 't.csv'}\n")
    return ["run", str(project(root / "p", config))]


@case("data", "'tfds:' does not name a TFDS data set")
def tfds_without_name(root, mp):
    """`data.train: "tfds:"` (no data set name)"""
    return ["run", str(project(root / "p", REGRESSION.format(data="'tfds:'")))]


@case("data", "'tfds:@train' does not name a TFDS data set")
def tfds_split_only(root, mp):
    """`data.train: "tfds:@train"` (a split, no name)"""
    return ["run", str(project(root / "p", REGRESSION.format(data="'tfds:@train'")))]


@case("data", "keras:cifar99 is not a data set kit reads from Keras's cache")
def unknown_keras_dataset(root, mp):
    """`data.train: keras:cifar99`"""
    return ["run", str(project(root / "p", CLASSIFY.format(data="keras:cifar99")))]


@case("data", "train-labels-idx1-ubyte.gz is damaged or not an IDX file")
def damaged_keras_download(root, mp):
    """Fashion-MNIST files in Keras's cache that an interrupted download left damaged"""
    folder = root / "keras" / "datasets" / "fashion-mnist"
    folder.mkdir(parents=True)
    import gzip

    with gzip.open(folder / "train-images-idx3-ubyte.gz", "wb") as handle:
        handle.write(b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + bytes(2 * 784))
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b truncated")
    mp.setenv("KERAS_HOME", str(root / "keras"))
    config = CLASSIFY.format(data="keras:fashion_mnist").replace("  features: [x]\n", "")
    return ["run", str(project(root / "p", config))]


_TRAINED: dict[str, Path] = {}


def trained_run(root: Path) -> Path:
    """A finished tiny regression run, trained once per session and copied under `root`."""
    import shutil
    import tempfile

    from click.testing import CliRunner

    from kit.cli import cli

    if "run" not in _TRAINED:
        import atexit

        home = Path(tempfile.mkdtemp(prefix="kit-catalogue-run-"))
        atexit.register(shutil.rmtree, home, True)
        result = CliRunner().invoke(cli, ["run", str(tabular_project(home))])
        assert result.exit_code == 0, result.output
        _TRAINED["run"] = home / "p" / "runs" / "run-1"
    return Path(shutil.copytree(_TRAINED["run"], root / "run-1"))


@case("data", "Error: The input ")
def predict_input_missing(root, mp):
    """`kit predict RUN missing.csv`: the input file does not exist"""
    return ["predict", str(trained_run(root)), str(root / "missing.csv")]


@case("data", "Column 'x1' (an input of this model) is not in")
def predict_input_without_columns(root, mp):
    """`kit predict RUN other.csv`: the input lacks a column the model reads"""
    (root / "other.csv").write_text("a,b\n1,2\n")
    return ["predict", str(trained_run(root)), str(root / "other.csv")]


# ---------------------------------------------------------------- more files that are not what they seem


@case("data", "d.csv is not text: it is gzip-compressed")
def binary_file_as_csv(root, mp):
    """A gzip-compressed CSV saved under a `.csv` name"""
    import gzip

    (root / "d.csv").write_bytes(gzip.compress(("x,y\n" + numbers()).encode()))
    return ["run", str(project(root / "p", REGRESSION.format(data=root / "d.csv")))]


@case("data", "d.csv.gz is a compressed file: decompress it first")
def compressed_csv(root, mp):
    """A `.csv.gz` file as `data.train`"""
    import gzip

    (root / "d.csv.gz").write_bytes(gzip.compress(("x,y\n" + numbers()).encode()))
    return ["run", str(project(root / "p", REGRESSION.format(data=root / "d.csv.gz")))]


@case("data", "is a folder of data files (feb.csv, jan.csv): kit reads one file per split")
def folder_of_csv_files(root, mp):
    """A folder of monthly CSV files as `data.train`"""
    (root / "months").mkdir()
    for month in ("jan", "feb"):
        (root / "months" / f"{month}.csv").write_text("x,y\n" + numbers())
    return ["run", str(project(root / "p", REGRESSION.format(data=root / "months")))]


@case("data", "v.csv is empty: expected a header line")
def empty_validation_file(root, mp):
    """An empty (0-byte) `data.validation` file"""
    (root / "v.csv").write_text("")
    return csv_project(root, "x,y\n" + numbers(), f"  validation: {root / 'v.csv'}\n")


@case("data", "No usable rows in data.validation")
def validation_all_malformed(root, mp):
    """A validation file whose every row is malformed, with `data.bad_rows: skip`"""
    (root / "v.csv").write_text("x,y\none,two\nthree,four\n")
    return csv_project(root, "x,y\n" + numbers(), f"  validation: {root / 'v.csv'}\n  bad_rows: skip\n")


@case("data", "is a web address: kit reads image files on disk")
def image_url_in_csv(root, mp):
    """A CSV `image` column of web addresses"""
    rows = "".join(f"https://example.com/{i}.png,{'ab'[i % 2]}\n" for i in range(10))
    (root / "list.csv").write_text("image,label\n" + rows)
    return ["run", str(project(root / "p", IMAGES.format(data=root / "list.csv", extra="")))]


@case("data", "line 14: column 'image': the image file")
def image_path_is_fifo(root, mp):
    """A CSV `image` column naming a named pipe (reading it would wait forever)"""
    folder = image_folder(root)
    os.mkfifo(folder / "cat" / "pipe.png")
    rows = [f"images/{label}/{i}.png,{label}\n" for label in ("cat", "dog") for i in range(6)]
    (root / "list.csv").write_text("image,label\n" + "".join(rows) + "images/cat/pipe.png,cat\n")
    return ["run", str(project(root / "p", IMAGES.format(data=root / "list.csv", extra="")))]


@case("data", "data.train /dev/null is a device, not a file")
def device_as_data(root, mp):
    """`data.train: /dev/null`"""
    return ["run", str(project(root / "p", REGRESSION.format(data="/dev/null")))]


@case("data", "is too long a name for the file system")
def path_name_too_long(root, mp):
    """A `data.train` file name of 300 characters"""
    return ["run", str(project(root / "p", REGRESSION.format(data="d" * 300 + ".csv")))]


@case("data", "keras:mnist has splits train and test, not 'validation'")
def keras_validation_split(root, mp):
    """`data.validation: keras:mnist@validation` (Keras's data sets have no validation split)"""
    config = with_data(CLASSIFY.format(data="keras:mnist"), "  validation: keras:mnist@validation\n")
    return ["run", str(project(root / "p", config.replace("  features: [x]\n", "")))]


@case("data", "has one label folder, train, which holds folders itself")
def image_folder_one_level_too_high(root, mp):
    """`data.train` naming the folder above the label folders (`pets/` holding `pets/train/cat/...`)"""
    folder = image_folder(root)
    (root / "pets").mkdir()
    folder.rename(root / "pets" / "train")
    return ["run", str(project(root / "p", IMAGES.format(data=root / "pets", extra="")))]


@case("data", "d.csv, line 1: the first line holds numbers, not column names. Add a header line")
def headerless_csv(root, mp):
    """A CSV without a header line (its first row of numbers is read as column names)"""
    return csv_project(root, numbers())


@case("data", "line 32: the header line again (were files joined?)")
def repeated_header_line(root, mp):
    """Two CSV files joined with `cat`, so the header line repeats in the middle"""
    return csv_project(root, "x,y\n" + numbers(30) + "x,y\n" + numbers(30))


@case("data", "A JSONL file's columns are the keys of its first object")
def jsonl_first_object_differs(root, mp):
    """A JSONL file whose first line is a different kind of object (`{"version": 2}`)"""
    return jsonl_project(root, [{"version": 2}] + [{"x": i, "y": i} for i in range(30)])
