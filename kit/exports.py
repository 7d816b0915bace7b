"""`kit export`: a trained run as a Keras file, a TensorFlow SavedModel or a keras-hub preset, checked.

Every export is reloaded the way a user would load it and must give the
run's own outputs on a sample of its data.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from kit.errors import ModelError
from kit.inference import TrainedModel, load_keras_model
from kit.rundir import write_json_atomic


def keras_hub_backbone(model: Any) -> Any:
    """The keras-hub backbone inside `model`, or None (tabular and image CNN models have none)."""
    import keras_hub

    if isinstance(model, keras_hub.models.Task):
        return model.backbone
    found = [layer for layer in model.layers if isinstance(layer, keras_hub.models.Backbone)]
    return found[0] if found else None


def export(trained: TrainedModel, fmt: str, destination: Path | None) -> Path:
    """Export a trained model and check that the reloaded copy predicts the same."""
    destination = destination or trained.run.export_dir(fmt)
    if destination.exists() and any(destination.iterdir()):
        raise ModelError(
            f"{destination} already exists and is not empty; kit will not overwrite it. Pass --output DIR."
        )
    sample = trained.sample_features()
    expected = _served_outputs(trained, sample)
    if fmt == "preset":
        expected, actual = _export_preset(trained, sample, destination)
    elif fmt == "keras":
        shutil.copytree(trained.run.model_dir, destination, dirs_exist_ok=True)
        reloaded = TrainedModel.__new__(TrainedModel)
        reloaded.__dict__.update(trained.__dict__)
        reloaded.model = load_keras_model(destination / trained.run.model_file.name)
        actual = _served_outputs(reloaded, sample)
    else:
        actual = _export_saved_model(trained, sample, destination)
    if not np.allclose(expected, actual, rtol=1e-4, atol=1e-5):
        raise ModelError(
            f"The exported model in {destination} does not reproduce the run's predictions (max diff "
            f"{float(np.max(np.abs(expected - actual)))}). Please report this as a bug."
        )
    write_json_atomic(
        destination / "export.json",
        {"format": fmt, "checked_examples": int(len(expected)), "run": str(trained.run_dir)},
    )
    return destination


def _served_outputs(trained: TrainedModel, features: dict[str, Any]) -> np.ndarray:
    x = trained.backbone.preprocess_batch(features)
    return np.asarray(trained.task.postprocess(_plain_model(trained.model)(x, training=False)))


def _plain_model(model: Any) -> Any:
    """The model fed with preprocessed inputs (a keras-hub task without its preprocessor)."""
    if getattr(model, "preprocessor", None) is None:
        return model
    return type(model)(backbone=model.backbone, preprocessor=None)


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
        return np.asarray(_plain_model(model)(x)), np.asarray(_plain_model(reloaded)(x))
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

    inputs, model, task = trained.backbone, _plain_model(trained.model), trained.task
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
