"""`--format preset`: a keras-hub preset of the whole task where keras-hub has its class, else of the backbone.

A text classifier whose head keras-hub's own `TextClassifier` for that backbone
reproduces (BERT-style pooled output, dropout, one dense layer: kit's `bert-*`
classifiers) becomes that class with kit's trained head copied in, so
`keras_hub.models.TextClassifier.from_preset(folder)` gives the trained model;
the label names are in `labels.json`. Heads keras-hub has no class for (mean
pooling, regression, token tagging) cannot be represented: the preset then
holds the fine-tuned backbone and its preprocessor, and export.json and the
README say so. Generation runs write the whole causal LM (the generation plugin).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from kit.errors import ModelError
from kit.exports.base import Exporter, Job, kit_outputs, served_head, served_numpy
from kit.exports.fresh import imports
from kit.exports.tokenizers import pin_preset_tokenizers
from kit.inference import TrainedModel

CLASSIFIER_LOADER = """
{imports}
import json
from pathlib import Path

import numpy as np

TEXT_COLUMNS = {text_columns!r}


def load(folder):
    classifier = keras_hub.models.TextClassifier.from_preset(folder)  # backbone, preprocessor and trained head
    labels = json.loads((Path(folder) / "labels.json").read_text())
    return classifier, labels


def predict(loaded, inputs):
    classifier, labels = loaded
    texts = [inputs[column] for column in TEXT_COLUMNS]
    packed = classifier.preprocessor(x=texts[0] if len(texts) == 1 else tuple(texts))  # a pair: a tuple
    logits = classifier(packed[0] if isinstance(packed, tuple) else packed, training=False)
    probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))
    best = probabilities.argmax(axis=-1)
    return {{"label": np.asarray(labels, dtype=str)[best], "probability": probabilities.max(axis=-1),
            "probabilities": probabilities}}
"""

BACKBONE_LOADER = """
{imports}


def load(folder):
    # the fine-tuned backbone, no task head; its preprocessor: keras_hub.models.Preprocessor.from_preset(folder)
    return keras_hub.models.Backbone.from_preset(folder)


def predict(backbone, inputs):
    outputs = backbone(dict(inputs))
    return {{"sequence_output": outputs["sequence_output"] if isinstance(outputs, dict) else outputs}}
"""


class PresetExporter(Exporter):
    def refuse_early(self, trained: TrainedModel) -> None:
        if keras_hub_backbone(trained.model) is None:
            raise ModelError(
                f"The {trained.kind.name} model of {trained.run_dir} has no keras-hub backbone, so there is no preset "
                f"to write. Use --format keras, saved_model or tflite."
            )

    def write(self, job: Job) -> None:
        classifier = keras_hub_classifier(job)
        job.record["task_in_preset"] = classifier is not None
        if classifier is not None:
            classifier.save_to_preset(str(job.folder))
            labels = list(job.trained.task.export_metadata()["labels"])
            (job.folder / "labels.json").write_text(json.dumps(labels, ensure_ascii=False) + "\n", encoding="utf-8")
            job.record["keras_hub_class"] = type(classifier).__name__
        else:
            backbone = keras_hub_backbone(job.trained.model)
            backbone.save_to_preset(str(job.folder))
            preprocessor = getattr(job.trained.backbone, "preprocessor", None)  # image families have none
            if preprocessor is not None:
                preprocessor.save_to_preset(str(job.folder))
            job.record["notes"] = [backbone_only_note(job.trained)]
        pin_preset_tokenizers(job.folder)
        job.require("tensorflow", "keras", "keras-hub", *job.trained.backbone.export_requirements)

    @property
    def description(self) -> str:  # type: ignore[override]
        return (
            "A keras-hub preset (config.json, model.weights.h5, tokenizer and preprocessor). With "
            "`task.json` it holds the whole trained classifier: `keras_hub.models.TextClassifier.from_preset(folder)`; "
            "without, the fine-tuned backbone and preprocessor only (see export.json's notes)."
        )

    def check_inputs(self, job: Job) -> dict[str, np.ndarray]:
        if job.record["task_in_preset"]:
            return job.sample
        features = job.trained.backbone.preprocess_batch(job.sample)
        names = list(keras_hub_backbone(job.trained.model).input)
        if len(names) == 1 and len(features) == 1:  # an image backbone: kit's column holds its pixels
            return {names[0]: np.asarray(next(iter(features.values())))}
        return {name: np.asarray(features[name]) for name in names}

    def expected(self, job: Job) -> dict[str, np.ndarray]:
        if job.record["task_in_preset"]:
            raw = kit_outputs(job.trained, job.sample)
            return served_numpy(served_head(job.trained, raw), raw)
        backbone = keras_hub_backbone(job.trained.model)
        outputs = backbone(self.check_inputs(job))
        return {"sequence_output": np.asarray(outputs["sequence_output"] if isinstance(outputs, dict) else outputs)}

    def loader(self, job: Job) -> str:
        if job.record["task_in_preset"]:
            columns = job.trained.kind.columns()
            return CLASSIFIER_LOADER.format(imports=imports(job.requires), text_columns=columns)
        return BACKBONE_LOADER.format(imports=imports(job.requires))

    def report(self, job: Job, timing: dict[str, Any]) -> dict[str, Any]:
        report = super().report(job, timing)
        if job.record["task_in_preset"]:
            report.setdefault("outputs", {})["preset"] = (
                "TextClassifier.predict gives logits: softmax, then labels.json"
            )
        return report


def keras_hub_backbone(model: Any) -> Any:
    """The keras-hub backbone inside `model`, or None (tabular and image CNN models have none)."""
    import keras_hub

    if isinstance(model, keras_hub.models.Task):
        return model.backbone
    found = [layer for layer in model.layers if isinstance(layer, keras_hub.models.Backbone)]
    return found[0] if found else None


def keras_hub_classifier(job: Job) -> Any:
    """keras-hub's own TextClassifier for the backbone, carrying kit's trained head, when it gives kit's outputs."""
    import keras_hub

    trained = job.trained
    labels = trained.task.export_metadata().get("labels")
    head = _layer(trained.model, "logits")
    if trained.kind.name not in ("text", "text_pair") or not labels or head is None:
        return None
    backbone = keras_hub_backbone(trained.model)
    for cls in _subclasses(keras_hub.models.TextClassifier):
        if getattr(cls, "backbone_cls", None) is not type(backbone):
            continue
        try:
            classifier = cls(backbone=backbone, num_classes=len(labels), preprocessor=trained.backbone.preprocessor)
            classifier.output_dense.set_weights(head.get_weights())
        except (TypeError, ValueError, AttributeError):  # another head shape: not kit's
            continue
        if _same_outputs(classifier, job):
            return classifier
    return None


def _same_outputs(classifier: Any, job: Job) -> bool:
    """The keras-hub classifier (called on token ids: its preprocessor runs only in predict) gives kit's logits."""
    x = job.trained.backbone.preprocess_batch(job.sample)
    ours = kit_outputs(job.trained, job.sample)
    theirs = np.asarray(classifier(x, training=False))
    return ours.shape == theirs.shape and bool(np.allclose(ours, theirs, rtol=1e-4, atol=1e-5))


def _layer(model: Any, name: str) -> Any:
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def _subclasses(cls: type) -> list[type]:
    found, pending = [], [cls]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(current.__subclasses__())
    return found


def backbone_only_note(trained: TrainedModel) -> str:
    return (
        f"keras-hub has no task class that reproduces this '{trained.task.name}' model's head "
        f"({type(trained.backbone).__name__}, {getattr(trained.backbone, 'pooling', 'its own')} pooling), so the "
        f"preset holds the fine-tuned backbone and its preprocessor only, not the trained head: "
        f"keras_hub.models.Backbone.from_preset gives them. For the whole model use --format keras or saved_model."
    )
