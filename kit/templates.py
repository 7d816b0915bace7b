"""Project templates and `kit new`.

A template is a folder with a `template.json` (description, task) and the
files of a project. Only `*.jinja` files are rendered (with Jinja2, undefined
variables are errors); file and folder names may hold `{{ name }}`-style
variables; everything else is copied byte for byte. Text whose only Jinja2
syntax is `{{ name }}` or `{{ function() }}` is filled in directly, with the
same result: importing Jinja2 alone takes longer than the rest of `kit new`.
Rendering never writes outside the target, never overwrites a non-empty
folder without `force`, and removes what it wrote when it fails.
"""

from __future__ import annotations

import json
import keyword
import re
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from kit.errors import KitError, PluginError, UsageError

# Dot-files are stored without the dot so packaging tools do not skip them.
DOTFILES = {"gitignore": ".gitignore"}
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
# `{{ name }}` or `{{ name() }}`, the only Jinja2 syntax the fast path fills in itself.
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*(\(\s*\))?\s*\}\}")
METADATA = "template.json"


@dataclass
class Template:
    """A project template: where its files are and who provides it."""

    name: str
    path: Any  # a Path or importlib.resources Traversable
    description: str
    origin: str
    task: str | None = None
    kind: str = "project"  # or "plugin": a package to pip-install, not a project to run


def builtin_templates() -> dict[str, Template]:
    root = resources.files("kit_templates")
    found = {}
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        meta_file = entry / METADATA
        if entry.is_dir() and meta_file.is_file():
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
            found[entry.name] = Template(
                entry.name,
                entry,
                meta.get("description", ""),
                "kit (built-in)",
                meta.get("task"),
                meta.get("kind", "project"),
            )
    return found


def all_templates() -> dict[str, Template]:
    """Built-in templates plus those plugins register through `register_templates`."""
    from kit.plugins import get_plugins

    templates = builtin_templates()

    def register_for(plugin: str) -> Any:
        def register(name: str, path: Any, description: str = "", task: str | None = None) -> None:
            if name in templates:
                raise PluginError(
                    f"Plugin '{plugin}' registers template '{name}', already provided by {templates[name].origin}."
                )
            templates[name] = Template(name, Path(path), description, plugin, task)

        return register

    for plugin, exc in get_plugins().call_each("register_templates", register_for).items():
        if isinstance(exc, PluginError):
            raise exc
        raise PluginError(f"Plugin '{plugin}' failed in register_templates: {type(exc).__name__}: {exc}") from None
    return templates


def check_name(name: str) -> None:
    """Refuse names that cannot be a project/package name, suggesting one that can."""
    if NAME_PATTERN.match(name) and not keyword.iskeyword(name):
        return
    suggestion = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-_") or "my-project"
    if not suggestion[0].isalpha():
        suggestion = f"project-{suggestion}"
    raise UsageError(
        f"'{name}' is not a valid project name: use letters, digits, '-' and '_', starting with a letter. "
        f"Try: kit new {suggestion}"
    )


def choose_template(template: str | None, task: str | None) -> Template:
    templates = all_templates()
    if template is None:
        matching = [t for t in templates.values() if task and t.task == task]
        if task and not matching:
            raise UsageError(
                f"No template for task '{task}'. Templates: {', '.join(sorted(templates))} (see `kit templates`)."
            )
        return matching[0] if matching else templates["classification"]
    if template not in templates:
        raise UsageError(f"Unknown template '{template}'. Known templates: {', '.join(sorted(templates))}.")
    return templates[template]


def new_project(
    name: str, target: Path, template: Template, force: bool = False, extra: dict[str, Any] | None = None
) -> list[Path]:
    """Render `template` into `target`; return the files written."""
    check_name(name)
    existed = target.exists()
    if existed and not target.is_dir():
        raise KitError(f"{target} exists and is a file; choose another name.")
    if existed and any(target.iterdir()) and not force:
        raise KitError(
            f"{target} already exists and is not empty; kit new never overwrites it. Choose another name or pass --force."
        )
    package = re.sub(r"\W", "_", name).lower()
    variables = {
        "name": name,
        "package": package,
        "task": template.task or "",
        "task_name": package,
        "class_name": "".join(part.capitalize() for part in package.split("_") if part) + "Task",
        **(extra or {}),
    }
    written: list[Path] = []
    try:
        target.mkdir(parents=True, exist_ok=True)
        _render_tree(template.path, target, target.resolve(), variables, written)
    except Exception:
        _remove_partial(target, existed, written)
        raise
    return written


def _render_tree(source: Any, target: Path, root: Path, variables: dict[str, Any], written: list[Path]) -> None:
    for entry in sorted(source.iterdir(), key=lambda e: e.name):
        if entry.name in (METADATA, "__init__.py", "__pycache__"):
            continue
        name = _render_text(entry.name, variables, f"file name {entry.name}")
        if name.endswith(".jinja"):
            name = name[: -len(".jinja")]
        if name in DOTFILES:
            name = DOTFILES[name]
        destination = (target / name).resolve()
        if destination != root and root not in destination.parents:
            raise KitError(f"Template entry '{entry.name}' would write outside {root}; refusing.")
        if entry.is_dir():
            destination.mkdir(exist_ok=True)
            _render_tree(entry, destination, root, variables, written)
        elif entry.name.endswith(".jinja"):
            text = _render_text(entry.read_text(encoding="utf-8"), variables, entry.name)
            destination.write_text(text, encoding="utf-8")
            written.append(destination)
        else:
            destination.write_bytes(entry.read_bytes())
            written.append(destination)


def _render_text(text: str, variables: dict[str, Any], where: str) -> str:
    if "{{" not in text and "{%" not in text and "{#" not in text:
        return text
    filled = _fill_placeholders(text, variables, where)
    return filled if filled is not None else _render_jinja(text, variables, where)


def _fill_placeholders(text: str, variables: dict[str, Any], where: str) -> str | None:
    """Render `text` as Jinja2 would when its only syntax is `{{ name }}` / `{{ name() }}`; else None.

    Anything else - statements, comments, filters, whitespace control, CRLF
    line ends (Jinja2 rewrites them) - is left to Jinja2 itself.
    """
    if "{%" in text or "{#" in text or "\r" in text or "{{" in PLACEHOLDER.sub("", text):
        return None
    known = {**TEMPLATE_GLOBALS, **variables}
    for match in PLACEHOLDER.finditer(text):
        name, called = match.group(1), match.group(2) is not None
        if name not in known:
            raise _template_error(where, f"'{name}' is undefined", variables)
        if called != callable(known[name]):
            return None  # calling a value or printing a function: Jinja2 decides what that means
    return PLACEHOLDER.sub(lambda m: str(known[m.group(1)]() if m.group(2) else known[m.group(1)]), text)


def _render_jinja(text: str, variables: dict[str, Any], where: str) -> str:
    import jinja2

    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    environment.globals.update(TEMPLATE_GLOBALS)
    try:
        return environment.from_string(text).render(**variables)
    except jinja2.UndefinedError as exc:
        raise _template_error(where, exc.message, variables) from None
    except jinja2.TemplateSyntaxError as exc:
        raise KitError(f"Template syntax error in {where}, line {exc.lineno}: {exc.message}.") from None


def _template_error(where: str, problem: str, variables: dict[str, Any]) -> KitError:
    """The one message for a template using what it was not given, from either rendering path."""
    return KitError(f"Template error in {where}: {problem}. Known variables: {', '.join(sorted(variables))}.")


def python_docs() -> str:
    """Sample prose for generation templates: this Python's own help topics (`pydoc_data`, PSF licence).

    Written at `kit new` time rather than shipped, so it is always the text of
    the Python the user runs.
    """
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise KitError(
            "This Python has no pydoc_data module (some distributions split it out), so the sample text cannot "
            "be written. Use another template, or install your distribution's full Python standard library."
        ) from None
    return "\n\n".join(topics[name].strip() for name in sorted(topics)) + "\n"


TEMPLATE_GLOBALS = {"python_docs": python_docs}


def _remove_partial(target: Path, existed: bool, written: list[Path]) -> None:
    if not existed:
        shutil.rmtree(target, ignore_errors=True)
        return
    for path in written:
        path.unlink(missing_ok=True)
