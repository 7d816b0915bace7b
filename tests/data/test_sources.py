"""Reading sources and the validating scan: line numbers, malformed rows, policies, splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kit.config import DataConfig
from kit.data import LabelField, NumberField, TextField
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
