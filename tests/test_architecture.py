"""The shape of the house: what may import what, and who names the run directory's files.

- built-in plugins import only kit's public API (a third party could have written them);
- no import cycles between kit's modules;
- inference (`kit.inference`, `kit.exports`, `kit.evaluation`) never imports training code (`kit.harness`);
- only `kit/rundir.py` spells the names of a run directory's files;
- hooks are called through pluggy's own hook calling (a hookwrapper sees every call).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pluggy
import pytest

import kit
from kit.plugins import get_plugins

ROOT = Path(__file__).resolve().parents[1]
# What a plugin may import from kit: the documented public modules.
PUBLIC = {
    "kit",
    "kit.backbone",
    "kit.commands",
    "kit.compat",
    "kit.console",
    "kit.data",
    "kit.errors",
    "kit.exports",
    "kit.fused_dense",
    "kit.images",
    "kit.patches",
    "kit.inference",
    "kit.plots",
    "kit.references",
    "kit.testing",
    "kit.text",
    "kit.tokenizer_graphs",
    "kit.lazy_init",
    "kit.cache",
}


def module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = list(relative.parts)
    if parts[0] == "plugins":
        parts[0] = "kit_plugins"
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports, at any depth of the file (lazy imports count; type hints do not)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):  # `if TYPE_CHECKING:` blocks import for type checkers only
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def kit_modules() -> dict[str, Path]:
    files = [*ROOT.joinpath("kit").rglob("*.py"), *ROOT.joinpath("plugins").rglob("*.py")]
    return {module_name(path): path for path in files}


PLUGIN_FILES = sorted(ROOT.joinpath("plugins").rglob("*.py"))


@pytest.mark.parametrize("path", PLUGIN_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_builtin_plugins_import_only_the_public_api(path):
    modules = set(kit_modules())
    reached = {
        name
        for name in imports_of(path)
        if name.split(".")[0] == "kit" and name in modules and name not in PUBLIC and not name.startswith("kit_")
    }
    assert not reached, f"{path.name} reaches past kit's public API: {sorted(reached)}"


def import_graph() -> dict[str, set[str]]:
    modules = kit_modules()
    graph = {}
    for name, path in modules.items():
        graph[name] = {target for target in imports_of(path) if target in modules and target != name}
    return graph


def test_no_import_cycles_between_modules():
    graph = import_graph()
    for package in [name for name in graph if kit_modules()[name].name == "__init__.py"]:
        for child in graph:  # a package's __init__ re-exporting its modules is not a cycle
            graph[child].discard(package)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycle = stack[stack.index(target) :] + [target]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


@pytest.mark.parametrize("module", ["kit.inference", "kit.exports", "kit.evaluation", "kit.assembly"])
def test_inference_never_imports_training_code(module):
    graph = import_graph()
    seen, pending = set(), [module]
    while pending:
        current = pending.pop()
        for target in graph.get(current, ()):
            assert not target.startswith("kit.harness"), f"{module} reaches training code: {current} -> {target}"
            if target not in seen:
                seen.add(target)
                pending.append(target)


RUN_FILE_NAMES = re.compile(
    r"""["'](kit_model\.json|metrics\.json|history\.jsonl|model\.keras|run\.json|backup|checkpoints)["']"""
)


def test_only_rundir_names_the_run_directory_files():
    offenders = []
    for name, path in kit_modules().items():
        if name == "kit.rundir":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if RUN_FILE_NAMES.search(line) and not line.lstrip().startswith("#"):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "spell these through kit.rundir.RunDir:\n" + "\n".join(offenders)


def test_registration_hooks_go_through_pluggy():
    """A hookwrapper (pluggy's own mechanism) sees kit's registration calls."""
    seen = []

    class Spy:
        @pluggy.HookimplMarker("kit")(wrapper=True)
        def register_tasks(self, register):
            seen.append("register_tasks")
            return (yield)

    plugins = get_plugins()
    plugins.add_plugin(Spy(), "spy", "test")
    plugins.collect()
    assert seen, "registration hooks bypass pluggy's hook calling"
    assert "classification" in plugins.tasks.names()


def test_public_api_names_the_contract():
    for name in ("Task", "Backbone", "InputKind", "Built", "hookimpl", "KitError"):
        assert hasattr(kit, name)
