"""Reading sources and the validating scan: line numbers, malformed rows, policies, splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kit.config import DataConfig
from kit.data import BadValue, ImageField, LabelField, NumberField, TextField
from kit.data.plan import DataPlan, scan, split_point
from kit.data.sources import CsvSource, detect_format
from kit.errors import DataError
from tests.conftest import write_csv


def plan_for(path: Path, **data) -> DataPlan:
    config = DataConfig(train=str(path), **data)
    return DataPlan(config, path.parent, seed=42, schemes={})


def rows_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_rows_carry_their_line_numbers(tmp_path):
    path = rows_text(tmp_path / "a.csv", 'text,label\nhello,pos\n\n"multi\nline",neg\nbye,pos\n')
    rows = list(CsvSource(path).rows())
    assert [r.line for r in rows] == [2, 4, 6]
    assert rows[1].values == {"text": "multi\nline", "label": "neg"}


def test_unparseable_number_fails_with_line(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["x", "y"], [["1", "2"], ["3", "oops"], ["5", "6"]])
    with pytest.raises(DataError, match=r"t.csv, line 3: column 'y': 'oops' is not a number.*bad_rows: skip"):
        scan(plan_for(path, validation_fraction=0, test_fraction=0), [NumberField("x"), NumberField("y")], "fail")


def test_skip_policy_counts_and_reports(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["x", "y"], [["1", "2"], ["3", "oops"], ["", "6"], ["7", "8"]])
    reports = scan(plan_for(path, validation_fraction=0, test_fraction=0), [NumberField("x"), NumberField("y")], "skip")
    assert reports["train"].rows == 2
    assert reports["train"].bad == 2
    assert "line 3" in reports["train"].examples[0]
    assert "empty value" in reports["train"].examples[1]


def test_ragged_rows_and_nan_targets(tmp_path):
    path = rows_text(tmp_path / "t.csv", "x,y\n1,2\n3\n4,nan\n")
    with pytest.raises(DataError, match="line 3: expected 2 fields, got 1"):
        scan(plan_for(path, validation_fraction=0, test_fraction=0), [NumberField("x"), NumberField("y")], "fail")
    reports = scan(plan_for(path, validation_fraction=0, test_fraction=0), [NumberField("x"), NumberField("y")], "skip")
    assert "nan is not a finite number" in reports["train"].examples[1]


def test_empty_text_and_unknown_validation_label(tmp_path):
    train = write_csv(tmp_path / "train.csv", ["text", "label"], [["good", "pos"], ["bad", "neg"], ["  ", "pos"]])
    valid = write_csv(tmp_path / "valid.csv", ["text", "label"], [["fine", "pos"], ["meh", "neutral"]])
    fields = [TextField("text"), LabelField("label")]
    with pytest.raises(DataError, match="train.csv, line 4: column 'text': empty text"):
        scan(plan_for(train, validation=str(valid), test_fraction=0), fields, "fail")
    clean = write_csv(tmp_path / "clean.csv", ["text", "label"], [["good", "pos"], ["bad", "neg"]])
    with pytest.raises(
        DataError, match="valid.csv, line 3: column 'label': label 'neutral' does not occur in the training"
    ):
        scan(plan_for(clean, validation=str(valid), test_fraction=0), [TextField("text"), LabelField("label")], "fail")
    reports = scan(
        plan_for(train, validation=str(valid), test_fraction=0), [TextField("text"), LabelField("label")], "skip"
    )
    assert (reports["train"].rows, reports["train"].bad) == (2, 1)
    assert (reports["validation"].rows, reports["validation"].bad) == (1, 1)


def test_wrong_encoding_is_explained(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\ncaf\xe9,pos\nth\xe9,neg\n".encode("latin-1"))
    with pytest.raises(DataError, match="not valid utf-8.*data.encoding"):
        scan(plan_for(path, validation_fraction=0, test_fraction=0), [TextField("text"), LabelField("label")], "fail")
    reports = scan(
        plan_for(path, validation_fraction=0, test_fraction=0, encoding="latin-1"),
        [TextField("text"), LabelField("label")],
        "fail",
    )
    assert reports["train"].rows == 2


def test_empty_file_and_missing_file(tmp_path):
    empty = rows_text(tmp_path / "empty.csv", "")
    with pytest.raises(DataError, match="is empty: expected a header"):
        list(CsvSource(empty).rows())
    with pytest.raises(DataError, match="does not exist"):
        plan_for(tmp_path / "missing.csv")


def test_no_usable_rows(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["x"], [["a"], ["b"]])
    with pytest.raises(DataError, match="No usable training rows"):
        scan(plan_for(path, validation_fraction=0, test_fraction=0), [NumberField("x")], "skip")


def test_jsonl_bad_lines(tmp_path):
    path = rows_text(tmp_path / "d.jsonl", '{"text": "hi", "label": 1}\nnot json\n[1, 2]\n{"text": "yo", "label": 0}\n')
    reports = scan(
        plan_for(path, validation_fraction=0, test_fraction=0), [TextField("text"), LabelField("label")], "skip"
    )
    assert reports["train"].rows == 2
    assert "line 2: invalid JSON" in reports["train"].examples[0]
    assert "line 3: expected a JSON object, got an array" in reports["train"].examples[1]


def test_text_folder_source(tmp_path):
    for label, texts in {"pos": ["great", "lovely"], "neg": ["awful"]}.items():
        (tmp_path / "docs" / label).mkdir(parents=True)
        for i, text in enumerate(texts):
            (tmp_path / "docs" / label / f"{i}.txt").write_text(text)
    assert detect_format(tmp_path / "docs") == "text_folder"
    plan = plan_for(tmp_path / "docs", validation_fraction=0, test_fraction=0)
    fields = [TextField("text"), LabelField("label")]
    scan(plan, fields, "fail")
    assert fields[1].vocabulary == ["neg", "pos"]


def test_empty_folder_says_expected_layout(tmp_path):
    (tmp_path / "docs").mkdir()
    plan = plan_for(tmp_path / "docs", format="text_folder", validation_fraction=0, test_fraction=0)
    with pytest.raises(DataError, match="holds no text files. Expected label sub-folders"):
        scan(plan, [TextField("text"), LabelField("label")], "fail")


def test_hash_split_is_deterministic_and_near_fractions(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["x"], [[str(i)] for i in range(2000)])
    plan = plan_for(path, validation_fraction=0.1, test_fraction=0.2)
    splits = {s: [r.values["x"] for r in plan.rows(s)] for s in plan.splits()}
    assert sum(len(v) for v in splits.values()) == 2000
    assert not set(splits["train"]) & set(splits["test"])
    assert abs(len(splits["test"]) - 400) < 60 and abs(len(splits["validation"]) - 200) < 45
    again = plan_for(path, validation_fraction=0.1, test_fraction=0.2)
    assert [r.values["x"] for r in again.rows("test")] == splits["test"]
    assert 0 <= split_point(1, 5) < 1 and split_point(1, 5) != split_point(2, 5)


def test_fractions_must_leave_training_rows(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["x"], [["1"]])
    with pytest.raises(DataError, match="must be below 1"):
        plan_for(path, validation_fraction=0.5, test_fraction=0.5)


def test_label_states_round_trip():
    field = LabelField("label")
    for value in ["b", "a", "b"]:
        field.observe(value)
    field.finish()
    copy = LabelField("label")
    copy.set_state(json.loads(json.dumps(field.get_state())))
    assert copy.encode("b") == 1 and copy.size == 2


def corpus_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "books"
    (folder / "part2").mkdir(parents=True)
    paragraph = "A line of prose that goes on\nand wraps onto the next line.\n\n"
    (folder / "one.txt").write_text(paragraph * 120, encoding="utf-8")
    (folder / "part2" / "two.md").write_text("Short second book.\n", encoding="utf-8")
    (folder / ".hidden.txt").write_text("never read", encoding="utf-8")
    return folder


def test_corpus_reads_passages_of_whole_paragraphs_with_line_numbers(tmp_path):
    folder = corpus_folder(tmp_path)
    assert detect_format(folder) == "corpus" and detect_format(folder / "one.txt") == "corpus"
    plan = plan_for(folder, validation_fraction=0, test_fraction=0)
    rows = list(plan.rows("train"))
    first_file = [r for r in rows if "one.txt" in r.origin]
    assert len(first_file) > 1  # ~7,000 characters: more than one passage
    assert first_file[0].line == 1 and first_file[1].line > 1
    assert all(r.values["text"].endswith("\n\n") for r in first_file[:-1])  # cut at paragraph ends
    assert "".join(r.values["text"] for r in first_file) == (folder / "one.txt").read_text()
    assert rows[-1].values["text"] == "Short second book.\n"
    assert not any("never read" in r.values["text"] for r in rows)


def test_corpus_unwraps_hard_wrapped_lines_when_asked(tmp_path):
    plan = plan_for(corpus_folder(tmp_path), validation_fraction=0, test_fraction=0, unwrap_lines=True)
    text = next(plan.rows("train")).values["text"]
    assert text.startswith("A line of prose that goes on and wraps onto the next line.\n\nA line")


def test_corpus_errors_name_the_problem(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no .txt or .md files"):
        list(plan_for(tmp_path / "empty", format="corpus").rows("train"))
    bad = tmp_path / "latin.txt"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="latin.txt, line 1: .*data.encoding"):
        list(plan_for(bad).rows("train"))
    assert next(plan_for(bad, encoding="latin-1").rows("train")).values["text"] == "caf\xe9\n"


# ---------------------------------------------------------------- issue 13: typing, images, passages, splits


def test_a_column_is_typed_from_every_row_not_a_sample():
    from kit.data.columns import tabular_fields

    early = [{"x": "abc"}] + [{"x": str(i)} for i in range(399)]
    late = [{"x": str(i)} for i in range(399)] + [{"x": "abc"}]
    assert [type(f) for f in tabular_fields(early, ["x"])] == [NumberField]
    assert [type(f) for f in tabular_fields(late, ["x"])] == [NumberField]
    mixed = tabular_fields([{"x": v} for v in ["2", "3", "5more"] * 20], ["x"])[0]
    assert not isinstance(mixed, NumberField) and "'5more'" in mixed.notes()[0]
    assert not isinstance(tabular_fields(early, ["x"], categorical=["x"])[0], NumberField)
    assert not isinstance(tabular_fields([{"x": True}, {"x": False}], ["x"])[0], NumberField)


def test_a_few_non_numbers_are_malformed_rows_with_their_lines(tmp_path):
    from kit.data.columns import tabular_fields

    rows = [[str(i), str(i)] for i in range(100)]
    rows[3][0], rows[70][0] = "abc", "n/a"
    path = write_csv(tmp_path / "t.csv", ["x", "y"], rows)
    plan = plan_for(path, validation_fraction=0, test_fraction=0)
    fields = tabular_fields((r.values for r in plan.sources["train"].rows()), ["x"]) + [NumberField("y")]
    with pytest.raises(DataError, match="t.csv, line 5: column 'x': 'abc' is not a number"):
        scan(plan, fields, "fail")
    reports = scan(plan_for(path, validation_fraction=0, test_fraction=0), fields, "skip")
    assert (reports["train"].rows, reports["train"].bad) == (98, 2) and "line 72" in reports["train"].examples[1]


def test_csv_header_needs_one_name_per_column(tmp_path):
    for header, message in [
        ("x,x,y", "line 1 \\(the header\\): column 'x' appears twice \\(columns 1 and 2\\)"),
        ("x, x ,y", "column 'x' appears twice"),
        ("x,,y", "column 2 of 3 has no name"),
        ("x,  ,y", "column 2 of 3 has no name"),
    ]:
        path = rows_text(tmp_path / "h.csv", header + "\n1,2,3\n")
        with pytest.raises(DataError, match=message):
            CsvSource(path).columns()


def test_bom_and_crlf_are_read_as_plain_csv(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbfx,label\r\n1,a\r\n2,b\r\n")
    rows = list(CsvSource(path).rows())
    assert CsvSource(path).columns() == ["x", "label"] and [r.values for r in rows][1] == {"x": "2", "label": "b"}


def test_jsonl_keys_given_twice_and_values_json_cannot_hold_are_malformed_rows(tmp_path):
    text = '{"text": "a", "label": "x", "label": "y"}\n{"text": ' + "9" * 5000 + "}\n" + "[" * 50000 + "\nnull\n"
    path = rows_text(tmp_path / "d.jsonl", text + '{"text": "ok", "label": "p"}\n{"text": "fine", "label": "q"}\n')
    reports = scan(
        plan_for(path, validation_fraction=0, test_fraction=0), [TextField("text"), LabelField("label")], "skip"
    )
    problems = reports["train"].examples
    assert "key 'label' appears twice" in problems[0] and "4300 digits" in problems[1]
    assert "nested too deeply" in problems[2] and "got null" in problems[3]


def test_jsonl_format_on_another_file_says_it_is_not_json_lines(tmp_path):
    from kit.data.sources import JsonlSource

    csv_file = rows_text(tmp_path / "t.csv", "x,y\n1,2\n")
    with pytest.raises(DataError, match="does not look like JSON lines.*data.format: csv"):
        JsonlSource(csv_file).columns()
    document = rows_text(tmp_path / "d.json", '[\n {"x": 1},\n {"x": 2}\n]\n')
    with pytest.raises(DataError, match="one JSON document"):
        JsonlSource(document).columns()


def test_paths_that_are_not_files_are_refused_by_name(tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.csv")
    os.symlink(tmp_path / "loop.csv", tmp_path / "loop.csv")
    os.symlink(tmp_path / "gone.csv", tmp_path / "link.csv")
    for name, message in [
        ("pipe.csv", "data.train .*pipe.csv is a named pipe \\(FIFO\\), not a file"),
        ("loop.csv", "is a symbolic link loop"),
        ("link.csv", "is a symbolic link to .*gone.csv, which does not exist"),
        ("nothing.csv", "data.train .*nothing.csv does not exist. Check data.train in kit.yaml"),
    ]:
        with pytest.raises(DataError, match=message):
            plan_for(tmp_path / name)


def test_messages_about_an_input_call_it_so(tmp_path):
    config = DataConfig(train=str(tmp_path / "gone.csv"), validation_fraction=0, test_fraction=0)
    with pytest.raises(DataError, match="^The input .*gone.csv does not exist. Check the path \\(relative paths start"):
        DataPlan(config, tmp_path, seed=1, schemes={}, train_described="The input")


def test_validation_must_not_be_the_training_data(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["x"], [["1"]])
    with pytest.raises(DataError, match="data.validation is the training data itself"):
        plan_for(path, validation=str(tmp_path / "." / "t.csv"))


def test_validation_and_test_files_need_the_training_columns(tmp_path):
    train = write_csv(tmp_path / "t.csv", ["x", "y"], [[str(i), str(i)] for i in range(10)])
    other = write_csv(tmp_path / "v.csv", ["x", "z"], [["1", "2"]])
    with pytest.raises(DataError, match="data.test .*v.csv has no column 'y', which the model uses"):
        scan(plan_for(train, test=str(other), validation_fraction=0), [NumberField("x"), NumberField("y")], "fail")


def test_an_empty_split_is_an_error_that_says_what_to_do(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["x"], [["1"], ["2"]])
    with pytest.raises(DataError, match="The validation split is empty: data.validation_fraction is 0.5.*fraction: 0"):
        scan(plan_for(path, validation_fraction=0.5, test_fraction=0), [NumberField("x")], "fail")


def test_numbers_beyond_float32_and_wide_spreads_are_refused():
    field = NumberField("x")
    for raw, message in [
        ("1e308", "too large for training in 32-bit floats"),
        ("1e400", "'1e400' is too large"),
        (10**400, "too large"),
        ("0,5", "a decimal comma\\? write '0.5'"),
        (True, "got true"),
    ]:
        with pytest.raises(BadValue, match=message):
            field.parse(raw)
    wide = NumberField("x")
    for value in (-1e30, 1e30):
        wide.observe(value)
    with pytest.raises(DataError, match="Column 'x': its values spread too widely"):
        wide.finish()


def test_labels_one_class_look_alikes_and_identifiers():
    single = LabelField("label")
    single.observe("yes")
    with pytest.raises(DataError, match="holds one label \\('yes'\\) in every training row"):
        single.finish()
    labels = LabelField("label")
    for value in ["yes", "Yes", "no ", "1", "1.0"] * 3:
        labels.observe(labels.parse(value))
    labels.finish()
    assert "'Yes' / 'yes'" in labels.notes()[0] and "'1' / '1.0'" in labels.notes()[0]
    ids = LabelField("label")
    for i in range(300):
        ids.observe(str(i))
    ids.finish()
    assert "300 distinct labels in 300 training rows" in ids.notes()[0]
    with pytest.raises(BadValue, match="runs over several lines"):
        LabelField("label").parse("pos\n7,neg")


def test_constant_target_is_noted():
    target = NumberField("y", normalize=True)
    for _ in range(5):
        target.observe(3.0)
    target.finish()
    assert "holds the same value (3) in every training row" in target.notes()[0]


def test_one_document_per_line_is_cut_into_passages_at_line_ends(tmp_path):
    from kit.data.sources import CorpusSource

    verses = "".join(
        f"1:{i} In the beginning verse {i} says what it says, {'and more ' * (i % 9)}.\n" for i in range(2000)
    )
    path = rows_text(tmp_path / "bible.txt", verses)
    rows = list(CorpusSource(path, "text").rows())
    assert len(rows) > 40 and all(len(r.values["text"]) <= CorpusSource.PASSAGE_CHARS for r in rows)
    assert all(r.values["text"].endswith("\n") for r in rows) and "".join(r.values["text"] for r in rows) == verses
    assert rows[1].line == 1 + rows[0].values["text"].count("\n")
    reports = scan(plan_for(path), [TextField("text")], "fail")
    assert reports["validation"].rows > 0 and reports["test"].rows > 0


def test_a_huge_line_is_cut_at_sentence_ends_then_spaces(tmp_path):
    from kit.data.sources import CorpusSource

    sentences = " ".join(f"Sentence {i} ends here." for i in range(3000))
    words = " ".join(["word"] * 3000)
    path = rows_text(tmp_path / "long.txt", f"title\n{sentences}\n{words}\n" + "x" * 9000)
    passages = [r.values["text"] for r in CorpusSource(path, "text").rows()]
    assert "".join(passages) == path.read_text() and max(map(len, passages)) <= CorpusSource.PASSAGE_CHARS
    inside = [p for p in passages if p.startswith("Sentence") and "word" not in p]
    assert len(inside) > 10 and all(p.endswith((". ", ".\n")) for p in inside)
    assert any(p.startswith("word") and p.endswith("word ") for p in passages)


@pytest.fixture(scope="module")
def bad_images(tmp_path_factory):
    """One file of each kind TensorFlow refuses (in grayscale), and some it takes."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    colour = Image.new("RGB", (10, 10), color=(250, 10, 10))
    colour.save(folder / "ok.png")
    colour.convert("L").save(folder / "ok.jpg")
    Image.new("I;16", (10, 10)).save(folder / "deep.png")
    colour.save(folder / "still.gif")
    colour.save(folder / "plain.bmp")
    colour.convert("CMYK").save(folder / "cmyk.jpg")
    colour.save(folder / "tiff.png", format="TIFF")
    (folder / "cut.jpg").write_bytes((folder / "ok.jpg").read_bytes()[:120])
    damaged = bytearray((folder / "ok.png").read_bytes())
    damaged[30:50] = bytes(20)
    (folder / "damaged.png").write_bytes(bytes(damaged))
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("not an image")
    return folder


@pytest.mark.parametrize(
    "name, channels, problem",
    [
        ("ok.png", 1, None),
        ("ok.jpg", 3, None),
        ("deep.png", 1, None),
        ("still.gif", 3, None),
        ("plain.bmp", 3, None),
        ("cmyk.jpg", 3, None),
        ("still.gif", 1, None),  # decoded at their own channels, then made grayscale (kit.data.images.decode)
        ("plain.bmp", 1, None),
        ("cmyk.jpg", 1, None),
        ("tiff.png", 3, "the file is a TIFF image, which TensorFlow does not read"),
        ("cut.jpg", 3, "damaged or truncated JPEG data"),
        ("damaged.png", 1, "damaged or truncated PNG data"),
        ("empty.png", 1, "the image file is empty"),
        ("text.png", 1, "the file holds text, not an image"),
        ("missing.png", 1, "does not exist"),
    ],
)
def test_images_are_checked_by_decoding_them_as_the_pipeline_does(bad_images, name, channels, problem):
    import tensorflow as tf

    from kit.data.fields import check_image

    found = check_image(str(bad_images / name), channels)
    assert (found is None) if problem is None else (problem in found), found
    if problem is None:  # what the check passed, the pipeline decodes
        from kit.data.images import decode

        assert decode(tf.io.read_file(str(bad_images / name)), channels).shape[-1] == channels


def test_undecodable_images_are_malformed_rows_in_every_pass(bad_images, tmp_path):
    from kit.data.plan import parse_row

    folder = tmp_path / "set"
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        for name in ("ok.png", "ok.jpg", "cut.jpg"):
            (folder / label / name).write_bytes((bad_images / name).read_bytes())
    plan = plan_for(folder, validation_fraction=0, test_fraction=0)
    fields = [ImageField("image"), LabelField("label")]
    reports = scan(plan, fields, "skip")
    assert (reports["train"].rows, reports["train"].bad) == (4, 2) and "cut.jpg" in reports["train"].examples[0]
    usable = 0
    for row in plan.rows("train"):  # what the pipeline reads: the same rows are left out
        try:
            parse_row(row, fields)
            usable += 1
        except BadValue:
            pass
    assert usable == 4


def test_image_paths_in_a_csv_are_relative_to_the_csv(bad_images, tmp_path):
    from kit.data.plan import parse_row

    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "ok.png").write_bytes((bad_images / "ok.png").read_bytes())
    path = rows_text(tmp_path / "list.csv", "image,label\npics/ok.png,a\npics/ok.png,b\n")
    fields = [ImageField("image"), LabelField("label")]
    scan(plan_for(path, validation_fraction=0, test_fraction=0), fields, "fail")
    row = next(CsvSource(path).rows())
    assert parse_row(row, fields)[0] == str(tmp_path / "pics" / "ok.png")


def test_folder_notes_empty_labels_and_files_left_out(tmp_path):
    for label, files in {"pos": ["1.txt", "2.txt", "notes.docx"], "neg": ["1.txt"], "meh": ["a.pdf"]}.items():
        (tmp_path / "docs" / label).mkdir(parents=True)
        for name in files:
            (tmp_path / "docs" / label / name).write_text("some text")
    reports = scan(
        plan_for(tmp_path / "docs", validation_fraction=0, test_fraction=0),
        [TextField("text"), LabelField("label")],
        "fail",
    )
    notes = " ".join(reports["train"].notes)
    assert "label folders with no text files, so no class: meh" in notes and "2 files are not text files" in notes


def test_byte_order_marks_are_not_part_of_the_data(tmp_path):
    from kit.data.sources import CorpusSource, JsonlSource

    jsonl = tmp_path / "d.jsonl"
    jsonl.write_bytes(b'\xef\xbb\xbf{"text": "hi", "label": "a"}\n')
    assert next(JsonlSource(jsonl).rows()).values == {"text": "hi", "label": "a"}
    text = tmp_path / "t.txt"
    text.write_bytes(b"\xef\xbb\xbfOnce upon a time.\n")
    assert next(CorpusSource(text, "text").rows()).values["text"] == "Once upon a time.\n"


def test_empty_and_identifier_like_feature_columns_are_noted():
    from kit.data import CategoryField

    empty, ids = CategoryField("notes"), CategoryField("id")
    for i in range(300):
        empty.observe(empty.parse(""))
        ids.observe(ids.parse(f"u{i}"))
    empty.finish()
    ids.finish()
    assert "is empty in every training row" in empty.notes()[0]
    assert "300 distinct values in 300 training rows" in ids.notes()[0] and "data.features" in ids.notes()[0]


# ---------------------------------------------------------------- properties: any input gives rows or a DataError

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
line_texts = st.lists(
    st.sampled_from(["a", "b", "word", " ", ". ", "!", "\n", "\n\n", "\r\n", "\t", "é"]), max_size=120
).map("".join)


@PROPERTY
@given(line_texts, st.integers(min_value=8, max_value=60))
def test_passages_are_the_text_cut_in_pieces_no_longer_than_a_passage(text, size):
    from kit.data.sources import _Passage

    passage, out, number = _Passage(size), [], 1
    for piece in text.splitlines(keepends=True):
        for start in range(0, len(piece), size):  # what readline(size) returns
            out += passage.add(number, piece[start : start + size])
        number += 1
    out += passage.rest()
    assert "".join(p for _, p in out) == text
    assert all(0 < len(p) <= size for _, p in out)
    assert [n for n, _ in out] == sorted(n for n, _ in out)


@PROPERTY
@given(st.binary(max_size=3000))
def test_any_bytes_as_a_corpus_give_passages_or_a_data_error(tmp_path_factory, data):
    from kit.data.sources import CorpusSource

    path = tmp_path_factory.mktemp("corpus") / "book.txt"
    path.write_bytes(data)
    try:
        passages = [r.values["text"] for r in CorpusSource(path, "text").rows()]
    except DataError:
        return
    assert all(p.strip() and len(p) <= CorpusSource.PASSAGE_CHARS for p in passages)


@PROPERTY
@given(st.binary(max_size=200), st.sampled_from([",", ";", "\t"]))
def test_any_header_gives_named_columns_or_a_data_error(tmp_path_factory, data, delimiter):
    path = tmp_path_factory.mktemp("header") / "t.csv"
    path.write_bytes(data + b"\n1,2\n")
    try:
        columns = CsvSource(path, delimiter).columns()
    except DataError:
        return
    assert all(c and c == c.strip() for c in columns) and len(set(columns)) == len(columns)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


@PROPERTY
@given(st.one_of(st.text(max_size=80), json_values.map(json.dumps)), st.booleans())
def test_any_jsonl_line_is_an_object_or_a_malformed_row(line, duplicate):
    from kit.data.sources import BadJson, _parse_json_object

    if duplicate and line.startswith("{") and line.endswith("}") and len(line) > 2:
        line = line[:-1] + ', "k": 1, "k": 2}'
    value = _parse_json_object(line)
    assert isinstance(value, dict)
    if isinstance(value, BadJson):
        assert value.reason and not value


@PROPERTY
@given(
    st.lists(
        st.one_of(st.integers(-5, 5).map(str), st.sampled_from(["abc", "", " ", "n/a", "1e3"])), min_size=1, max_size=60
    )
)
def test_a_column_is_numeric_exactly_when_nearly_all_values_are_numbers(values):
    from kit.data.columns import NUMERIC_SHARE, tabular_fields

    field = tabular_fields([{"x": v} for v in values], ["x"])[0]
    present = [v for v in values if v.strip()]
    others = [v for v in present if v in ("abc", "n/a")]
    expected = len(present) > len(others) and len(others) <= (1 - NUMERIC_SHARE) * len(present)
    assert isinstance(field, NumberField) == expected


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300), st.sampled_from([1, 3]))
def test_any_bytes_as_an_image_are_decodable_or_explained(bad_images, tmp_path_factory, data, channels):
    import tensorflow as tf

    from kit.data.fields import check_image

    path = tmp_path_factory.mktemp("img") / "x.png"
    path.write_bytes((bad_images / "ok.png").read_bytes()[: len(data) % 120] + data)
    problem = check_image(str(path), channels)
    if problem is None:
        tf.io.decode_image(tf.io.read_file(str(path)), channels=channels, expand_animations=False)
    else:
        assert isinstance(problem, str) and problem


@PROPERTY
@given(st.binary(max_size=400), st.sampled_from(["csv", "jsonl"]), st.sampled_from(["fail", "skip"]))
def test_any_bytes_typed_and_scanned_give_rows_or_a_data_error(tmp_path_factory, data, suffix, policy):
    from kit.data.columns import tabular_fields

    path = tmp_path_factory.mktemp("typed") / f"t.{suffix}"
    path.write_bytes(b"x,y,label\n" + data if suffix == "csv" else b'{"x": 1, "y": "a", "label": "p"}\n' + data)
    try:
        plan = plan_for(path, validation_fraction=0, test_fraction=0)
        fields = tabular_fields((r.values for r in plan.sources["train"].rows()), ["x", "y"]) + [LabelField("label")]
        reports = scan(plan, fields, policy)
    except DataError:
        return
    assert reports["train"].rows >= 1
