"""`kit export`: a trained run in a format other programs load, checked the way a user would load it.

Formats (one module each): `keras` (model.keras answering in the user's terms),
`saved_model` (TensorFlow Serving, raw features in), `preset` (keras-hub
`from_preset`), `tflite` (LiteRT, float or quantised) and `huggingface`
(`transformers` folders). A task may write a format its own way
(`Task.exporter`): the generation plugin serves prompts and sampler settings.

Every export is written into a temporary folder, then loaded in a fresh Python
process that cannot import kit, with only the libraries its `export.json`
names under "requires", by the code its README shows; what that process
computes must match what `kit predict` (or `kit generate`) gives on examples
of the run's data. Only then is the folder renamed into place: a failed or
interrupted export leaves nothing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from kit.errors import ModelError, UsageError
from kit.exports.base import Exporter, Job, kit_outputs, served_head
from kit.exports.fresh import imports
from kit.exports.tokenizers import pin_keras_archive_tokenizers, pin_preset_tokenizers
from kit.inference import TrainedModel
from kit.outputs import check_export_destination, folder_replaced_when_complete, shown

FORMATS = ("keras", "saved_model", "preset", "tflite", "huggingface")
QUANTIZE = ("none", "dynamic", "int8")

__all__ = [
    "FORMATS",
    "QUANTIZE",
    "Exporter",
    "Job",
    "export",
    "export_sample",
    "find_exporter",
    "imports",
    "kit_outputs",
    "pin_keras_archive_tokenizers",
    "pin_preset_tokenizers",
    "served_head",
]


def export(trained: TrainedModel, fmt: str, destination: Path | None = None, quantize: str = "none") -> Path:
    """Export a trained run and check, in a fresh process, that the export answers as kit does.

    Args:
        trained: the run, loaded (`kit.inference.TrainedModel`).
        fmt: one of `FORMATS`.
        destination: the folder to create (default: RUN_DIR/export/FORMAT).
        quantize: TFLite only: none (float32), dynamic (int8 weights) or int8 (weights and activations,
            calibrated on training examples).

    Returns:
        The export folder, holding the model, export.json and a README.md saying how to load it.

    Example::

        from kit.inference import TrainedModel
        from kit.exports import export
        export(TrainedModel("runs/run-1"), "saved_model")
    """
    if quantize != "none" and fmt != "tflite":
        raise UsageError(f"--quantize applies to --format tflite only (not {fmt}); leave it out.")
    destination = destination or trained.run.export_dir(fmt if quantize == "none" else f"{fmt}-{quantize}")
    target = check_export_destination(destination, trained.run_dir)
    exporter = find_exporter(trained, fmt)
    exporter.refuse_early(trained)
    sample = export_sample(trained)
    made = _make_default_parent(trained, target)
    try:
        with folder_replaced_when_complete(target) as scratch:
            job = Job(trained, fmt, scratch, destination, sample, quantize)
            _write_checked(exporter, job)
    except BaseException:
        if made:
            shutil.rmtree(made, ignore_errors=True)
        raise
    return destination


def export_sample(trained: TrainedModel) -> dict[str, np.ndarray]:
    """The examples every export of `trained` is checked on (`sample_features`), read once per loaded run:
    exports of several formats then share kit's own answers on them (`kit_outputs`), which for a byte-pair
    tokenizer cost a trace of ~5 s and a first batch of ~3-5 s each time."""
    cached = getattr(trained, "_export_sample", None)
    if cached is None:
        cached = {k: np.asarray(v) for k, v in trained.sample_features().items()}
        trained._export_sample = cached
    return cached


def find_exporter(trained: TrainedModel, fmt: str) -> Exporter:
    """The task's own writer of `fmt` when it has one, else kit's."""
    own = trained.task.exporter(fmt)
    if own is not None:
        return own
    if fmt == "keras":
        from kit.exports.keras_format import KerasExporter

        return KerasExporter()
    if fmt == "saved_model":
        from kit.exports.saved_model import SavedModelExporter

        return SavedModelExporter()
    if fmt == "preset":
        from kit.exports.preset import PresetExporter

        return PresetExporter()
    if fmt == "tflite":
        from kit.exports.tflite import TFLiteExporter

        return TFLiteExporter()
    if fmt == "huggingface":
        from kit.exports.huggingface import HuggingFaceExporter

        return HuggingFaceExporter()
    raise UsageError(f"Unknown export format '{fmt}'. Choose one of: {', '.join(FORMATS)}.")


def _write_checked(exporter: Exporter, job: Job) -> None:
    """Write, load in a fresh process, compare, then record what was checked."""
    exporter.write(job)
    expected = exporter.expected(job)
    actual, timing = exporter.reload(job)
    _check_reproduced(expected, actual, job.destination, exporter.tolerance)
    job.record.update(exporter.report(job, timing))
    record = {
        "format": job.fmt,
        "checked_examples": job.checked_examples(expected),
        "check": "reloaded in a fresh Python process without kit; outputs compared with kit's",
        "run": str(job.trained.run_dir.resolve()),
        "run_status": job.trained.record.get("status"),
        "requires": job.requires,
        **job.record,
    }
    (job.folder / "export.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (job.folder / "README.md").write_text(exporter.readme(job, record), encoding="utf-8")


def _make_default_parent(trained: TrainedModel, target: Path) -> Path | None:
    """Create RUN_DIR/export for the default destination; return it when it was created here."""
    parent = trained.run.export_dir("x").parent.resolve()
    if target.parent != parent or parent.exists():
        return None
    parent.mkdir()
    return parent


def _check_reproduced(
    expected: dict[str, Any], actual: dict[str, Any], destination: Path, tolerance: tuple[float, float] = (1e-4, 1e-5)
) -> None:
    """Every output kit computed must come back from the reloaded export: numbers close (rtol, atol), strings equal."""
    for name, want in expected.items():
        got = actual.get(name)
        if got is None:
            raise ModelError(
                f"The exported model for {shown(destination)} does not give the output '{name}'; nothing was "
                f"written. Please report this as a bug."
            )
        want, got = np.asarray(want), np.asarray(got)
        if want.dtype.kind in "US" or got.dtype.kind in "US":
            if want.shape != got.shape or not np.array_equal(want.astype(str), got.astype(str)):
                raise ModelError(
                    f"The exported model for {shown(destination)} does not reproduce the run's '{name}' outputs; "
                    f"nothing was written. Please report this as a bug."
                )
            continue
        if want.shape != got.shape or not np.allclose(want, got, *tolerance):
            diff = float(np.max(np.abs(want - got))) if want.shape == got.shape else f"shape {got.shape}"
            raise ModelError(
                f"The exported model for {shown(destination)} does not reproduce the run's predictions ('{name}', "
                f"max diff {diff}); nothing was written. Please report this as a bug."
            )
