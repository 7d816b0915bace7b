"""The plugin manager: built-ins, entry points, KIT_LOAD_PLUGINS, failures, duplicates, project plugins."""

from __future__ import annotations

import importlib.metadata
import os
import sys
import time
import types

import pytest

import kit
from kit.errors import PluginError
from kit.plugins import DEFAULT_PLUGINS, Plugins, get_plugins


class FakeEntryPoint:
    def __init__(self, name, load, dist="kit-fake"):
        self.name = name
        self._load = load
        self.dist = types.SimpleNamespace(name=dist, version="1.2.3")

    def load(self):
        return self._load()


def make_plugin(task_name: str):
    module = types.ModuleType(f"plugin_{task_name}")

    class Fake(kit.Task):
        name = task_name
        description = "A fake task."

    @kit.hookimpl
    def register_tasks(register):
        register(Fake)

    module.register_tasks = register_tasks
    return module


def with_entry_points(monkeypatch, *eps):
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: list(eps) if group == "kit" else [])


def test_builtins_register_tasks_and_sources():
    plugins = get_plugins()
    plugins.collect()
    assert {"classification", "regression"} <= set(plugins.tasks.names())
    assert {"tfds", "keras"} <= set(plugins.data_sources.names())
    assert set(DEFAULT_PLUGINS) <= set(plugins.info)


def test_entry_point_plugin_loads_with_package_and_version(monkeypatch):
    monkeypatch.delenv("KIT_LOAD_PLUGINS")
    with_entry_points(monkeypatch, FakeEntryPoint("fake", lambda: make_plugin("fake")))
    plugins = get_plugins()
    assert plugins.task("fake").plugin == "fake"
    assert plugins.info["fake"].package == "kit-fake"
    assert plugins.info["fake"].version == "1.2.3"


def test_kit_load_plugins_limits_what_loads(monkeypatch):
    with_entry_points(monkeypatch, FakeEntryPoint("fake", lambda: make_plugin("fake")))
    monkeypatch.setenv("KIT_LOAD_PLUGINS", "")
    assert "fake" not in get_plugins().info
    from kit.plugins import reset_plugins

    reset_plugins()
    monkeypatch.setenv("KIT_LOAD_PLUGINS", "kit-fake")
    assert "fake" in get_plugins().info


def test_broken_plugin_is_reported_and_others_keep_working(monkeypatch):
    monkeypatch.delenv("KIT_LOAD_PLUGINS")

    def broken():
        raise ImportError("No module named 'missing_dependency'")

    with_entry_points(monkeypatch, FakeEntryPoint("broken", broken))
    plugins = get_plugins()
    plugins.collect()
    assert "missing_dependency" in plugins.info["broken"].error
    assert plugins.task("classification")


def test_duplicate_task_names_name_both_plugins(monkeypatch):
    monkeypatch.delenv("KIT_LOAD_PLUGINS")
    with_entry_points(monkeypatch, FakeEntryPoint("dupe", lambda: make_plugin("regression")))
    plugins = get_plugins()
    with pytest.raises(PluginError, match="'kit_plugins.regression' and 'dupe'"):
        plugins.task("regression")
    assert "both register a task named 'regression'" in plugins.info["dupe"].error
    assert plugins.task("classification")  # the others still work


def test_hook_raising_is_isolated(monkeypatch):
    monkeypatch.delenv("KIT_LOAD_PLUGINS")
    module = types.ModuleType("raising")

    @kit.hookimpl
    def register_tasks(register):
        raise RuntimeError("boom")

    module.register_tasks = register_tasks
    with_entry_points(monkeypatch, FakeEntryPoint("raising", lambda: module))
    plugins = get_plugins()
    plugins.collect()
    assert "register_tasks raised RuntimeError: boom" in plugins.info["raising"].error
    assert plugins.task("regression")


def test_registering_a_non_task_is_refused():
    plugins = Plugins()
    module = types.ModuleType("bad")

    @kit.hookimpl
    def register_tasks(register):
        register(object)

    module.register_tasks = register_tasks
    plugins.pm.register(module, name="bad")
    plugins.info["bad"] = __import__("kit.plugins", fromlist=["PluginInfo"]).PluginInfo("bad", "test")
    plugins.collect()
    assert "must be a subclass of kit.Task" in plugins.info["bad"].error


def test_unknown_task_lists_known():
    with pytest.raises(
        PluginError, match="Unknown task 'clasification'. Known: classification, generation, regression"
    ):
        get_plugins().task("clasification")


def test_project_plugin_file(tmp_path):
    (tmp_path / "my_plugin.py").write_text(
        "import kit\n"
        "class Local(kit.Task):\n    name = 'local'\n    description = 'x'\n"
        "@kit.hookimpl\ndef register_tasks(register):\n    register(Local)\n"
    )
    plugins = get_plugins()
    plugins.load_project_plugins(["my_plugin.py"], tmp_path)
    assert plugins.task("local").plugin == "my_plugin.py"


def test_project_plugin_import_error_names_it(tmp_path):
    (tmp_path / "bad_plugin.py").write_text("import does_not_exist\n")
    with pytest.raises(PluginError, match="Project plugin 'bad_plugin.py'.*failed to import.*does_not_exist"):
        get_plugins().load_project_plugins(["bad_plugin.py"], tmp_path)
    with pytest.raises(PluginError, match="does not exist"):
        get_plugins().load_project_plugins(["nope.py"], tmp_path)
    sys.modules.pop("kit_project_plugin_bad_plugin", None)


def test_entry_point_scan_is_cached_until_an_install_changes_sys_path(tmp_path, monkeypatch):
    from kit import entry_points as eps

    site = tmp_path / "site"
    (site / "cached_plugin").mkdir(parents=True)
    (site / "cached_plugin" / "__init__.py").write_text("VALUE = 'loaded'\n")
    dist = site / "kit_cached-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kit-cached\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[kit]\ncached = cached_plugin:VALUE\n")
    monkeypatch.syspath_prepend(str(site))

    first = eps.entry_points("kit")
    assert [(ep.name, ep.package, ep.version) for ep in first] == [("cached", "kit-cached", "1.0")]

    def no_scan(group):
        raise AssertionError("scanned again although nothing was installed")

    real_scan = eps._scan
    monkeypatch.setattr(eps, "_scan", no_scan)
    cached = eps.entry_points("kit")
    assert cached[0].scanned is None and cached[0].load() == "loaded"  # loaded by name, from the cache

    # Installing another distribution changes the folder's time: the cache is stale.
    monkeypatch.setattr(eps, "_scan", real_scan)
    other = site / "kit_other-2.0.dist-info"
    other.mkdir()
    (other / "METADATA").write_text("Metadata-Version: 2.1\nName: kit-other\nVersion: 2.0\n")
    (other / "entry_points.txt").write_text("[kit]\nother = cached_plugin\n")
    os.utime(site, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert sorted(ep.name for ep in eps.entry_points("kit")) == ["cached", "other"]


def test_damaged_entry_point_cache_means_a_fresh_scan(monkeypatch):
    from kit import entry_points as eps
    from kit.cache import cache_dir

    eps.entry_points("kit")
    for cache_file in (cache_dir() / "entry-points").glob("*.json"):
        cache_file.write_text("{not json")
    assert eps.entry_points("kit") == [ep for ep in eps._scan("kit")]


# ------------------------------------------------------------------ input kinds and backbone families


def plugin_module(name: str, **hooks) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook, function in hooks.items():
        setattr(module, hook, kit.hookimpl(function))
    return module


def test_builtins_register_input_kinds_and_backbone_families():
    plugins = get_plugins()
    plugins.collect()
    assert {"text", "text_pair", "tokens", "tabular", "image", "causal_text"} <= set(plugins.input_kinds.names())
    assert {"bert", "roberta", "pretrained-text", "mlp", "cnn", "pretrained-image", "gpt"} <= set(
        plugins.backbones.names()
    )
    assert plugins.backbone_origins()["bert-tiny"] == "kit_plugins.backbones.bert"
    assert plugins.backbone_origins()["gpt-tiny"] == "kit_plugins.generation"


def test_a_backbone_name_claimed_twice_names_both_plugins(monkeypatch):
    monkeypatch.delenv("KIT_LOAD_PLUGINS")

    class Clash(kit.Backbone):
        name = "clash"
        input_kinds = ("text",)
        sizes = {"bert-tiny": {}}

    module = plugin_module("clashing", register_backbones=lambda register: register(Clash))
    with_entry_points(monkeypatch, FakeEntryPoint("clashing", lambda: module))
    plugins = get_plugins()
    plugins.collect()
    assert (
        "'kit_plugins.backbones.bert' and 'clashing' both register a backbone named 'bert-tiny'"
        in plugins.info["clashing"].error
    )
    assert plugins.backbone_origins()["bert-small"] == "kit_plugins.backbones.bert"  # the built-in keeps working


@pytest.mark.parametrize(
    "hook, registered, message",
    [
        ("register_input_kinds", object, "must subclass kit.InputKind"),
        ("register_backbones", dict, "must subclass kit.Backbone"),
        ("register_backbones", type("NoKinds", (kit.Backbone,), {"name": "nokinds"}), "must list its input_kinds"),
        ("register_input_kinds", type("Nameless", (kit.InputKind,), {}), "without a `name`"),
    ],
)
def test_bad_registrations_are_refused_with_the_plugin_named(hook, registered, message):
    plugins = Plugins()
    plugins.add_plugin(plugin_module("bad", **{hook: lambda register: register(registered)}), "bad", "test")
    plugins.collect()
    assert message in plugins.info["bad"].error


def test_unknown_backbone_lists_the_built_in_names_with_their_plugins(tmp_path):
    from kit.config import build_config

    with pytest.raises(kit.ConfigError) as error:
        build_config({"task": "classification", "data": {"train": "x.csv"}, "model": {"backbone": "bert-tinny"}})
    message = str(error.value)
    assert "Did you mean 'bert-tiny'?" in message
    assert "bert-small (kit_plugins.backbones.bert)" in message and "gpt-tiny (kit_plugins.generation)" in message


def test_a_family_that_does_not_build_the_kind_says_what_does():
    from kit.references import BackboneRef

    plugins = get_plugins()
    with pytest.raises(kit.ConfigError, match="builds tabular inputs, not text. Backbones for text inputs: bert-small"):
        plugins.backbone_for(BackboneRef("mlp", "name", name="mlp"), "text")


def test_two_families_loading_one_folder_is_refused(tmp_path):
    from kit.references import BackboneRef

    class Greedy(kit.Backbone):
        name = "greedy"
        input_kinds = ("text",)

        @classmethod
        def accepts(cls, reference):
            return True

    plugins = get_plugins()
    plugins.add_plugin(plugin_module("greedy", register_backbones=lambda register: register(Greedy)), "greedy", "test")
    with pytest.raises(PluginError, match="'pretrained-text' .* and 'greedy' .* both load"):
        plugins.backbone_for(BackboneRef(str(tmp_path), "folder", path=tmp_path), "text")
