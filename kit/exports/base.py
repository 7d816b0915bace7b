"""What every export format shares: the job it works on, the writer contract, kit's own answers to compare with."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kit.exports.fresh import run_fresh
from kit.inference import TrainedModel


@dataclass
class Job:
    """One export being written.

    Attributes:
        trained: the run. fmt: the format's name. folder: the temporary folder written into (renamed to
        `destination` once checked). sample: a batch of the run's own test examples (raw features by
        column). quantize: TFLite's setting. record: what the writer adds to export.json. requires: pip
        packages a user needs to load the export (export.json "requires").
    """

    trained: TrainedModel
    fmt: str
    folder: Path
    destination: Path
    sample: dict[str, np.ndarray]
    quantize: str = "none"
    record: dict[str, Any] = field(default_factory=dict)
    requires: list[str] = field(default_factory=list)

    def require(self, *packages: str) -> None:
        self.requires = sorted({*self.requires, *packages})

    def checked_examples(self, expected: dict[str, Any]) -> int:
        first = next(iter(expected.values()), np.zeros(0))
        return int(len(np.asarray(first)))


class Exporter:
    """Writes one export format and says how a user loads it.

    A writer implements `write` (files into `job.folder`) and `loader` (Python source
    defining `load(folder)` and `predict(model, inputs)`, using only the libraries in
    `job.requires`): kit runs that very code in a fresh process on `check_inputs` and
    compares its outputs with `expected` (default: kit's served outputs on the sample).
    """

    description = ""
    tolerance: tuple[float, float] = (1e-4, 1e-5)  # rtol, atol of the reload check

    def refuse_early(self, trained: TrainedModel) -> None:
        """Raise a `KitError` before any work when this format cannot hold the run (default: it can)."""

    def write(self, job: Job) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement write()")

    def loader(self, job: Job) -> str:
        raise NotImplementedError(f"{type(self).__name__} must implement loader()")

    def check_inputs(self, job: Job) -> dict[str, np.ndarray]:
        """What the fresh process feeds `predict` (default: the raw sample features)."""
        return job.sample

    def expected(self, job: Job) -> dict[str, np.ndarray]:
        """What the reloaded export must give on `check_inputs` (default: kit's served outputs)."""
        raw = kit_outputs(job.trained, job.sample)
        return served_numpy(served_head(job.trained, raw), raw)

    def timing_rounds(self, job: Job) -> int:
        return 0

    def reload(self, job: Job) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return run_fresh(self.loader(job), job.folder, self.check_inputs(job), self.timing_rounds(job), job.destination)

    def report(self, job: Job, timing: dict[str, Any]) -> dict[str, Any]:
        """Extra export.json fields (sizes, latency...) once the check passed (default: the task's outputs)."""
        metadata = job.trained.task.export_metadata()
        return {"outputs": metadata} if metadata else {}

    def readme(self, job: Job, record: dict[str, Any]) -> str:
        """The folder's README.md: what it holds, what to install, the loading code kit ran."""
        install = " ".join(requirement_pin(p) for p in record["requires"])
        outputs = record.get("outputs")
        lines = [
            f"# {job.trained.run_dir.name}: {job.fmt} export of a `{job.trained.task.name}` run",
            "",
            self.description,
            "",
            f"Install: `pip install {install}`" if install else "",
            "",
            "Load and predict (kit ran exactly this code in a fresh Python process, without kit, to check this folder):",
            "",
            "```python",
            self.loader(job).strip(),
            "```",
            "",
        ]
        if outputs:
            lines += ["Outputs:", "", "```json", json.dumps(outputs, indent=2, ensure_ascii=False), "```", ""]
        lines += ["See export.json for what was checked; kit's docs/exports.md describes every format.", ""]
        return "\n".join(lines)


def requirement_pin(package: str) -> str:
    """`package==version` for installed packages, so the README names what the export was made with."""
    from importlib import metadata

    try:
        return f"{package}=={metadata.version(package)}"
    except metadata.PackageNotFoundError:
        return package


# ------------------------------------------------------------------ kit's own answers


def kit_outputs(trained: TrainedModel, features: dict[str, Any]) -> np.ndarray:
    """The model's raw outputs for a batch of raw features, computed as `kit predict` does.

    Each example is preprocessed on its own in tf.data (`backbone.preprocess`), then batched
    and run through model.keras: the path predictions take, which exports must reproduce.
    """
    import tensorflow as tf

    # An export asks for the outputs of its sample several times (its head, then the check): the answer is
    # kept for the last features dict, since each new tf.data map traces the tokenizer again (a byte-pair
    # tokenizer's trace is ~10 s, most of a RoBERTa export).
    cached = getattr(trained, "_kit_outputs", None)
    if cached is not None and cached[0] is features:
        return cached[1].copy()
    dataset = tf.data.Dataset.from_tensor_slices(dict(features)).map(trained.backbone.preprocess)
    batch = next(iter(dataset.batch(max(len(next(iter(features.values()))), 1))))
    outputs = trained.outputs_of(batch)
    trained._kit_outputs = (features, outputs)
    return outputs.copy()


def served_head(trained: TrainedModel, raw: np.ndarray) -> Any:
    """A `keras.Model` from raw outputs to the task's named served outputs (`Task.served_outputs`), built once."""
    import keras

    cached = getattr(trained, "_served_head", None)
    if cached is not None:
        return cached
    raw_input = keras.Input(shape=raw.shape[1:], dtype="float32", name="raw_outputs")
    head = keras.Model(raw_input, trained.task.served_outputs(raw_input), name="served_outputs")
    trained._served_head = head
    return head


def served_numpy(head: Any, raw: np.ndarray) -> dict[str, np.ndarray]:
    """The served outputs of `raw` as numpy (strings as str)."""
    return {name: as_numpy(value) for name, value in head(raw).items()}


def as_numpy(value: Any) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype == object or array.dtype.kind == "S":
        return np.vectorize(lambda v: v.decode("utf-8") if isinstance(v, bytes) else str(v), otypes=[str])(array)
    return array
