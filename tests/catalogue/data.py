"""Catalogue: malformed, missing or surprising data."""

from __future__ import annotations

from tests.catalogue import CLASSIFY, REGRESSION, case, labelled, project, tabular_project, write_csv


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
