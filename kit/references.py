"""`model.backbone` parsed once, when the config is loaded, into a typed `BackboneRef`.

A reference is one of:

- `auto`: the input kind's default backbone (bert-tiny for text, mlp for tables...);
- a built-in **name** a backbone family registered (`bert-tiny`, `gpt-small`, `cnn`...);
- a **folder**: a keras-hub preset or a Hugging Face model folder;
- a **run**: a kit run directory, meaning the backbone preset it saved (`model/preset/`);
- a **file**: a single-file model such as a llama.cpp `.gguf`;
- a **preset** name or handle for keras-hub to download (`bert_tiny_en_uncased`, `hf://...`,
  `kaggle://...`): needs the network.

Which family loads a folder, run, file or preset is decided later, by asking each
registered family whether it `accepts` the reference (and builds the input kind
the task needs). No TensorFlow here.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit.errors import ConfigError
from kit.rundir import RunDir

HANDLE_PREFIXES = ("hf://", "kaggle://", "modelscope://")
# keras-hub preset names: lower case with underscores (bert_tiny_en_uncased, gemma2_2b_en).
PRESET_NAME = re.compile(r"^[a-z0-9][a-z0-9._]*_[a-z0-9._]+$")
RUN_BUNDLE = Path(RunDir.MODEL) / RunDir.BUNDLE
RUN_PRESET = Path(RunDir.MODEL) / RunDir.PRESET
FORMS = ("auto", "name", "folder", "run", "file", "preset")


@dataclass(frozen=True)
class BackboneRef:
    """A parsed `model.backbone`.

    Attributes:
        text: the value as written in kit.yaml.
        form: one of auto, name, folder, run, file, preset (see the module docstring).
        name: the built-in name (form `name`).
        path: the absolute path (forms folder, run, file).
    """

    text: str
    form: str
    name: str | None = None
    path: Path | None = None

    @property
    def pretrained(self) -> bool:
        """True when the backbone comes with trained weights (everything but auto and built-in names)."""
        return self.form not in ("auto", "name")

    def location(self) -> str:
        """What keras-hub's `from_preset` is given: a folder (a run's saved preset), a file, or the handle."""
        if self.form == "run":
            return str(self.path / RUN_PRESET)
        return str(self.path) if self.path is not None else self.text

    def manifest(self) -> dict[str, Any]:
        """The model folder's `config.json` (keras-hub or Hugging Face), or {} when there is none."""
        if self.form not in ("folder", "run"):
            return {}
        return _read_manifest(Path(self.location()) / "config.json")

    def model_type(self) -> str:
        """What the folder holds, in the words of its config: a Hugging Face `model_type`
        (`bert`, `roberta`, `vit`...) or a keras-hub class (`BertBackbone`...); "" when unknown."""
        manifest = self.manifest()
        return str(manifest.get("model_type") or manifest.get("class_name") or "")

    def __str__(self) -> str:
        return self.text


@functools.lru_cache(maxsize=64)
def _read_manifest_cached(path: str, mtime: float) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        return _read_manifest_cached(str(path), path.stat().st_mtime)
    except OSError:
        return {}


def parse_reference(text: str, project_dir: Path, names: dict[str, str]) -> BackboneRef:
    """Parse `model.backbone`.

    Args:
        text: the value from kit.yaml.
        project_dir: relative paths are relative to the project.
        names: every built-in backbone name, with the plugin that registered it (for messages).

    Raises:
        ConfigError: a path that does not exist, or a name that is nothing kit knows,
            listing the built-in names and their plugins.
    """
    if text == "auto":
        return BackboneRef(text, "auto")
    if text in names:
        return BackboneRef(text, "name", name=text)
    if text.startswith(HANDLE_PREFIXES):
        return BackboneRef(text, "preset")
    path = Path(text).expanduser()
    path = path if path.is_absolute() else project_dir / path
    if path.exists():
        return _local(text, path.resolve())
    if _looks_like_path(text):
        raise ConfigError(
            f"model.backbone: {path} does not exist. Point it at a model folder (a keras-hub preset or a Hugging "
            f"Face folder), a kit run directory, a .gguf file, or use a built-in name: {_listing(names)}."
        )
    if PRESET_NAME.match(text):
        return BackboneRef(text, "preset")
    raise ConfigError(
        f"model.backbone '{text}' is not a built-in backbone, an existing folder or file, or a keras-hub preset "
        f"name.{_did_you_mean(text, names)} Built-in backbones: {_listing(names)}. See `kit backbones`."
    )


def _local(text: str, path: Path) -> BackboneRef:
    if path.is_dir():
        form = "run" if (path / RUN_BUNDLE).is_file() else "folder"
        return BackboneRef(text, form, path=path)
    if path.is_file():
        return BackboneRef(text, "file", path=path)
    raise ConfigError(f"model.backbone: {path} is neither a folder nor a regular file.")


def _looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or text.startswith((".", "~")) or bool(Path(text).suffix.lower() == ".gguf")


def _listing(names: dict[str, str]) -> str:
    return ", ".join(f"{name} ({plugin})" for name, plugin in sorted(names.items())) or "none"


def _did_you_mean(text: str, names: dict[str, str]) -> str:
    import difflib

    close = difflib.get_close_matches(text, list(names), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""
