"""`--format saved_model`: a TensorFlow SavedModel for TensorFlow Serving, raw features in, served outputs out.

Its `serving_default` signature takes one tensor per input column (batch
first; texts as strings, so the tokenizer runs inside the graph) and returns
the task's served outputs (`Task.served_outputs`). Text models use
tensorflow-text ops: a process must `import tensorflow_text` before loading
(export.json "requires" says so; TensorFlow Serving needs a build with them).
"""

from __future__ import annotations

import re
from typing import Any

from kit.backbone import needs_autograph
from kit.exports.base import Exporter, Job, kit_outputs, served_head
from kit.exports.fresh import imports
from kit.inference import plain_model

SIGNATURE = "serving_default"

LOADER = """
{imports}
import numpy as np

INPUTS = {inputs!r}  # column -> the signature's input name


def load(folder):
    return tf.saved_model.load(folder)


def predict(model, inputs):
    serve = model.signatures["serving_default"]
    outputs = serve(**{{INPUTS[column]: tf.constant(value) for column, value in inputs.items()}})
    # label names come back as bytes: decode them
    return {{k: np.char.decode(v.numpy().astype(bytes)) if v.dtype == tf.string else v.numpy() for k, v in outputs.items()}}
"""


def signature_name(column: str) -> str:
    """A column as a signature input name (TensorFlow allows letters, digits, `_`, `.`, `-`, `/`)."""
    name = re.sub(r"[^A-Za-z0-9_.\-/]", "_", column)
    return name if re.match(r"[A-Za-z]", name) else f"x_{name}"


class SavedModelExporter(Exporter):
    description = (
        "A TensorFlow SavedModel: its `serving_default` signature takes the raw input columns (texts as strings, "
        "tokenised inside the graph) and returns the task's outputs. Serve it with TensorFlow Serving."
    )

    def write(self, job: Job) -> None:
        import tensorflow as tf

        trained = job.trained
        head = served_head(trained, kit_outputs(trained, job.sample))
        names = {column: signature_name(column) for column in job.sample}
        module = serving_module(trained, plain_model(trained.model), head, job.sample, names)
        tf.saved_model.save(module, str(job.folder), signatures={SIGNATURE: module.serve})
        job.require("tensorflow", *trained.backbone.export_requirements)
        job.record["signature"] = {"name": SIGNATURE, "inputs": names, "outputs": sorted(head.output)}

    def loader(self, job: Job) -> str:
        return LOADER.format(imports=imports(job.requires), inputs=job.record["signature"]["inputs"])


def serving_module(trained: Any, model: Any, head: Any, sample: dict[str, Any], names: dict[str, str]) -> Any:
    """A `tf.Module` whose `serve` runs preprocessing, the model and the served-outputs head in one graph."""
    import tensorflow as tf

    backbone = trained.backbone
    spec = {c: tf.TensorSpec([None, *v.shape[1:]], tf.as_dtype(_dtype(v)), name=names[c]) for c, v in sample.items()}

    class Serving(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model, self.head = model, head
            self.preprocessor = getattr(backbone, "preprocessor", None)  # its lookup tables travel with it

        @tf.function(input_signature=[spec], autograph=needs_autograph(backbone))  # kit's own: none needed
        def serve(self, features: dict[str, Any]) -> dict[str, Any]:
            return self.head(self.model(backbone.preprocess_batch(features), training=False))

    return Serving()


def _dtype(value: Any) -> Any:
    return "string" if value.dtype.kind in "USO" else value.dtype
