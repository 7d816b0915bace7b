"""`kit export`: a trained run as a Keras file, a TensorFlow SavedModel or a keras-hub preset, checked.

Every export is reloaded the way a user would load it and must give the
run's own outputs on a sample of its data.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from kit.errors import ModelError
from kit.inference import TrainedModel, load_keras_model, plain_model
from kit.outputs import check_export_destination, folder_replaced_when_complete, shown


def keras_hub_backbone(model: Any) -> Any:
    """The keras-hub backbone inside `model`, or None (tabular and image CNN models have none)."""
    import keras_hub

    if isinstance(model, keras_hub.models.Task):
        return model.backbone
    found = [layer for layer in model.layers if isinstance(layer, keras_hub.models.Backbone)]
    return found[0] if found else None


def export(trained: TrainedModel, fmt: str, destination: Path | None) -> Path:
    """Export a trained model and check that the reloaded copy predicts the same.

    The export is written into a temporary folder beside `destination`,
    checked, and renamed onto it: an interrupted or failed export leaves
    nothing, and the same command can simply be run again.
    """
    destination = destination or trained.run.export_dir(fmt)
    target = check_export_destination(destination, trained.run_dir)
    sample = trained.sample_features()
    made = _make_default_parent(trained, target)
    try:
        with folder_replaced_when_complete(target) as scratch:
            expected, actual = _write_export(trained, fmt, sample, scratch)
            _check_reproduced(expected, actual, destination)
            record = {"format": fmt, "checked_examples": int(len(expected)), "run": str(trained.run_dir)}
            record["run_status"] = trained.record.get("status")
            record["requires"] = sorted({"keras", *trained.backbone.export_requirements})
            (scratch / "export.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    except BaseException:
        if made:
            shutil.rmtree(made, ignore_errors=True)
        raise
    return destination


def _make_default_parent(trained: TrainedModel, target: Path) -> Path | None:
    """Create RUN_DIR/export for the default destination; return it when it was created here."""
    parent = trained.run.export_dir("x").parent.resolve()
    if target.parent != parent or parent.exists():
        return None
    parent.mkdir()
    return parent


def _write_export(trained: TrainedModel, fmt: str, sample: dict[str, Any], folder: Path) -> tuple[Any, Any]:
    """Write the export into `folder`; return (the run's outputs, the reloaded export's outputs) on `sample`."""
    if fmt == "preset":
        return _export_preset(trained, sample, folder)
    expected = _served_outputs(trained, sample)
    if fmt == "keras":
        shutil.copytree(trained.run.model_dir, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.tmp*"))
        reloaded = TrainedModel.__new__(TrainedModel)
        reloaded.__dict__.update(trained.__dict__)
        reloaded.model = load_keras_model(folder / trained.run.MODEL_FILE)
        return expected, _served_outputs(reloaded, sample)
    return expected, _export_saved_model(trained, sample, folder)


def _check_reproduced(expected: Any, actual: Any, destination: Path) -> None:
    if not np.allclose(expected, actual, rtol=1e-4, atol=1e-5):
        raise ModelError(
            f"The exported model for {shown(destination)} does not reproduce the run's predictions (max diff "
            f"{float(np.max(np.abs(expected - actual)))}); nothing was written. Please report this as a bug."
        )


def _served_outputs(trained: TrainedModel, features: dict[str, Any]) -> np.ndarray:
    x = trained.backbone.preprocess_batch(features)
    return np.asarray(trained.task.postprocess(plain_model(trained.model)(x, training=False)))


def _export_preset(trained: TrainedModel, sample: dict[str, Any], destination: Path) -> tuple[np.ndarray, np.ndarray]:
    """Write a keras-hub preset; return (run's outputs, reloaded preset's outputs) on `sample`.

    A generation run's whole causal LM (with its tokenizer) becomes the preset;
    for other text runs it is the fine-tuned backbone and preprocessor (the
    task head is kit's, not a keras-hub class), compared on backbone outputs.
    """
    import keras_hub

    model = trained.model
    x = trained.backbone.preprocess_batch(sample)
    if isinstance(model, keras_hub.models.Task):
        model.save_to_preset(str(destination))
        reloaded = type(model).from_preset(str(destination))
        return np.asarray(plain_model(model)(x)), np.asarray(plain_model(reloaded)(x))
    backbone = keras_hub_backbone(model)
    if backbone is None:
        raise ModelError(
            f"The {trained.kind.name} model of {trained.run_dir} has no keras-hub backbone, so there is no preset "
            f"to write. Use --format keras or --format saved_model."
        )
    backbone.save_to_preset(str(destination))
    trained.backbone.preprocessor.save_to_preset(str(destination))
    reloaded = keras_hub.models.Backbone.from_preset(str(destination))
    features = {name: x[name] for name in backbone.input}
    return _first_output(backbone(features)), _first_output(reloaded(features))


def _first_output(outputs: Any) -> np.ndarray:
    if isinstance(outputs, dict):
        outputs = outputs.get("sequence_output", next(iter(outputs.values())))
    return np.asarray(outputs)


def _export_saved_model(trained: TrainedModel, sample: dict[str, Any], destination: Path) -> np.ndarray:
    import tensorflow as tf

    inputs, model, task = trained.backbone, plain_model(trained.model), trained.task
    signature = {k: tf.TensorSpec([None, *v.shape[1:]], v.dtype, name=k.replace(" ", "_")) for k, v in sample.items()}

    class Serving(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.preprocessor = getattr(inputs, "preprocessor", None)

        @tf.function(input_signature=[signature])
        def serve(self, features: dict[str, Any]) -> dict[str, Any]:
            x = inputs.preprocess_batch(features)
            return {"outputs": task.postprocess(self.model(x, training=False))}

    module = Serving()
    tf.saved_model.save(module, str(destination), signatures={"serving_default": module.serve})
    if "tensorflow-text" in inputs.export_requirements:
        import tensorflow_text  # noqa: F401  registers the tokenizer ops the SavedModel uses
    reloaded = tf.saved_model.load(str(destination))
    return np.asarray(
        reloaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in sample.items()})["outputs"]
    )
