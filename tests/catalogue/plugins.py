"""Catalogue: broken or hostile plugins."""

from __future__ import annotations

from pathlib import Path

from tests.catalogue import case, tabular_project


def plugin_project(root: Path, source: str) -> Path:
    folder = tabular_project(root, "plugins: [local_plugin.py]\n")
    (folder / "local_plugin.py").write_text(source)
    return folder


@case("plugins", "failed to import: NameError: name 'this' is not defined")
def plugin_import_error(root, mp):
    """A project plugin with a syntax error"""
    return ["run", str(plugin_project(root, "import kit\nthis is not python\n"))]


@case("plugins", "does not exist (named in `plugins:`")
def plugin_file_missing(root, mp):
    """`plugins:` naming a file that does not exist"""
    return ["run", str(tabular_project(root, "plugins: [nowhere.py]\n"))]


@case("plugins", "both register a task named 'regression'")
def duplicate_task_name(root, mp):
    """A plugin registering a task name that is taken"""
    source = (
        "import kit\nfrom kit_plugins.regression import Regression\n"
        "class Mine(Regression):\n    name = 'regression'\n"
        "@kit.hookimpl\ndef register_tasks(register):\n    register(Mine)\n"
    )
    return ["run", str(plugin_project(root, source))]


@case("plugins", "failed in register_callbacks: RuntimeError: boom")
def hook_raises(root, mp):
    """A plugin hook raising an exception"""
    source = "import kit\n@kit.hookimpl\ndef register_callbacks(register, run):\n    raise RuntimeError('boom')\n"
    return ["run", str(plugin_project(root, source))]


@case("plugins", "it must be a subclass of kit.Task")
def plugin_registers_a_non_task(root, mp):
    """A plugin registering something that is not a `kit.Task`"""
    source = "import kit\n@kit.hookimpl\ndef register_tasks(register):\n    register(dict)\n"
    return ["run", str(plugin_project(root, source))]
