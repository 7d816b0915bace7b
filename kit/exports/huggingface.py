"""`--format huggingface` for runs whose task has no writer of its own.

keras-hub exports Hugging Face folders for decoders only (GPT-2, Llama, Gemma,
Mistral, Qwen: its `export_to_transformers`); the generation plugin writes
those. Encoders (BERT, RoBERTa) and kit's task heads have no exporter there,
so such runs are refused with what to use instead.
"""

from __future__ import annotations

from kit.errors import ModelError
from kit.exports.base import Exporter
from kit.inference import TrainedModel


class HuggingFaceExporter(Exporter):
    def refuse_early(self, trained: TrainedModel) -> None:
        raise ModelError(
            f"--format huggingface writes causal language models (generation runs on GPT-2, Llama, Gemma, Mistral "
            f"or Qwen backbones), which keras-hub can export for transformers; {trained.run_dir} is a "
            f"'{trained.task.name}' run with a {trained.backbone.name} backbone, which keras-hub cannot export to "
            f"transformers. Use --format saved_model, keras, preset or tflite."
        )
