"""The `generation` task: causal language modelling on plain text.

Documents are tokenised and packed into `model.sequence_length`-token
windows (no padding); the loss is next-token cross-entropy, the reported
metric perplexity. The model is keras-hub's causal LM for the backbone
(`GPT2CausalLM` for `gpt-*`), saved with its preprocessor, so `model.keras`
and the preset work with keras-hub's `generate()` directly.
"""

from __future__ import annotations

import math
from typing import Any

import kit


def causal_lm_class(backbone: Any) -> type:
    """The keras-hub `CausalLM` subclass that belongs to `backbone` (GPT2CausalLM for GPT2Backbone...)."""
    import keras_hub

    pending = [keras_hub.models.CausalLM]
    while pending:
        cls = pending.pop()
        if getattr(cls, "backbone_cls", None) is type(backbone):
            return cls
        pending.extend(cls.__subclasses__())
    raise kit.ModelError(
        f"The backbone {type(backbone).__name__} is not a decoder keras-hub can generate with. Generation needs "
        f"a causal LM: gpt-tiny, gpt-small, or a GPT-2 / Llama / Gemma / Mistral preset or Hugging Face folder."
    )


class GenerationTask(kit.Task):
    name = "generation"
    description = "Causal language modelling on plain text (GPT-style): pretrain or continue, then `kit generate`."
    default_target = ()
    input_kinds = ("causal_text",)
    predicts = False  # `kit generate` continues prompts instead

    def target_fields(self, columns: list[str]) -> list[Any]:
        if columns:
            raise kit.ConfigError(
                f"The generation task learns from the text alone; remove data.target ({', '.join(columns)})."
            )
        return []

    def prepare(self, dataset: Any, backbone: Any, split: str) -> Any:
        from kit_plugins.generation.packing import pack_documents

        return pack_documents(dataset, backbone.tokenizer, backbone.column, backbone.sequence_length)

    def build_model(self, built: kit.Built) -> Any:
        # Trained on token windows kit has packed, so without a preprocessor (keras-hub would map it over them).
        return causal_lm_class(built.backbone)(backbone=built.backbone, preprocessor=None)

    def model_to_save(self, model: Any, backbone: Any) -> Any:
        """The causal LM with its preprocessor attached: `generate("text")` works on the saved model."""
        return type(model)(backbone=model.backbone, preprocessor=backbone.preprocessor)

    def loss(self) -> Any:
        import keras

        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def metrics(self) -> list[Any]:
        import keras_hub

        return [keras_hub.metrics.Perplexity(from_logits=True, name="perplexity")]

    def metric_names(self) -> list[str] | None:
        # keras-hub's causal LMs add this weighted metric when compiled.
        return [*(super().metric_names() or []), "sparse_categorical_accuracy"]

    def evaluate_model(self, model: Any, dataset: Any) -> dict[str, float]:
        preprocessor, model.preprocessor = model.preprocessor, None  # the windows are token ids already
        try:
            results = model.evaluate(dataset, return_dict=True, verbose=0)
        finally:
            model.preprocessor = preprocessor
        windows = sum(int(x["token_ids"].shape[0]) for x, _ in dataset)
        length = int(dataset.element_spec[0]["token_ids"].shape[-1] or 0)
        loss = float(results["loss"])
        return {
            "loss": loss,
            "perplexity": math.exp(min(loss, 700.0)),
            "accuracy": float(results.get("sparse_categorical_accuracy", float("nan"))),
            "tokens": float(windows * length),
        }

    def exporter(self, fmt: str) -> Any:
        """Exports that take prompts and give text (SavedModel with sampler settings, preset, Hugging Face)."""
        from kit_plugins.generation.export import exporter

        return exporter(fmt)

    def predictions(self, outputs: Any, features: Any = None) -> list[dict[str, Any]]:
        raise kit.UsageError(
            'A generation run continues text rather than predicting labels: use `kit generate RUN_DIR "prompt"` '
            "(or --prompts FILE)."
        )

    def generator(self, trained: Any) -> Any:
        """What continues prompts for `kit serve`'s /generate: the `Generator` of `kit generate`, with its
        tokenizer traced from the first batch (the server's warm-up) rather than after a few."""
        from kit_plugins.generation.sampling import Generator

        return Generator(trained.run_dir, trained=trained, eager_batches=0)
