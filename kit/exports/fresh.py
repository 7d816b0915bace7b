"""Loading an export in a fresh Python process that cannot import kit, the way a user of the folder would.

The check runs the very code the export's README shows (`load` and `predict`),
with only the libraries export.json names under "requires" imported, and
hands back what it computed. An export that needs kit, or a library its folder
does not name (a SavedModel using tensorflow-text ops), fails here, not at the user's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from kit.errors import ModelError
from kit.outputs import shown

# Python module of each pip package an export may require (what the fresh process imports).
MODULES = {
    "tensorflow": "tensorflow as tf",
    "tensorflow-text": "tensorflow_text",
    "keras": "keras",
    "keras-hub": "keras_hub",
}

_RUNNER = """
import sys
# The plain library only: anything that reaches for kit fails here.
sys.modules["kit"] = None
sys.modules["kit_plugins"] = None
import numpy as np

{code}

inputs = dict(np.load(sys.argv[2]))
model = load(sys.argv[1])
outputs = predict(model, inputs)
np.savez(sys.argv[3], **{{name: np.asarray(value) for name, value in outputs.items()}})
{timing}
"""

_TIMING = """
import json, time
one = {name: value[:1] for name, value in inputs.items()}
predict(model, one)  # warm-up
times = []
for _ in range(ROUNDS):
    start = time.perf_counter()
    predict(model, one)
    times.append(time.perf_counter() - start)
times.sort()
json.dump({"latency_ms_p50": 1000 * times[len(times) // 2], "rounds": ROUNDS}, open(sys.argv[4], "w"))
"""


def run_fresh(
    code: str, folder: Path, inputs: dict[str, np.ndarray], timing_rounds: int = 0, shown_as: Path | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Run an export's loader `code` (defining `load(folder)` and `predict(model, inputs)`) in a new process.

    Args:
        code: Python source; `predict` returns a dict of arrays (strings as str).
        folder: the export folder, passed to `load`.
        inputs: arrays fed to `predict` (numbers, or str arrays: no pickles cross the boundary).
        timing_rounds: when above 0, also time `predict` on one example that many times.
        shown_as: the folder's name in messages (the export's destination, not its temporary folder).

    Returns:
        (outputs by name, timing: {"latency_ms_p50", "rounds"} or {}).
    """
    import json

    with tempfile.TemporaryDirectory(prefix="kit-export-check-") as scratch:
        work = Path(scratch)
        np.savez(work / "inputs.npz", **{name: _portable(value) for name, value in inputs.items()})
        timing = _TIMING.replace("ROUNDS", str(timing_rounds)) if timing_rounds else ""
        (work / "check.py").write_text(_RUNNER.format(code=code, timing=timing), encoding="utf-8")
        args = [str(folder.resolve()), str(work / "inputs.npz"), str(work / "outputs.npz"), str(work / "timing.json")]
        completed = subprocess.run(
            [sys.executable, "-I", str(work / "check.py"), *args],
            cwd=work, env=_environment(), capture_output=True, text=True, check=False,
        )  # fmt: skip
        if completed.returncode != 0:
            raise ModelError(
                f"The export {shown(shown_as or folder)} does not load in a fresh Python process the way its README says "
                f"({_last_line(completed.stderr)}); nothing was written. Please report this as a bug."
            )
        with np.load(work / "outputs.npz") as saved:
            outputs = {name: saved[name] for name in saved.files}
        timed = json.loads((work / "timing.json").read_text()) if timing_rounds else {}
    return outputs, timed


def _portable(value: Any) -> np.ndarray:
    """An array np.load reads without pickles: bytes become str."""
    array = np.asarray(value)
    if array.dtype == object or array.dtype.kind == "S":
        return np.vectorize(lambda v: v.decode("utf-8") if isinstance(v, bytes) else str(v), otypes=[str])(array)
    return array


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _last_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no error message"


def imports(requires: list[str]) -> str:
    """`import` lines for the required packages (tensorflow-text registers the ops a SavedModel uses)."""
    lines = []
    for package in sorted(requires, key=lambda p: list(MODULES).index(p) if p in MODULES else len(MODULES)):
        module = MODULES.get(package)
        if module is not None:
            note = "  # registers the text ops the model uses" if package == "tensorflow-text" else ""
            lines.append(f"import {module}{note}")
    return "\n".join(lines)
