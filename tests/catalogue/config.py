"""Catalogue: mistakes in kit.yaml and `--set`."""

from __future__ import annotations

from tests.catalogue import case, labelled, project, tabular_project


@case("config", "unknown key in train. Did you mean 'epochs'?")
def unknown_key(root, mp):
    """A misspelled key in kit.yaml (`epochz:`)"""
    return ["run", str(tabular_project(root, "  epochz: 3\n"))]


@case("config", "key 'train.epochs': expected an integer or 'auto', got str 'three'")
def wrong_type(root, mp):
    """A value of the wrong type (`--set train.epochs=three`)"""
    return ["run", str(tabular_project(root).parent / "p"), "--set", "train.epochs=three"]


@case("config", "key 'data.batch_size': must be between 1 and 1,048,576, got 0")
def out_of_range(root, mp):
    """A number out of range (`data.batch_size: 0`)"""
    return ["run", str(tabular_project(root)), "--set", "data.batch_size=0"]


@case("config", "expected one of 'adam', 'adamw', 'sgd'")
def unknown_choice(root, mp):
    """A value not among the choices (`train.optimizer: adamx`)"""
    return ["run", str(tabular_project(root)), "--set", "train.optimizer=adamx"]


@case("config", "invalid YAML")
def bad_yaml(root, mp):
    """Broken YAML (bad indentation)"""
    folder = project(root / "p", "task: regression\ndata:\n  train: a.csv\n   target: y\n")
    return ["run", str(folder)]


@case("config", "No kit.yaml in")
def missing_config(root, mp):
    """`kit run` on a folder with no kit.yaml"""
    (root / "empty").mkdir()
    return ["run", str(root / "empty")]


@case("config", "No such project or config file")
def missing_config_file(root, mp):
    """`kit run` on a config file that does not exist"""
    return ["run", str(root / "nope.yaml")]


@case("config", "key 'task': required key is missing")
def missing_required_key(root, mp):
    """No `task:` in kit.yaml"""
    return ["run", str(project(root / "p", "data:\n  train: a.csv\n"))]


@case("config", "Bad override 'train.epochs': expected dotted.key=value")
def bad_override_syntax(root, mp):
    """`--set` without `=value`"""
    return ["run", str(tabular_project(root)), "--set", "train.epochs"]


@case("config", "expected a mapping of keys")
def config_not_a_mapping(root, mp):
    """kit.yaml holding a list instead of keys"""
    return ["run", str(project(root / "p", "- task\n- data\n"))]


@case("config", "invalid YAML: could not determine a constructor for the tag")
def yaml_with_a_python_tag(root, mp):
    """A YAML tag that would run Python (`!!python/object/apply:os.system`); kit.yaml is read with the safe loader

    YAML is parsed with the safe loader: a tag that would construct Python objects is refused.
    """
    return ["run", str(project(root / "p", "task: !!python/object/apply:os.system ['echo pwned']\n"))]


@case("config", "Unknown task 'clasification'")
def unknown_task(root, mp):
    """A misspelled task name"""
    return ["run", str(project(root / "p", "task: clasification\ndata:\n  train: a.csv\n"))]


@case("config", "task 'regression' takes no options, got colour")
def unknown_task_option(root, mp):
    """An option the task does not have (`options:`)"""
    return ["run", str(tabular_project(root, "options:\n  colour: red\n"))]


# ---------------------------------------------------------------- YAML itself

LAUGHS = "".join(
    f"  {name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip([None, *"abcdefgh"], "abcdefghi")
)


@case("config", "YAML aliases (such as *h) expand this config to")
def yaml_billion_laughs(root, mp):
    """A "billion laughs": nine levels of nested YAML aliases in an 800-byte kit.yaml

    Aliases are counted on the parsed document before anything is expanded, so a small file cannot exhaust memory.
    """
    return ["run", str(tabular_project(root, "options:\n" + LAUGHS))]


@case("config", "line 8: alias *a is used inside the value it names (a recursive structure)")
def yaml_recursive_alias(root, mp):
    """A recursive YAML alias (`options: &a {b: *a}`)"""
    return ["run", str(tabular_project(root, "options: &a {b: *a}\n"))]


@case("config", "line 4: key 'data.target' is given twice (lines 3 and 4); YAML would silently keep the last")
def yaml_duplicate_key(root, mp):
    """The same key twice in one section (YAML alone keeps the last one silently)"""
    folder = project(root / "p", "task: regression\ndata:\n  target: x\n  target: y\n  train: a.csv\n")
    return ["run", str(folder)]


@case("config", "line 2: key '1' is read by YAML as a number, but keys are text")
def yaml_number_key(root, mp):
    """A key that YAML reads as a number (`1: x`)"""
    return ["run", str(project(root / "p", "task: regression\n1: x\n"))]


@case("config", "line 3: key 'on' is read by YAML as true/false, but keys are text; quote it")
def yaml_boolean_key(root, mp):
    """A key that YAML 1.1 reads as a boolean (`on:`, `yes:`, `no:`)"""
    return ["run", str(project(root / "p", "task: regression\noptions:\n  on: 3\n"))]


@case("config", "key 'null' is read by YAML as null")
def yaml_null_key(root, mp):
    """A `null:` (or `~:`) key"""
    return ["run", str(project(root / "p", "task: regression\nnull: 3\n"))]


@case("config", "line 3, column 1: invalid YAML: found character '\\t' that cannot start any token. YAML indents with")
def yaml_tab_indentation(root, mp):
    """kit.yaml indented with a tab"""
    return ["run", str(project(root / "p", "task: regression\ndata:\n\ttrain: a.csv\n"))]


@case("config", "values are nested more than 32 levels deep")
def yaml_nested_too_deep(root, mp):
    """Values nested 40 levels deep (`[[[[...]]]]`)"""
    return ["run", str(project(root / "p", "task: regression\noptions: " + "[" * 40 + "]" * 40 + "\n"))]


@case("config", "line 2: character U+0000 is not allowed in YAML")
def yaml_nul_character(root, mp):
    """A NUL byte inside kit.yaml"""
    return ["run", str(project(root / "p", "task: regression\ndata: \x00\n"))]


# ---------------------------------------------------------------- the file


@case("config", "line 2: byte 0xe9 is not UTF-8 text; save the file as UTF-8")
def config_not_utf8(root, mp):
    """kit.yaml saved as Latin-1"""
    (root / "p").mkdir()
    (root / "p" / "kit.yaml").write_bytes("task: regression\nname: caf\xe9\n".encode("latin-1"))
    return ["run", str(root / "p")]


@case("config", "is UTF-16 text; save it as UTF-8")
def config_utf16(root, mp):
    """kit.yaml saved as UTF-16 (Notepad's "Unicode")"""
    (root / "p").mkdir()
    (root / "p" / "kit.yaml").write_bytes("task: regression\n".encode("utf-16"))
    return ["run", str(root / "p")]


@case("config", "kit.yaml is a folder, not a YAML file")
def config_is_a_folder(root, mp):
    """A project whose kit.yaml is a folder"""
    (root / "p" / "kit.yaml").mkdir(parents=True)
    return ["run", str(root / "p")]


@case("config", "is not a regular file (a pipe, socket or device)")
def config_is_a_fifo(root, mp):
    """kit.yaml is a named pipe (reading it would wait forever)"""
    import os

    (root / "p").mkdir()
    os.mkfifo(root / "p" / "kit.yaml")
    return ["run", str(root / "p" / "kit.yaml")]


@case("config", "is a symbolic link that leads back to itself")
def config_symlink_loop(root, mp):
    """kit.yaml is a symbolic link to itself"""
    (root / "p").mkdir()
    (root / "p" / "kit.yaml").symlink_to("kit.yaml")
    return ["run", str(root / "p")]


@case("config", "a config is a few KB (at most 1,048,576 bytes)")
def config_too_large(root, mp):
    """A 2 MB kit.yaml (data pasted into it)"""
    return ["run", str(project(root / "p", "task: regression\n" + "# padding\n" * 200_000))]


# ---------------------------------------------------------------- --set


@case("config", "--set data.delimiter=ab, key 'data.delimiter': a CSV delimiter is one character")
def delimiter_two_characters(root, mp):
    """A two-character CSV delimiter (`--set data.delimiter=ab`); the message names the `--set`, not kit.yaml"""
    return ["run", str(tabular_project(root)), "--set", "data.delimiter=ab"]


@case("config", "--set data.delimiter=, key 'data.delimiter': expected a non-empty string")
def delimiter_empty(root, mp):
    """An empty CSV delimiter (`--set data.delimiter=`)"""
    return ["run", str(tabular_project(root)), "--set", "data.delimiter="]


@case("config", "--set data.train.path=x: 'data.train' is str")
def set_below_a_value(root, mp):
    """`--set` on a key below one that holds a value (`--set data.train.path=x`)"""
    return ["run", str(tabular_project(root)), "--set", "data.train.path=x"]


@case("config", "The key holds non-ASCII characters (U+200B ZERO WIDTH SPACE); retype it")
def set_invisible_character(root, mp):
    """A key with an invisible zero-width space, pasted from a web page (`--set train.epochs\\u200b=3`)"""
    return ["run", str(tabular_project(root)), "--set", "train.epochs\u200b=3"]


@case("config", "U+0435 CYRILLIC SMALL LETTER IE")
def look_alike_letter(root, mp):
    """A key with a look-alike Cyrillic letter (`еpochs:`)"""
    return ["run", str(tabular_project(root, "  \u0435pochs: 3\n"))]


@case("config", "--set options={a: 1, a: 2}: key 'a' is given twice")
def set_duplicate_key(root, mp):
    """A `--set` value holding the same key twice (`--set 'options={a: 1, a: 2}'`)"""
    return ["run", str(tabular_project(root)), "--set", "options={a: 1, a: 2}"]


# ---------------------------------------------------------------- values


@case("config", "key 'seed': must be between 0 and 4,294,967,295, got 18,446,744,073,709,551,617")
def seed_too_large(root, mp):
    """A seed NumPy cannot take (`seed: 18446744073709551617`); no run is started"""
    return ["run", str(tabular_project(root, "seed: 18446744073709551617\n"))]


@case("config", "key 'data.batch_size': must be between 1 and 1,048,576, got 100,000,000,000,000,000,000")
def batch_size_absurd(root, mp):
    """An absurd batch size (`batch_size: 100000000000000000000`); every integer key has an upper bound"""
    return ["run", str(tabular_project(root)), "--set", "data.batch_size=100000000000000000000"]


@case("config", "key 'train.epochs': expected an integer or 'auto', got bool True")
def boolean_for_an_integer(root, mp):
    """A boolean where an integer goes (`epochs: yes`)"""
    return ["run", str(tabular_project(root)), "--set", "train.epochs=yes"]


@case("config", "key 'train.learning_rate': expected a finite number or 'auto', got float nan")
def nan_learning_rate(root, mp):
    """A NaN learning rate (`learning_rate: .nan`)"""
    return ["run", str(tabular_project(root)), "--set", "train.learning_rate=.nan"]


@case("config", "key 'train.learning_rate': must be between 1e-12 and 10, got 1000")
def learning_rate_absurd(root, mp):
    """A learning rate of 1000"""
    return ["run", str(tabular_project(root)), "--set", "train.learning_rate=1000"]


@case("config", "key 'data.image_size': expected [height, width] (two integers), got [64]")
def image_size_one_number(root, mp):
    """`image_size: [64]` (one number where height and width go)"""
    return ["run", str(tabular_project(root)), "--set", "data.image_size=[64]"]


@case("config", "key 'data.image_size': must be between 8 and 4,096, got 0")
def image_size_zero(root, mp):
    """`image_size: [0, 0]`"""
    return ["run", str(tabular_project(root)), "--set", "data.image_size=[0, 0]"]


@case("config", "key 'data.train': expected a non-empty string (remove the key for its default)")
def empty_data_path(root, mp):
    """An empty data path (`train: ""`), which would have read the project folder as data"""
    return ["run", str(tabular_project(root)), "--set", "data.train=''"]


@case("config", "expected text without control characters (U+0001)")
def control_character_in_a_value(root, mp):
    """A control character in a column name (`text_column: "a\\x01b"`)"""
    return ["run", str(tabular_project(root)), "--set", 'data.text_column="a\\x01b"']


@case("config", "key 'data.encoding': unknown text encoding 'utf9'. Did you mean 'utf-8'?")
def unknown_encoding(root, mp):
    """A misspelled encoding (`encoding: utf9`)"""
    return ["run", str(tabular_project(root)), "--set", "data.encoding=utf9"]


@case("config", "key 'data.encoding': 'rot13' is not a text encoding")
def bytes_codec_as_encoding(root, mp):
    """A codec that is not a text encoding (`encoding: rot13`, `base64`, `zip`)"""
    return ["run", str(tabular_project(root)), "--set", "data.encoding=rot13"]


@case("config", "data.validation_fraction + data.test_fraction = 1.1 leaves no training rows")
def fractions_leave_no_training_rows(root, mp):
    """Validation and test fractions that add up to 1 or more"""
    return [
        "run",
        str(tabular_project(root)),
        "--set",
        "data.validation_fraction=0.6",
        "--set",
        "data.test_fraction=0.5",
    ]


@case("config", "key 'data.features': an empty list names no column. Remove the key to use every column")
def features_empty(root, mp):
    """`features: []` (it used to mean every column, silently)"""
    return ["run", str(tabular_project(root)), "--set", "data.features=[]"]


@case("config", "key 'data.target': an empty list names no column")
def target_empty(root, mp):
    """`target: []`"""
    return ["run", str(tabular_project(root)), "--set", "data.target=[]"]


@case("config", "key 'data.features': names 'x1' twice")
def feature_listed_twice(root, mp):
    """A feature column listed twice"""
    return ["run", str(tabular_project(root)), "--set", "data.features=[x1, x2, x1]"]


@case("config", "key 'data.categorical': names colour, not in data.features")
def categorical_not_a_feature(root, mp):
    """A categorical column that is not among `features`"""
    return ["run", str(tabular_project(root)), "--set", "data.features=[x1]", "--set", "data.categorical=[colour]"]


@case("config", "key 'runs_dir': ")
def runs_dir_is_a_file(root, mp):
    """`runs_dir` naming a file"""
    return ["run", str(tabular_project(root, "runs_dir: kit.yaml\n"))]


@case("config", "key 'runs_dir': runs are written to a local folder, got 'gs://bucket/runs'")
def runs_dir_remote(root, mp):
    """`runs_dir: gs://bucket/runs` (would have made a folder called `gs:`)"""
    return ["run", str(tabular_project(root)), "--set", "runs_dir=gs://bucket/runs"]


@case("config", "runs would be read as data")
def runs_dir_inside_data_folder(root, mp):
    """`runs_dir` inside the folder of training images or texts (the next run would train on the last one's files)"""
    (root / "p" / "reviews" / "pos").mkdir(parents=True)
    (root / "p" / "reviews" / "pos" / "a.txt").write_text("good")
    config = "task: classification\ndata:\n  train: reviews\nruns_dir: reviews/runs\n"
    return ["run", str(project(root / "p", config))]


# ---------------------------------------------------------------- what the run will use


@case("config", "key 'train.monitor': 'val_ame' is not reported by task 'regression'. Did you mean 'val_mae'?")
def monitor_misspelled(root, mp):
    """A misspelled `train.monitor` (`val_ame`); refused before training, with the metrics the run reports"""
    return ["run", str(tabular_project(root)), "--set", "train.monitor=val_ame"]


@case("config", "key 'data.features': names the target column y: a model that reads the answer learns nothing")
def target_as_a_feature(root, mp):
    """The target among the features (`--set data.features=[x1, y]`): it would score perfectly and learn nothing"""
    return ["run", str(tabular_project(root)), "--set", "data.features=[x1, y]"]


@case("config", "key 'data.text_column': names the target column label")
def target_as_the_text(root, mp):
    """The label column as the text (`--set data.text_column=label`)"""
    rows = [[f"review {i}", "pos" if i % 2 else "neg"] for i in range(40)]
    data = labelled(root, rows, header=("text", "label"))
    config = f"task: classification\ndata:\n  train: {data}\ntrain:\n  epochs: 1\n"
    return ["run", str(project(root / "p", config)), "--set", "data.text_column=label"]


@case("config", "key 'data.features': names tabular feature columns, but these inputs are text")
def features_with_text_inputs(root, mp):
    """`features` set while the inputs are text (a `text` column): it would be ignored silently"""
    rows = [[f"review {i}", str(i), "pos" if i % 2 else "neg"] for i in range(40)]
    data = labelled(root, rows, header=("text", "x", "label"))
    config = f"task: classification\ndata:\n  train: {data}\n  features: [x]\ntrain:\n  epochs: 1\n"
    return ["run", str(project(root / "p", config))]


@case("config", "Dotted keys are for --set; in YAML write the section: `data:` and, indented under it, `train:`")
def dotted_key_in_yaml(root, mp):
    """A dotted key written in kit.yaml (`data.train: a.csv`), as one writes it after --set"""
    return ["run", str(project(root / "p", "task: regression\ndata.train: a.csv\n"))]


@case("config", "--set data.features=[x1, x2: invalid YAML: expected ',' or ']'")
def set_list_typo(root, mp):
    """A `--set` list missing its closing bracket (`--set data.features=[x1, x2`), once read as one odd column name"""
    return ["run", str(tabular_project(root)), "--set", "data.features=[x1, x2"]


@case("config", "expected a string, got null (YAML reads an empty value, `~` and text after `#` as null: quote text)")
def hash_delimiter_unquoted(root, mp):
    """`delimiter: #` in kit.yaml (YAML reads `#` as the start of a comment)"""
    folder = tabular_project(root)
    text = (folder / "kit.yaml").read_text().replace("  target: y\n", "  target: y\n  delimiter: #\n")
    (folder / "kit.yaml").write_text(text)
    return ["run", str(folder)]


@case("config", "key 'model.unfreeze_backbone_after': 5 is not below train.epochs (3), so the backbone would never")
def unfreeze_after_the_last_epoch(root, mp):
    """`unfreeze_backbone_after: 5` with `epochs: 3` (the backbone would silently never train)"""
    args = ["--set", "model.unfreeze_backbone_after=5", "--set", "train.epochs=3"]
    return ["run", str(tabular_project(root)), *args]
