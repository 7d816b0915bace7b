"""Catalogue: mistakes in kit.yaml and `--set`."""

from __future__ import annotations

from tests.catalogue import case, project, tabular_project


@case("config", "unknown key in train. Did you mean 'epochs'?")
def unknown_key(root, mp):
    """A misspelled key in kit.yaml (`epochz:`)"""
    return ["run", str(tabular_project(root, "  epochz: 3\n"))]


@case("config", "key 'train.epochs': expected an integer or 'auto', got str 'three'")
def wrong_type(root, mp):
    """A value of the wrong type (`--set train.epochs=three`)"""
    return ["run", str(tabular_project(root).parent / "p"), "--set", "train.epochs=three"]


@case("config", "key 'data.batch_size': must be at least 1, got 0")
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
