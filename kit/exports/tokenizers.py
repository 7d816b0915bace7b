"""Exported keras-hub tokenizers split text as training did, in a user's plain keras-hub too.

keras-hub 0.32 tokenizes with a pure-Python path when called eagerly and with
a TensorFlow path inside `tf.function` and `tf.data`; byte-pair tokenizers
(GPT-2, RoBERTa, Llama 3...) cut runs of spaces differently on the two
(12 vs 11 tokens on indented text). kit trains in tf.data and makes its own
eager calls take the TensorFlow path (`kit.compat`). An export is loaded
without kit, so each tokenizer it holds is saved with keras-hub's own
`_allow_python_workflow: false` setting: keras-hub then takes the TensorFlow
path eagerly too, and a user's `preprocessor("text")` gives training's tokens.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

GRAPH_PATH = "_allow_python_workflow"  # keras-hub's PreprocessingLayer reads it from the config


def pin_tokenizer_configs(node: Any) -> int:
    """Set every serialised keras-hub tokenizer in a JSON tree to the TensorFlow path; return how many."""
    count = 0
    if isinstance(node, dict):
        name = node.get("class_name")
        if isinstance(name, str) and name.endswith("Tokenizer") and isinstance(node.get("config"), dict):
            node["config"][GRAPH_PATH] = False
            count += 1
        for value in node.values():
            count += pin_tokenizer_configs(value)
    elif isinstance(node, list):
        for value in node:
            count += pin_tokenizer_configs(value)
    return count


def pin_preset_tokenizers(folder: Path) -> int:
    """Pin the tokenizers of a keras-hub preset folder (tokenizer.json, preprocessor.json, task.json...)."""
    count = 0
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        found = pin_tokenizer_configs(data)
        if found:
            path.write_text(json.dumps(data, indent=4) + "\n", encoding="utf-8")
            count += found
    return count


def pin_keras_archive_tokenizers(path: Path) -> int:
    """Pin the tokenizers inside a .keras archive (its config.json), rewriting the archive."""
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
        count = pin_tokenizer_configs(config)
        if not count:
            return 0
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".keras", delete=False) as handle:
            rewritten = Path(handle.name)
        with zipfile.ZipFile(rewritten, "w", zipfile.ZIP_DEFLATED) as out:
            for item in archive.infolist():
                data = json.dumps(config).encode() if item.filename == "config.json" else archive.read(item)
                out.writestr(item, data)
    shutil.move(rewritten, path)
    return count
