"""Finding plugins' entry points, cached so that light commands start fast.

`importlib.metadata` is the source of truth, but importing it costs about
30 ms (it pulls in the `email` package) and a scan reads every installed
distribution: together more than half of `kit --help`. So the scan's result is
kept in `$KIT_CACHE_DIR/entry-points/` (default `~/.cache/kit`), one file per
interpreter, stamped with a fingerprint of `sys.path`: each entry and its
modification time (except the working folder, which `python -m kit` puts on
the path and every run writes into). Installing, upgrading or removing a distribution adds or
removes a `*.dist-info` folder, which changes its `site-packages` folder's
time, so the next start scans again (the approach stevedore takes). Anything
wrong with the cache (unreadable, unwritable, stale) only means a fresh scan.
`KIT_REFRESH_PLUGINS=1` forces one.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import zlib
from dataclasses import dataclass
from typing import Any

from kit.cache import read_json, write_json

CACHE_FORMAT = 1


@dataclass
class PluginEntryPoint:
    """One entry point of the `kit` group, from the cache or a fresh scan."""

    name: str
    value: str | None  # "module:attribute", as in entry_points.txt
    package: str | None  # the distribution that declares it
    version: str | None
    scanned: Any = None  # the importlib.metadata.EntryPoint, when freshly scanned

    def load(self) -> Any:
        if self.scanned is not None:
            return self.scanned.load()
        module_name, _, attribute = self.value.split("[", 1)[0].partition(":")
        loaded = importlib.import_module(module_name.strip())
        for part in filter(None, attribute.strip().split(".")):
            loaded = getattr(loaded, part)
        return loaded

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "package": self.package, "version": self.version}


def entry_points(group: str) -> list[PluginEntryPoint]:
    """The installed entry points of `group`, from the cache when it is current."""
    fingerprint = _fingerprint(group)
    cache_file = f"entry-points/{_interpreter_key()}.json"  # in kit's cache (`kit.cache`)
    if os.environ.get("KIT_REFRESH_PLUGINS") != "1":
        cached = _read(cache_file, fingerprint)
        if cached is not None:
            return cached
    found = _scan(group)
    if all(ep.value for ep in found):  # only real entry points can be loaded again by name
        # A read-only home only costs the next start a scan.
        write_json(cache_file, {"fingerprint": fingerprint, "entry_points": [ep.as_dict() for ep in found]})
    return found


def _scan(group: str) -> list[PluginEntryPoint]:
    import importlib.metadata  # the slow import this module exists to avoid

    found = []
    for ep in importlib.metadata.entry_points(group=group):
        dist = getattr(ep, "dist", None)
        package = dist.name if dist else None
        version = dist.version if dist else None
        found.append(PluginEntryPoint(ep.name, getattr(ep, "value", None), package, version, scanned=ep))
    return found


def _fingerprint(group: str) -> str:
    parts = [CACHE_FORMAT, group, sys.version]
    working_dir = os.getcwd()
    for entry in sys.path:
        if os.path.abspath(entry or ".") == working_dir:
            continue  # `python -m kit` puts the project folder here; its time changes with every run
        try:
            parts.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            parts.append((entry, None))
    return json.dumps(parts)


def _interpreter_key() -> str:
    return f"{zlib.crc32(f'{sys.executable}|{sys.prefix}'.encode()):08x}"  # zlib: hashlib costs 3 ms to import


def _read(cache_file: str, fingerprint: str) -> list[PluginEntryPoint] | None:
    content = read_json(cache_file)
    try:
        if content["fingerprint"] != fingerprint:
            return None
        return [PluginEntryPoint(**item) for item in content["entry_points"]]
    except (KeyError, TypeError):
        return None
