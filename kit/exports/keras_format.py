"""`--format keras`: model.keras that answers in the user's terms, with its keras-hub preprocessor.

The run's own model/model.keras gives raw outputs (logits, normalised numbers),
which is what training and resuming need. The export puts the task's served
outputs (`Task.served_outputs`: label names and probabilities, numbers in the
data's units) inside the model, with Keras layers only, so it loads in safe
mode and `model.predict` answers what `kit predict` answers.
"""

from __future__ import annotations

import shutil
from typing import Any

import numpy as np

from kit.backbone import Backbone
from kit.exports.base import Exporter, Job, kit_outputs, served_head
from kit.exports.fresh import imports
from kit.exports.tokenizers import pin_preset_tokenizers
from kit.inference import plain_model
from kit.rundir import RunDir
from kit.text import PREPROCESSOR_DIR

TEXT_KINDS = ("text", "text_pair")

LOADER = """
{imports}
from pathlib import Path

import numpy as np

TEXT_COLUMNS = {text_columns!r}  # the raw text columns the preprocessor takes, in order


def load(folder):
    model = keras.saving.load_model(Path(folder) / {model_file!r})  # safe mode: no code from the file runs
    preprocessor = Path(folder) / "preprocessor"
    if preprocessor.is_dir():
        return model, keras_hub.models.TextClassifierPreprocessor.from_preset(str(preprocessor))
    return model, None


def _tokenized(preprocessor, texts):
    packed = preprocessor(x=texts[0] if len(texts) == 1 else tuple(texts))  # a pair of texts: a tuple
    return packed[0] if isinstance(packed, tuple) else packed


def predict(loaded, inputs):
    model, preprocessor = loaded
    if preprocessor is not None:
        texts = [inputs[column] for column in TEXT_COLUMNS]
        inputs = _tokenized(preprocessor, texts)
    outputs = model.predict_on_batch(inputs)
    # label names come back as bytes: decode them
    return {{k: np.char.decode(v.astype(bytes)) if v.dtype == object else v for k, v in outputs.items()}}
"""


class KerasExporter(Exporter):
    description = (
        "`model.keras` gives the task's outputs in your terms (label names and probabilities, numbers in the "
        "data's units); text models come with their keras-hub preprocessor in `preprocessor/`."
    )

    def write(self, job: Job) -> None:
        trained = job.trained
        raw = kit_outputs(trained, job.sample)
        model = plain_model(trained.model)
        served = _served_model(model, served_head(trained, raw))
        served.save(job.folder / RunDir.MODEL_FILE)  # named as in the run's model folder
        job.require("keras", "tensorflow")  # Keras runs on TensorFlow here (StringLookup, keras-hub)
        if self.takes_text(job):
            shutil.copytree(trained.folder / PREPROCESSOR_DIR, job.folder / "preprocessor")
            pin_preset_tokenizers(job.folder / "preprocessor")  # tokens as in training, called eagerly too
            job.require("keras-hub", *trained.backbone.export_requirements)
        job.record["inputs"] = self.inputs_description(job)

    def takes_text(self, job: Job) -> bool:
        return job.trained.kind.name in TEXT_KINDS and (job.trained.folder / PREPROCESSOR_DIR).is_dir()

    def inputs_description(self, job: Job) -> str:
        if self.takes_text(job):
            return f"texts of the columns {job.trained.kind.columns()}, through preprocessor/"
        if takes_raw_features(job.trained.backbone):
            return f"raw column values by column name: {job.trained.kind.columns()}"
        return "the model's inputs as kit's preprocessing makes them (see kit_model.json); use saved_model for raw"

    def check_inputs(self, job: Job) -> dict[str, np.ndarray]:
        if self.takes_text(job) or takes_raw_features(job.trained.backbone):
            return job.sample
        features = job.trained.backbone.preprocess_batch(job.sample)
        return {name: np.asarray(value) for name, value in features.items()}

    def loader(self, job: Job) -> str:
        text_columns = job.trained.kind.columns() if self.takes_text(job) else []
        return LOADER.format(imports=imports(job.requires), text_columns=text_columns, model_file=RunDir.MODEL_FILE)


def takes_raw_features(backbone: Any) -> bool:
    """Whether the model takes the raw column values (no preprocessing outside it: tabular MLPs)."""
    return type(backbone).preprocess is Backbone.preprocess


def _served_model(model: Any, head: Any) -> Any:
    """The model followed by the served-outputs head, as one functional model."""
    import keras

    return keras.Model(model.input, head(model.output), name=f"{model.name}_served")
