"""`--format tflite`: a LiteRT (TensorFlow Lite) model, float32 or quantised, with its size, latency and metric change.

TensorFlow's own `TFLiteConverter` converts the model and the task's numeric
served outputs (probabilities, numbers in the data's units) plus the raw
outputs as `raw`; label names are in export.json (TFLite has no string outputs
here). `--quantize dynamic` stores weights as int8; `--quantize int8` also
runs activations in int8, calibrated on training examples (inputs and
outputs stay float). Tables (MLP) and images (CNN) convert whole; text models
take token ids (`token_ids`, `padding_mask`...): tokenise with the keras-hub
preprocessor in `preprocessor/` first. Generation runs are refused.

Each export reports its file size, latency on one example (in the fresh
process that checks it) and every test metric next to the run's own.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from kit.errors import ModelError
from kit.exports.base import Exporter, Job, kit_outputs, served_head
from kit.exports.fresh import imports
from kit.exports.keras_format import TEXT_KINDS, takes_raw_features
from kit.exports.saved_model import signature_name
from kit.exports.tokenizers import pin_preset_tokenizers
from kit.inference import TrainedModel, plain_model
from kit.text import PREPROCESSOR_DIR

MODEL_FILE = "model.tflite"
TEST_EXAMPLES = 2000  # test rows scored by both models for the metric change (enough for a stable figure)
CALIBRATION_EXAMPLES = 200  # training rows that calibrate full-int8 activation ranges
LATENCY_ROUNDS = 200

LOADER = """
{imports}
from pathlib import Path

import numpy as np

INPUTS = {inputs!r}  # model input -> the signature's input name
TEXT_COLUMNS = {text_columns!r}  # texts tokenised by preprocessor/ first (empty: inputs go in as they are)


def load(folder):
    interpreter = tf.lite.Interpreter(model_path=str(Path(folder) / "model.tflite"))  # or ai_edge_litert's
    preprocessor = None
    if TEXT_COLUMNS:
        preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(str(Path(folder) / "preprocessor"))
    return interpreter.get_signature_runner("serving_default"), preprocessor


def _tokenized(preprocessor, texts):
    packed = preprocessor(x=texts[0] if len(texts) == 1 else tuple(texts))  # a pair of texts: a tuple
    return packed[0] if isinstance(packed, tuple) else packed


def predict(loaded, inputs):
    run, preprocessor = loaded
    if preprocessor is not None:
        texts = [inputs[column] for column in TEXT_COLUMNS]
        inputs = {{k: np.asarray(v) for k, v in _tokenized(preprocessor, texts).items()}}
    fed = {{INPUTS[name]: _typed(value) for name, value in inputs.items() if name in INPUTS}}
    return run(**fed)


def _typed(value):
    value = np.asarray(value)
    if value.dtype.kind in "USO":
        return value.astype(bytes)
    if value.dtype.kind == "b":
        return value
    return value.astype(np.int32) if value.dtype.kind in "iu" else value.astype(np.float32)
"""


class TFLiteExporter(Exporter):
    description = (
        "A LiteRT (TensorFlow Lite) model, `model.tflite`, with one signature, `serving_default`: the task's "
        "numeric outputs and `raw` (label names are in export.json). Run it with `tf.lite.Interpreter` or "
        "`ai_edge_litert.interpreter.Interpreter`."
    )

    def refuse_early(self, trained: TrainedModel) -> None:
        if trained.kind.name not in (*TEXT_KINDS, "tabular", "image") and not takes_raw_features(trained.backbone):
            raise ModelError(
                f"--format tflite takes tables, images and texts (tokenised outside the model); the "
                f"'{trained.kind.name}' inputs of {trained.run_dir} are prepared by kit's own preprocessing, which "
                f"LiteRT cannot run. Use --format saved_model."
            )

    @property
    def tolerance(self) -> tuple[float, float]:  # type: ignore[override]
        return (1e-3, 1e-4)  # LiteRT's float kernels sum in other orders than TensorFlow's

    def write(self, job: Job) -> None:
        trained = job.trained
        head = served_head(trained, kit_outputs(trained, job.sample))
        model_inputs = self.model_inputs(job, job.sample)
        job.record["inputs"] = {name: signature_name(name) for name in model_inputs}
        content = convert(trained, plain_model(trained.model), head, model_inputs, job)
        (job.folder / MODEL_FILE).write_bytes(content)
        job.require("tensorflow")
        if self.tokenizes(job):
            shutil.copytree(trained.folder / PREPROCESSOR_DIR, job.folder / "preprocessor")
            pin_preset_tokenizers(job.folder / "preprocessor")
            job.require("keras-hub", *trained.backbone.export_requirements)
        job.record["quantize"] = job.quantize

    def tokenizes(self, job: Job) -> bool:
        return job.trained.kind.name in TEXT_KINDS and (job.trained.folder / PREPROCESSOR_DIR).is_dir()

    def model_inputs(self, job: Job, features: dict[str, Any]) -> dict[str, np.ndarray]:
        """What the TFLite model takes: raw columns for tables, else kit's preprocessed inputs."""
        if takes_raw_features(job.trained.backbone):
            return {k: np.asarray(v) for k, v in features.items()}
        return {k: np.asarray(v) for k, v in job.trained.backbone.preprocess_batch(features).items()}

    def check_inputs(self, job: Job) -> dict[str, np.ndarray]:
        return job.sample if self.tokenizes(job) else self.model_inputs(job, job.sample)

    def expected(self, job: Job) -> dict[str, np.ndarray]:
        if job.quantize != "none":  # quantised answers differ by design: the check is that it loads and runs
            return run_interpreter(job.folder / MODEL_FILE, self.model_inputs(job, job.sample), job.record["inputs"])
        raw = kit_outputs(job.trained, job.sample)
        served = {k: v for k, v in _numeric(served_head(job.trained, raw)(raw)).items()}
        return {**served, "raw": raw}

    def timing_rounds(self, job: Job) -> int:
        return LATENCY_ROUNDS

    def loader(self, job: Job) -> str:
        text_columns = job.trained.kind.columns() if self.tokenizes(job) else []
        return LOADER.format(imports=imports(job.requires), inputs=job.record["inputs"], text_columns=text_columns)

    def report(self, job: Job, timing: dict[str, Any]) -> dict[str, Any]:
        size = (job.folder / MODEL_FILE).stat().st_size
        measured = {"size_bytes": size, "latency_ms_one_example": round(timing["latency_ms_p50"], 3)}
        change = metric_change(job)
        measured.update(change)
        report = {**super().report(job, timing), "measured": measured}
        report["notes"] = [
            f"{MODEL_FILE}: {size / 1e6:.3f} MB, {timing['latency_ms_p50']:.3f} ms per example (median of "
            f"{timing['rounds']}, batch of one, in a fresh process)",
            *change_lines(change),
        ]
        return report


# ------------------------------------------------------------------ converting


def convert(trained: TrainedModel, model: Any, head: Any, inputs: dict[str, np.ndarray], job: Job) -> bytes:
    """The model and the numeric served outputs as TFLite bytes, through a temporary SavedModel signature."""
    import keras
    import tensorflow as tf

    names = job.record["inputs"]
    spec = {k: tf.TensorSpec([None, *v.shape[1:]], _tf_dtype(v), name=names[k]) for k, v in inputs.items()}

    def serve(features: dict[str, Any]) -> dict[str, Any]:
        raw = model(features, training=False)
        return {**_numeric(head(raw)), "raw": raw}

    # Keras's ExportArchive, not a bare tf.Module: the converter then freezes Keras 3 variables into constants
    # (from a tf.Module it keeps them as resource variables LiteRT leaves uninitialised: NaN outputs).
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(head)
    archive.add_endpoint("serving_default", serve, input_signature=[spec])
    with tempfile.TemporaryDirectory(prefix="kit-tflite-") as scratch:
        archive.write_out(scratch, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(scratch)
        quantize(converter, job)
        try:
            return converter.convert()
        except Exception as exc:  # noqa: BLE001  the converter's own error says which op
            raise ModelError(
                f"TensorFlow's TFLite converter cannot convert the {trained.backbone.name} model of "
                f"{trained.run_dir} ({' '.join(str(exc).split())[:200]}). Use --format saved_model."
            ) from None


def quantize(converter: Any, job: Job) -> None:
    import tensorflow as tf

    if job.quantize == "none":
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if job.quantize == "int8":
        converter.representative_dataset = lambda: calibration(job)
        # int8 kernels wherever LiteRT has them; lookups of categories and the like stay as they are
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]


def calibration(job: Job) -> Any:
    """Training examples, one at a time, as the model takes them: int8 ranges come from real data."""
    features = split_features(job.trained, "train", CALIBRATION_EXAMPLES)[0]
    inputs = TFLiteExporter().model_inputs(job, features)
    names = job.record["inputs"]
    count = len(next(iter(inputs.values())))
    for i in range(count):
        yield {names[k]: _tf_ready(v[i : i + 1]) for k, v in inputs.items()}


def _numeric(outputs: dict[str, Any]) -> dict[str, Any]:
    """The served outputs TFLite can give: numbers (label names live in export.json)."""
    return {k: v for k, v in outputs.items() if getattr(v, "dtype", None) is not None and "string" not in str(v.dtype)}


def _tf_dtype(value: np.ndarray) -> Any:
    import tensorflow as tf

    if value.dtype.kind in "USO":
        return tf.string
    return tf.int32 if value.dtype.kind in "iu" else tf.bool if value.dtype.kind == "b" else tf.float32


def _tf_ready(value: np.ndarray) -> Any:
    if value.dtype.kind in "USO":
        return np.asarray(value).astype(bytes)
    return value.astype(np.int32) if value.dtype.kind in "iu" else value


# ------------------------------------------------------------------ measuring


def run_interpreter(path: Path, inputs: dict[str, np.ndarray], names: dict[str, str]) -> dict[str, np.ndarray]:
    """The TFLite model's outputs for a batch, in this process (kit's own interpreter run)."""
    import tensorflow as tf

    with warnings.catch_warnings():  # "moves to ai-edge-litert": TensorFlow's own still runs it, the same way
        warnings.simplefilter("ignore", UserWarning)
        runner = tf.lite.Interpreter(model_path=str(path)).get_signature_runner("serving_default")
    outputs: dict[str, list[np.ndarray]] = {}
    count = len(next(iter(inputs.values())))
    for start in range(0, count, 64):
        batch = {names[k]: _tf_ready(np.asarray(v[start : start + 64])) for k, v in inputs.items()}
        for name, value in runner(**batch).items():
            outputs.setdefault(name, []).append(np.asarray(value))
    return {name: np.concatenate(parts) for name, parts in outputs.items()}


def split_features(trained: TrainedModel, split: str, limit: int) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Up to `limit` examples of one split of the run's data: (raw features, encoded targets)."""
    from kit.assembly import data_plan
    from kit.data.pipeline import examples
    from kit.data.plan import scan

    plan = data_plan(trained.config)
    split = split if split in plan.splits() else plan.splits()[-1]
    scan(plan, trained.kind.fields + trained.task.fields, "skip", learn=False)  # as sample_features: bad rows left out
    stream = examples(plan, split, trained.kind.fields, trained.task.fields)
    batch = next(iter(stream.batch(limit)))
    x, y = batch if isinstance(batch, tuple) else (batch, None)
    targets = None if y is None else np.asarray(next(iter(y.values())) if isinstance(y, dict) else y)
    return {k: np.asarray(v) for k, v in x.items()}, targets


def metric_change(job: Job) -> dict[str, Any]:
    """Every test metric of the TFLite model next to the run's own model, on the same test examples."""
    trained = job.trained
    try:
        features, targets = split_features(trained, "test", TEST_EXAMPLES)
    except Exception:  # noqa: BLE001  a run sent without its data: sizes and latency still stand
        return {"metrics": "not measured: the run's test data cannot be read here"}
    start = time.perf_counter()
    lite = run_interpreter(job.folder / MODEL_FILE, TFLiteExporter().model_inputs(job, features), job.record["inputs"])
    seconds = time.perf_counter() - start
    ours = trained.task.evaluate(targets, kit_outputs(trained, features))
    theirs = trained.task.evaluate(targets, lite["raw"])
    return {
        "test_examples": int(len(targets)),
        "test_metrics_keras": {k: round(float(v), 6) for k, v in ours.items()},
        "test_metrics_tflite": {k: round(float(v), 6) for k, v in theirs.items()},
        "tflite_seconds_for_test_examples": round(seconds, 3),
    }


def change_lines(change: dict[str, Any]) -> list[str]:
    if "test_metrics_keras" not in change:
        return [f"test metrics {change.get('metrics', 'not measured')}"]
    ours, theirs = change["test_metrics_keras"], change["test_metrics_tflite"]
    shown = ", ".join(f"{k} {ours[k]:.4g} -> {theirs[k]:.4g}" for k in ours if k in theirs)
    return [f"test metrics on {change['test_examples']} examples, run's model -> TFLite: {shown}"]
