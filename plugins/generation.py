"""The built-in `generation` task: causal language modelling on plain text.

Pretrain a GPT-style decoder from scratch (`gpt-tiny`, `gpt-small`, with a
byte-level BPE vocabulary learned from the corpus) or continue training a
pretrained one (a keras-hub preset folder, a Hugging Face folder, or another
run). Documents are packed into `model.sequence_length`-token windows; the
loss is next-token cross-entropy and the reported metric is perplexity.
Use the trained run with `kit generate RUN "prompt"`.
"""

from __future__ import annotations

import math
from typing import Any

import kit


class GenerationTask(kit.Task):
    name = "generation"
    description = "Causal language modelling on plain text (GPT-style): pretrain or continue, then `kit generate`."
    default_target = ()
    input_kinds = ("text",)

    def input_kind(self, guessed: str) -> str:
        return "decoder"

    def target_fields(self, columns: list[str]) -> list[Any]:
        if columns:
            raise kit.ConfigError(
                f"The generation task learns from the text alone; remove data.target ({', '.join(columns)})."
            )
        return []

    def prepare(self, dataset: Any, inputs: Any, split: str) -> Any:
        from kit.decoders import pack_documents

        return pack_documents(dataset, inputs.tokenizer, inputs.column, inputs.sequence_length)

    def build_model(self, inputs: Any, representation: Any) -> Any:
        from kit.decoders import causal_lm_class

        preprocessor, backbone = inputs, representation
        return causal_lm_class(backbone)(backbone=backbone, preprocessor=preprocessor)

    def loss(self) -> Any:
        import keras

        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def metrics(self) -> list[Any]:
        import keras_hub

        return [keras_hub.metrics.Perplexity(from_logits=True, name="perplexity")]

    def evaluate_model(self, model: Any, dataset: Any) -> dict[str, float]:
        results = model.evaluate(dataset, return_dict=True, verbose=0)
        windows = sum(int(x["token_ids"].shape[0]) for x, _ in dataset)
        length = int(dataset.element_spec[0]["token_ids"].shape[-1] or 0)
        loss = float(results["loss"])
        return {
            "loss": loss,
            "perplexity": math.exp(min(loss, 700.0)),
            "accuracy": float(results.get("sparse_categorical_accuracy", float("nan"))),
            "tokens": float(windows * length),
        }

    def predictions(self, outputs: Any) -> list[dict[str, Any]]:
        raise kit.UsageError(
            'A generation run continues text rather than predicting labels: use `kit generate RUN_DIR "prompt"` '
            "(or --prompts FILE)."
        )


@kit.hookimpl
def register_tasks(register):
    register(GenerationTask)
