"""Project templates and `kit new`.

A template is a folder with a `template.json` (description, task) and the
files of a project. Only `*.jinja` files are rendered (with Jinja2, undefined
variables are errors); file and folder names may hold `{{ name }}`-style
variables; everything else is copied byte for byte. Text whose only Jinja2
syntax is `{{ name }}` or `{{ function() }}` is filled in directly, with the
same result: importing Jinja2 alone takes longer than the rest of `kit new`.
Rendering plans the whole project in memory first and checks it (no
template links, no name leading outside, no link followed in the target, no
existing file replaced) before it writes anything; if writing fails, it
removes exactly what it created.
"""

from __future__ import annotations

import json
import keyword
import os
import re
import stat
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from kit.errors import KitError, PluginError, UsageError

# Dot-files are stored without the dot so packaging tools do not skip them.
DOTFILES = {"gitignore": ".gitignore"}
# Letters, digits, '-' and '_', from a letter to a letter or digit (what pip accepts as a distribution name).
NAME_PATTERN = re.compile(r"^[A-Za-z]([A-Za-z0-9_-]*[A-Za-z0-9])?$")
# `{{ name }}` or `{{ name() }}`, the only Jinja2 syntax the fast path fills in itself.
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*(\(\s*\))?\s*\}\}")
METADATA = "template.json"
TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


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
            if not isinstance(name, str) or not TEMPLATE_NAME.match(name):
                raise PluginError(
                    f"Plugin '{plugin}' registers a template named {name!r}; a template name is letters, digits, "
                    "'-', '_' and '.', starting with a letter or digit (it is typed after --template)."
                )
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


MAX_NAME = 64  # a project name is a folder, a distribution and a package name; long ones break paths
# Names Windows cannot give a file or folder: a project named so cannot be checked out there.
WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
# kit's distributions and import names: a plugin so named would replace kit when installed, and a project folder
# so named shadows kit for Python started beside it.
KIT_NAMES = {"kit", "kit-plugins", "kit-templates", "kit_plugins", "kit_templates"}


def check_name(name: str) -> None:
    """Refuse names that cannot be a project/package name, suggesting one that can."""
    problem = _name_problem(name)
    if problem is None:
        return
    raise UsageError(f"'{_visible(name)}' is not a valid project name: {problem}. Try: kit new {_suggest(name)}")


def _name_problem(name: str) -> str | None:
    if name in ("", ".", ".."):
        return "kit new NAME creates the new folder NAME"
    if len(name) > MAX_NAME:
        return f"it has {len(name)} characters; at most {MAX_NAME}"
    if not NAME_PATTERN.match(name):
        return "use letters, digits, '-' and '_', starting with a letter and ending with a letter or digit"
    if keyword.iskeyword(package_name(name)):
        return f"'{package_name(name)}' is a Python keyword, so it cannot name a package"
    if name.lower() in WINDOWS_RESERVED:
        return f"Windows reserves the name '{name}' for a device"
    if package_name(name) in KIT_NAMES:  # a folder `kit/` shadows kit for Python started beside it
        return f"'{name}' is the name of kit's own package"
    return None


def _suggest(name: str) -> str:
    """A valid name close to `name`."""
    suggestion = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-_")[: MAX_NAME - 8].strip("-_") or "my-project"
    if not suggestion[0].isalpha():
        suggestion = f"project-{suggestion}"
    return suggestion if _name_problem(suggestion) is None else f"{suggestion}-project"


def package_name(name: str) -> str:
    """The Python package a project name becomes (`my-ext` -> `my_ext`)."""
    return re.sub(r"\W", "_", name).lower()


def check_plugin_name(name: str) -> None:
    """Refuse a plugin name whose `pip install -e` would replace or shadow something installed.

    The package would shadow a module of the same name for every program in the
    environment (kit, its plugins and templates, the standard library, or a
    dependency such as keras or numpy), and the distribution would replace an
    installed one of the same name. A task name equal to a registered one
    would clash with it in `kit tasks`.
    """
    package, distribution = package_name(name), re.sub(r"[-_.]+", "-", name).lower()
    clash = _installed_clash(package, distribution)
    if clash:
        raise UsageError(
            f"A plugin named '{name}' would be installed as the package '{package}', but {clash}. "
            f"Choose another name, e.g. kit new {_suggest(f'{name}-plugin')} --template plugin"
        )


def _installed_clash(package: str, distribution: str) -> str | None:
    if package in KIT_NAMES or distribution in KIT_NAMES:
        return "kit itself uses that name (`pip install -e` would replace kit)"
    if package in sys.stdlib_module_names:
        return f"'{package}' is a module of Python's standard library, which it would shadow"
    return _module_clash(package) or _distribution_clash(distribution) or _task_clash(package)


def _module_clash(package: str) -> str | None:
    import importlib.util

    try:
        spec = importlib.util.find_spec(package)  # finds, never imports
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    return f"a module '{package}' is already installed ({spec.origin or 'a namespace package'}), which it would shadow"


def _distribution_clash(distribution: str) -> str | None:
    import importlib.metadata

    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    return f"a distribution '{distribution}' is already installed, which `pip install -e` would replace"


def _task_clash(package: str) -> str | None:
    from kit.plugins import get_plugins

    plugins = get_plugins()
    plugins.collect()
    if package in plugins.tasks.names():
        return f"its task '{package}' is already provided by plugin '{plugins.tasks.items[package].plugin}'"
    return None


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
        raise UsageError(f"Unknown template '{_visible(template)}'. Known templates: {', '.join(sorted(templates))}.")
    chosen = templates[template]
    if task and chosen.task != task:
        raise UsageError(
            f"--template {template} is for task '{chosen.task or 'none'}', not --task {task}; give one of them."
        )
    if isinstance(chosen.path, Path) and not chosen.path.is_dir():
        raise PluginError(f"Template '{template}' from {chosen.origin} is missing: {chosen.path} is not a folder.")
    return chosen


@dataclass
class Planned:
    """One entry of a rendered project: a folder (`data` None) or a file and its bytes."""

    parts: tuple[str, ...]  # the path inside the project
    data: bytes | None
    source: str  # the template entry it comes from, for messages


def new_project(
    name: str, target: Path, template: Template, force: bool = False, extra: dict[str, Any] | None = None
) -> list[Path]:
    """Render `template` into `target`; return the files written.

    Everything is checked before anything is written: the name, the target
    folder, every template entry (no links, no name leading outside) and
    every destination (no link followed, no file of the user's replaced).
    With `force` the target may hold files already: the template's files are
    added beside them, and one that exists with other content is refused,
    never overwritten. A failure while writing removes only what kit created.
    """
    check_name(name)
    if template.kind == "plugin":
        check_plugin_name(name)
    _check_target(target, force)
    plan = plan_project(template, _variables(name, template, extra))
    _check_destinations(target, plan)
    return _write(target, plan)


def _variables(name: str, template: Template, extra: dict[str, Any] | None) -> dict[str, Any]:
    package = package_name(name)
    return {
        "name": name,
        "package": package,
        "task": template.task or "",
        "task_name": package,
        "class_name": "".join(part.capitalize() for part in package.split("_") if part) + "Task",
        **(extra or {}),
    }


def _check_target(target: Path, force: bool) -> None:
    """The target is a real folder (empty unless `force`) or can be created as one."""
    if target.is_symlink():
        raise KitError(
            f"{target} is a symbolic link (to {os.readlink(target)}); kit new writes only into a real folder."
        )
    if target.exists():
        if not target.is_dir():
            raise KitError(f"{target} exists and is not a folder; choose another name.")
        if any(target.iterdir()) and not force:
            raise KitError(
                f"{target} already exists and is not empty; kit new never overwrites it. "
                "Choose another name, or pass --force to add the template's files beside yours."
            )
        return
    parent = next(p for p in target.absolute().parents if os.path.lexists(p))
    if not parent.is_dir():
        raise KitError(f"Cannot create {target}: {parent} is not a folder. Choose another place.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise KitError(f"Cannot create {target}: {parent} is not writable. Choose another place.")


def plan_project(template: Template, variables: dict[str, Any]) -> list[Planned]:
    """Every folder and file of the rendered project, in memory, parents before children."""
    plan: list[Planned] = []
    _plan_folder(template.path, (), variables, plan)
    return plan


def _plan_folder(source: Any, parts: tuple[str, ...], variables: dict[str, Any], plan: list[Planned]) -> None:
    taken: dict[str, str] = {}
    for entry in sorted(source.iterdir(), key=lambda e: e.name):
        if entry.name in (METADATA, "__init__.py", "__pycache__"):
            continue
        _refuse_special(entry)
        name = _destination_name(entry.name, variables)
        if name in taken:
            raise KitError(f"Template entries '{taken[name]}' and '{entry.name}' both render to '{name}'.")
        taken[name] = entry.name
        if entry.is_dir():
            plan.append(Planned((*parts, name), None, entry.name))
            _plan_folder(entry, (*parts, name), variables, plan)
        else:
            plan.append(Planned((*parts, name), _file_bytes(entry, variables), entry.name))


def _refuse_special(entry: Any) -> None:
    """Templates hold plain files and folders: a link could copy /etc/ssl into a project, or loop forever."""
    if not isinstance(entry, Path):  # a resource inside a zip: plain by construction
        return
    mode = entry.lstat().st_mode
    if stat.S_ISLNK(mode):
        raise KitError(
            f"Template entry {entry} is a symbolic link (to {os.readlink(entry)}); templates must hold plain "
            "files and folders, so kit new refuses it. Replace the link by a copy of the file."
        )
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise KitError(f"Template entry {entry} is not a plain file or folder (a pipe, socket or device).")


def _destination_name(source_name: str, variables: dict[str, Any]) -> str:
    name = _render_text(source_name, variables, f"file name {source_name}")
    if name.endswith(".jinja"):
        name = name[: -len(".jinja")]
    name = DOTFILES.get(name, name)
    if name in ("", ".", "..") or any(c in name for c in "/\\"):
        raise KitError(
            f"Template entry '{source_name}' renders to the name {name!r}, which would write outside its folder; "
            "refusing. A template's names must be plain file or folder names."
        )
    if not name.isprintable():
        raise KitError(f"Template entry '{source_name}' renders to the name {name!r}, with control characters.")
    return name


def _file_bytes(entry: Any, variables: dict[str, Any]) -> bytes:
    if not entry.name.endswith(".jinja"):
        return entry.read_bytes()
    try:
        text = entry.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise KitError(f"Template file {entry.name} is not UTF-8 text (byte {exc.start}); save it as UTF-8.") from None
    return _render_text(text, variables, entry.name).encode("utf-8")


def _check_destinations(target: Path, plan: list[Planned]) -> None:
    """No destination is a link, or a file where a folder goes; files that exist with other content are refused."""
    differ = []
    for entry in plan:
        path = target.joinpath(*entry.parts)
        try:
            info = path.lstat()
        except (FileNotFoundError, NotADirectoryError):
            continue
        if stat.S_ISLNK(info.st_mode):
            raise KitError(
                f"{path} is a symbolic link (to {os.readlink(path)}); kit new never writes through links. "
                "Move it away, or choose another folder. Nothing was written."
            )
        wanted = "folder" if entry.data is None else "file"
        fits = stat.S_ISDIR(info.st_mode) if entry.data is None else stat.S_ISREG(info.st_mode)
        if not fits:
            raise KitError(
                f"{path} exists, but the template has a {wanted} there. Move it away, or choose another folder."
            )
        if entry.data is not None and (info.st_size != len(entry.data) or path.read_bytes() != entry.data):
            differ.append(str(path))
    if differ:
        shown = ", ".join(differ[:5]) + (f" and {len(differ) - 5} more" if len(differ) > 5 else "")
        raise KitError(
            f"kit new never overwrites your files, and the template has other content for {shown}. "
            "Move them away, or choose another folder. Nothing was written."
        )


def _write(target: Path, plan: list[Planned]) -> list[Path]:
    """Create the target and the plan's entries; on any failure remove exactly what was created, then say why."""
    created: list[Path] = []
    absolute = target.absolute()
    try:
        for folder in reversed([absolute, *absolute.parents]):
            if not os.path.lexists(folder):
                folder.mkdir()
                created.append(folder)
        for entry in plan:
            _write_entry(absolute.joinpath(*entry.parts), entry.data, created)
    except BaseException as exc:
        _remove_created(created)
        if isinstance(exc, OSError):
            raise KitError(
                f"Cannot write {exc.filename or target}: {exc.strerror or exc}. kit new removed what it had written."
            ) from None
        raise
    return [path for path in created if not path.is_dir()]


def _write_entry(path: Path, data: bytes | None, created: list[Path]) -> None:
    if data is None:
        if not path.is_dir():
            path.mkdir()
            created.append(path)
        return
    if path.is_file():  # checked: a file with the same bytes
        return
    # O_EXCL: never replace a file that appeared since the check; O_NOFOLLOW: never write through a link.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    descriptor = os.open(path, flags, 0o666)
    created.append(path)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def _remove_created(created: list[Path]) -> None:
    for path in reversed(created):
        try:
            path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
        except OSError:
            pass  # not empty (someone else wrote there) or already gone: leave it


def _visible(text: str) -> str:
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


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
    except KitError:
        raise
    except Exception as exc:  # the template's own expression failed (1/0, a missing include...)
        raise KitError(f"Template error in {where}: {type(exc).__name__}: {exc}.") from None


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
