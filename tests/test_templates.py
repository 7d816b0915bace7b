"""`kit new`: rendering, refusals, and cleanup on failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kit.cli import cli
from kit.errors import KitError, UsageError
from kit.templates import (
    Template,
    _fill_placeholders,
    _render_jinja,
    _render_text,
    builtin_templates,
    check_name,
    check_plugin_name,
    new_project,
)


def test_builtin_templates_listed(runner):
    result = runner.invoke(cli, ["templates"])
    assert result.exit_code == 0
    assert "classification" in result.output and "regression" in result.output


PROJECT_TEMPLATES = sorted(name for name, t in builtin_templates().items() if t.kind == "project")


def test_plugin_template_is_listed_as_a_plugin():
    assert builtin_templates()["plugin"].kind == "plugin"


@pytest.mark.parametrize("name", PROJECT_TEMPLATES)
def test_every_template_renders_a_valid_project(tmp_path, runner, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli, ["new", "demo", "--template", name])
    assert result.exit_code == 0, result.output
    from kit.config import load_config

    config = load_config(tmp_path / "demo")
    assert config.task == builtin_templates()[name].task
    assert (tmp_path / "demo" / ".gitignore").is_file()
    assert Path(config.resolve_path(config.data.train)).is_file()
    assert "{{" not in (tmp_path / "demo" / "README.md").read_text()


def test_refuses_existing_non_empty_folder(tmp_path, runner, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "keep.txt").write_text("precious")
    result = runner.invoke(cli, ["new", "demo"])
    assert result.exit_code == 1
    assert "already exists and is not empty" in result.output
    assert (tmp_path / "demo" / "keep.txt").read_text() == "precious"
    assert runner.invoke(cli, ["new", "demo", "--force"]).exit_code == 0
    assert (tmp_path / "demo" / "keep.txt").read_text() == "precious"


@pytest.mark.parametrize("bad, suggestion", [("my project", "my-project"), ("1st", "project-1st"), ("../escape", None)])
def test_invalid_names_get_a_suggestion(bad, suggestion):
    if suggestion is None:
        with pytest.raises(UsageError):
            check_name(bad)
        return
    with pytest.raises(UsageError, match=f"Try: kit new {suggestion}"):
        check_name(bad)


def test_unknown_template_lists_known(tmp_path, runner, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli, ["new", "demo", "--template", "nope"])
    assert result.exit_code == 2
    assert "Known templates: classification, generation, plugin, regression" in result.output
    assert not (tmp_path / "demo").exists()


def test_undefined_variable_fails_and_leaves_nothing(tmp_path):
    source = tmp_path / "tpl"
    source.mkdir()
    (source / "a.txt.jinja").write_text("{{ name }}")
    (source / "b.txt.jinja").write_text("{{ nonsense }}")
    with pytest.raises(KitError, match="Template error in b.txt.jinja: 'nonsense' is undefined"):
        new_project("demo", tmp_path / "out", Template("t", source, "", "test"))
    assert not (tmp_path / "out").exists()


VARIABLES = {"name": "demo-x", "package": "demo_x", "count": 3, "nothing": None}


def _template_texts() -> list[tuple[str, str]]:
    """Every file and folder name and every `*.jinja` file of the built-in templates."""
    found = []
    for template in builtin_templates().values():
        stack = [template.path]
        while stack:
            for entry in stack.pop().iterdir():
                found.append((entry.name, entry.name))
                if entry.is_dir():
                    stack.append(entry)
                elif entry.name.endswith(".jinja"):
                    found.append((entry.name, entry.read_text(encoding="utf-8")))
    return found


def test_builtin_templates_render_as_jinja2_does():
    variables = {**VARIABLES, "task": "classification", "task_name": "demo_x", "class_name": "DemoXTask"}
    texts = _template_texts()
    assert any("{{" in text for _, text in texts)
    for where, text in texts:
        assert _render_text(text, variables, where) == _render_jinja(text, variables, where), where


@pytest.mark.parametrize(
    "text",
    ["{{ name }}", "a{{name}}b {{  package  }}\n", "{{ count }} {{ nothing }}", "}} {{ name }} }", "x{{ name }}\n\n"],
)
def test_placeholders_are_filled_without_jinja2(text):
    filled = _fill_placeholders(text, VARIABLES, "t")
    assert filled is not None
    assert filled == _render_jinja(text, VARIABLES, "t")


@pytest.mark.parametrize(
    "text",
    [
        "{{ name | upper }}",
        "{% if count %}{{ name }}{% endif %}",
        "{# note #}{{ name }}",
        "{{- name }}",
        "{{ name }}\r\nline\r\n",
        "{{ name() }}",  # calling a string: Jinja2's error, not ours
        "{{ python_docs }}",  # printing a function
        "{{ 'literal' }}",
    ],
)
def test_other_jinja2_syntax_is_left_to_jinja2(text):
    assert _fill_placeholders(text, VARIABLES, "t") is None


def test_template_functions_are_called():
    assert _fill_placeholders("{{ shout() }}!", {"shout": lambda: "hey"}, "t") == "hey!"


@pytest.mark.parametrize("text", ["{{ nonsense }}", "{% if 1 %}{{ nonsense }}{% endif %}"])
def test_undefined_variable_has_one_message_on_both_paths(text):
    with pytest.raises(KitError, match="Template error in t: 'nonsense' is undefined. Known variables: count, name"):
        _render_text(text, VARIABLES, "t")


def test_kit_new_imports_neither_jinja2_nor_yaml(tmp_path):
    code = (
        "import sys; from kit.cli import cli\n"
        "try:\n    cli(['new', 'demo'], prog_name='kit')\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('jinja2', 'yaml') if m in sys.modules), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.stderr.strip().endswith("[]"), result.stderr
    assert (tmp_path / "demo" / "kit.yaml").is_file()


def test_template_cannot_write_outside_target(tmp_path):
    source = tmp_path / "tpl"
    source.mkdir()
    (source / "{{ escape }}.jinja").write_text("x")
    with pytest.raises(KitError, match="would write outside"):
        new_project("demo", tmp_path / "out", Template("t", source, "", "test"), extra={"escape": "../../evil"})
    assert not (tmp_path / "evil").exists() and not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", PROJECT_TEMPLATES)
def test_generated_project_passes_its_own_tests(tmp_path, runner, monkeypatch, name):
    import subprocess
    import sys

    monkeypatch.chdir(tmp_path)
    assert runner.invoke(cli, ["new", "proj", "--template", name]).exit_code == 0
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path / "proj",
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


@pytest.mark.slow
def test_plugin_template_round_trip(tmp_path, runner, monkeypatch):
    """kit new --template plugin -> pip install -> kit tasks lists it -> kit run trains with it -> its pytest passes."""
    import json
    import os
    import subprocess
    import sys

    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli, ["new", "my-ext", "--template", "plugin"])
    assert result.exit_code == 0 and "pip install -e my-ext" in result.output
    site = tmp_path / "site"
    install = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "--target",
        str(site),
        "./my-ext",
    ]
    subprocess.run(install, check=True, capture_output=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("KIT_LOAD_PLUGINS", None)
    listing = subprocess.run(
        [sys.executable, "-m", "kit", "tasks", "--json"], env=env, capture_output=True, text=True, check=True
    )
    task = {row["name"]: row for row in json.loads(listing.stdout)}["my_ext"]
    assert (task["package"], task["version"]) == ("my-ext", "0.1.0")

    rows = "".join(
        json.dumps({"text": f"{a} {b}", "tags": tags}) + "\n"
        for a, b, tags in [
            ("chase", "fight", "action"),
            ("joke", "laugh", "comedy"),
            ("kiss", "joke", "comedy;romance"),
        ]
        * 12
    )
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "movies.jsonl").write_text(rows)
    (tmp_path / "proj" / "kit.yaml").write_text(
        "task: my_ext\ndata:\n  train: movies.jsonl\n  target: tags\n  batch_size: 8\n"
        "model:\n  sequence_length: 8\n  vocabulary_size: 50\ntrain:\n  epochs: 2\n  verbose: 0\n"
    )
    trained = subprocess.run(
        [sys.executable, "-m", "kit", "run", "proj"], env=env, capture_output=True, text=True, timeout=600
    )
    assert trained.returncode == 0, trained.stderr
    assert "exact_match" in (tmp_path / "proj" / "runs" / "run-1" / "metrics.json").read_text()

    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path / "my-ext",
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr


# ---------------------------------------------------------------- check everything, then write


def _tree(root: Path) -> dict[str, str]:
    """Every entry under `root`, links shown as links (never followed)."""
    found = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        found[name] = f"-> {os.readlink(path)}" if path.is_symlink() else "dir" if path.is_dir() else path.read_text()
    return found


def test_failed_force_leaves_the_users_files_alone(tmp_path, runner):
    """Issue 13, item 3: a link in the target was found only after README.md had been overwritten, then removed."""
    (tmp_path / "outside").mkdir()
    target = tmp_path / "tgt"
    target.mkdir()
    (target / "README.md").write_text("my notes")
    (target / "data").symlink_to("../outside")
    before = _tree(tmp_path)
    result = runner.invoke(cli, ["new", str(target), "--force"])
    assert result.exit_code == 1 and "never writes through links" in result.output
    assert _tree(tmp_path) == before


def test_force_adds_files_beside_the_users_and_can_be_repeated(tmp_path, runner):
    target = tmp_path / "tgt"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    assert runner.invoke(cli, ["new", str(target), "--force"]).exit_code == 0
    rendered = _tree(target)
    again = runner.invoke(cli, ["new", str(target), "--force"])  # every file already there, identical
    assert again.exit_code == 0 and "(0 files)" in again.output
    assert _tree(target) == rendered and rendered["notes.txt"] == "mine"


def test_a_failure_while_writing_removes_only_what_kit_created(tmp_path, monkeypatch):
    import kit.templates as templates

    target = tmp_path / "made" / "tgt"
    real, calls = templates._write_entry, []

    def failing(path, data, created):
        calls.append(path)
        if len(calls) == 4:
            raise OSError(28, "No space left on device", str(path))
        real(path, data, created)

    monkeypatch.setattr(templates, "_write_entry", failing)
    with pytest.raises(KitError, match="No space left on device. kit new removed what it had written"):
        new_project("tgt", target, builtin_templates()["classification"])
    assert not (tmp_path / "made").exists()  # the parents kit made are gone too
    (target).mkdir(parents=True)
    (target / "mine.txt").write_text("keep")
    calls.clear()
    with pytest.raises(KitError):
        new_project("tgt", target, builtin_templates()["classification"], force=True)
    assert _tree(target) == {"mine.txt": "keep"}


def test_template_links_are_refused_not_followed(tmp_path):
    source = tmp_path / "tpl"
    source.mkdir()
    (source / "a.txt").write_text("a")
    (source / "secret").symlink_to(tmp_path / "outside.txt")
    (tmp_path / "outside.txt").write_text("secret")
    with pytest.raises(KitError, match="is a symbolic link .* kit new refuses it"):
        new_project("demo", tmp_path / "out", Template("t", source, "", "test"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "bad, suggestion",
    [("class", "class-project"), ("NUL", "NUL-project"), ("a" * 300, "a" * 56), ("", "my-project")],
)
def test_suggestions_are_valid_names(bad, suggestion):
    with pytest.raises(UsageError, match=f"Try: kit new {suggestion}$"):
        check_name(bad)
    check_name(suggestion)


@pytest.mark.parametrize("name", ["kit", "Kit", "kit_plugins", "kit-templates", "json", "numpy", "click", "regression"])
def test_plugin_names_that_would_shadow_are_refused(name):
    with pytest.raises(UsageError, match="Choose another name"):
        check_plugin_name(name)
    check_plugin_name("my-ext")
