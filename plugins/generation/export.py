"""Exports of a generation run: prompts in, generated text out, checked against `kit generate`.

- `saved_model`: a SavedModel whose `serving_default` signature takes prompts and
  sampler settings (greedy, top_k, top_p or random; temperature, top-k, top-p,
  max new tokens, seed) and returns the completions; `greedy` takes prompts and
  max new tokens. Tokenising, the cached decoding loop and detokenising all run
  in the graph (tensorflow-text ops), so TensorFlow Serving answers with text.
- `keras` / `preset`: keras-hub's causal LM with its preprocessor
  (`keras.saving.load_model` / `keras_hub.models.CausalLM.from_preset`, then `generate`).
- `huggingface`: keras-hub's exporter (GPT-2, Llama, Gemma, Mistral, Qwen) plus
  what `transformers` needs: `architectures`, a generation config and tokenizer files.

Each is loaded in a fresh process without kit, and its greedy completions of
prompts from the run's data (and of indented, whitespace-heavy text) must be
`kit generate --sampler greedy`'s, word for word.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from kit_plugins.generation.sampling import context_length

import kit
from kit.exports import Exporter, Job, imports, pin_keras_archive_tokenizers, pin_preset_tokenizers

# Indented code and runs of spaces: where keras-hub's eager and graph byte-pair paths part ways.
WHITESPACE_PROMPTS = ["    if x:\n        return  y", "a   b\t\tc  \n\n  d"]
CHECKED_TOKENS = 8  # new tokens per prompt in the reload check

SAMPLERS = ("greedy", "top_k", "top_p", "random")


def exporter(fmt: str) -> Exporter:
    """The generation plugin's writer of `fmt` (`GenerationTask.exporter`)."""
    if fmt == "saved_model":
        return GenerateSavedModel()
    if fmt == "huggingface":
        return HuggingFaceFolder()
    if fmt in ("keras", "preset"):
        return CausalLMFile(fmt)
    return Unsupported(fmt)


# ------------------------------------------------------------------ what kit generate gives


def check_prompts(job: Job, new_tokens: int) -> list[str]:
    """Short prompts from the run's own text (their first words) and whitespace-heavy ones that fit the context."""
    column = job.trained.backbone.column
    texts = [str(t.decode("utf-8") if isinstance(t, bytes) else t) for t in job.sample[column][:4]]
    prompts = [" ".join(text.split(" ")[:6]) for text in texts] + WHITESPACE_PROMPTS
    preprocessor = job.trained.backbone.preprocessor
    context = context_length(job.trained.model)
    lengths = np.asarray(preprocessor.generate_preprocess(prompts, sequence_length=context)["padding_mask"]).sum(1)
    return [p for p, n in zip(prompts, lengths) if n + new_tokens <= context and p.strip()]


def kit_completions(job: Job, prompts: list[str], new_tokens: int) -> list[str]:
    """`kit generate --sampler greedy -n new_tokens` for each prompt (the new text only)."""
    from kit_plugins.generation.sampling import Generator, Sampling

    generator = Generator(job.trained.run_dir, trained=job.trained)  # the run is loaded already: reuse its model
    return generator.generate(prompts, Sampling("greedy", max_new_tokens=new_tokens))


class GenerationExporter(Exporter):
    """Shared check: prompts in, greedy completions out, compared with kit's."""

    def check_inputs(self, job: Job) -> dict[str, np.ndarray]:
        prompts = check_prompts(job, CHECKED_TOKENS)
        job.record["checked_prompts"] = prompts
        return {"prompts": np.asarray(prompts, dtype=str), "max_new_tokens": np.asarray(CHECKED_TOKENS)}

    def expected(self, job: Job) -> dict[str, np.ndarray]:
        prompts = list(self.check_inputs(job)["prompts"])
        return {"greedy": np.asarray(kit_completions(job, prompts, CHECKED_TOKENS), dtype=str)}

    def report(self, job: Job, timing: dict[str, Any]) -> dict[str, Any]:
        return {"outputs": {"completions": "the generated text after each prompt (the prompt not repeated)"}}


# ------------------------------------------------------------------ SavedModel: prompts and settings in, text out

SAVED_MODEL_LOADER = '''
{imports}
import numpy as np


def load(folder):
    return tf.saved_model.load(folder)


def complete(model, prompts, max_new_tokens=32, sampler="top_k", temperature=1.0, top_k=50, top_p=0.9, seed=0):
    """Completions of `prompts`; sampler: greedy, top_k, top_p or random."""
    outputs = model.signatures["serving_default"](
        prompts=tf.constant(prompts), max_new_tokens=tf.constant(max_new_tokens),
        sampler=tf.constant(sampler), temperature=tf.constant(temperature, tf.float32),
        top_k=tf.constant(top_k), top_p=tf.constant(top_p, tf.float32), seed=tf.constant(seed),
    )
    return np.char.decode(outputs["completions"].numpy().astype(bytes))


def predict(model, inputs):
    prompts, n = list(inputs["prompts"]), int(inputs["max_new_tokens"])
    return {{
        "greedy": complete(model, prompts, n, "greedy"),
        # one candidate left: top-k and top-p sampling must then pick what greedy picks
        "top_k_1": complete(model, prompts, n, "top_k", temperature=0.7, top_k=1, seed=3),
        "top_p_tiny": complete(model, prompts, n, "top_p", top_p=1e-6, seed=4),
        "greedy_signature": np.char.decode(
            model.signatures["greedy"](prompts=tf.constant(prompts), max_new_tokens=tf.constant(n))["completions"]
            .numpy().astype(bytes)
        ),
    }}
'''


class GenerateSavedModel(GenerationExporter):
    description = (
        "A TensorFlow SavedModel that generates text: `serving_default` takes `prompts` (strings), `max_new_tokens`, "
        "`sampler` (greedy, top_k, top_p or random), `temperature`, `top_k`, `top_p` and `seed`, and returns "
        "`completions`; `greedy` takes `prompts` and `max_new_tokens`. Tokenising and detokenising run inside "
        "the graph (tensorflow-text ops: `import tensorflow_text` first)."
    )

    def write(self, job: Job) -> None:
        import tensorflow as tf

        module = generation_module(job.trained.model)
        signatures = {"serving_default": module.generate, "greedy": module.greedy}
        tf.saved_model.save(module, str(job.folder), signatures=signatures)
        job.require("tensorflow", "tensorflow-text")
        job.record["signatures"] = {
            "serving_default": ["prompts", "max_new_tokens", "sampler", "temperature", "top_k", "top_p", "seed"],
            "greedy": ["prompts", "max_new_tokens"],
            "outputs": ["completions", "prompt_tokens"],
        }

    def expected(self, job: Job) -> dict[str, np.ndarray]:
        greedy = super().expected(job)["greedy"]
        return {"greedy": greedy, "top_k_1": greedy, "top_p_tiny": greedy, "greedy_signature": greedy}

    def loader(self, job: Job) -> str:
        return SAVED_MODEL_LOADER.format(imports=imports(job.requires))


def generation_module(lm: Any) -> Any:
    """A `tf.Module` with `generate` (prompts + sampler settings) and `greedy` (prompts + max new tokens)."""
    import tensorflow as tf

    preprocessor, context = lm.preprocessor, context_length(lm)
    tokenizer = preprocessor.tokenizer
    stop_ids = [tokenizer.end_token_id] + ([tokenizer.end_token2_id] if hasattr(tokenizer, "end_token2_id") else [])
    plain = type(lm)(backbone=lm.backbone, preprocessor=None)  # fed token ids
    text = tf.TensorSpec([None], tf.string, name="prompts")

    class Generation(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lm, self.preprocessor = plain, preprocessor

        @tf.function(input_signature=[text, tf.TensorSpec([], tf.int32, name="max_new_tokens"),
                                      tf.TensorSpec([], tf.string, name="sampler"),
                                      tf.TensorSpec([], tf.float32, name="temperature"),
                                      tf.TensorSpec([], tf.int32, name="top_k"),
                                      tf.TensorSpec([], tf.float32, name="top_p"),
                                      tf.TensorSpec([], tf.int32, name="seed")])  # fmt: skip
        def generate(self, prompts, max_new_tokens, sampler, temperature, top_k, top_p, seed):  # type: ignore[no-untyped-def]
            settings = check_settings(sampler, temperature, top_k, top_p, max_new_tokens)
            x = self.preprocessor.generate_preprocess(prompts, sequence_length=context)
            ids, mask = tf.cast(x["token_ids"], tf.int32), tf.cast(x["padding_mask"], tf.bool)
            lengths = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)
            with tf.control_dependencies(settings + [fits_context(lengths, context)]):
                total = tf.minimum(tf.reduce_max(lengths) + max_new_tokens, context)
            ids, mask = ids[:, :total], mask[:, :total]
            choose = Chooser(sampler, temperature, top_k, top_p, seed)
            ids = decode(self.lm, ids, mask, lengths, total, choose, stop_ids)
            kept = new_tokens(ids, lengths, max_new_tokens, stop_ids)
            return {"completions": tokenizer.detokenize(kept), "prompt_tokens": lengths}

        @tf.function(input_signature=[text, tf.TensorSpec([], tf.int32, name="max_new_tokens")])
        def greedy(self, prompts, max_new_tokens):  # type: ignore[no-untyped-def]
            one = tf.constant(1.0)
            return self.generate(prompts, max_new_tokens, tf.constant("greedy"), one, tf.constant(1), one,
                                 tf.constant(0))  # fmt: skip

    return Generation()


def check_settings(sampler: Any, temperature: Any, top_k: Any, top_p: Any, max_new_tokens: Any) -> list[Any]:
    """Assertions with the messages `kit generate` gives for the same mistakes."""
    import tensorflow as tf

    known = tf.reduce_any(tf.equal(sampler, tf.constant(SAMPLERS)))
    return [
        tf.debugging.Assert(known, [f"Unknown sampler. Choose one of: {', '.join(SAMPLERS)}. Got:", sampler]),
        tf.debugging.Assert(temperature > 0, ["temperature must be above 0, got", temperature]),
        tf.debugging.Assert(top_k >= 1, ["top_k must be at least 1, got", top_k]),
        tf.debugging.Assert(tf.logical_and(top_p > 0, top_p <= 1), ["top_p must be in (0, 1], got", top_p]),
        tf.debugging.Assert(max_new_tokens >= 1, ["max_new_tokens must be at least 1, got", max_new_tokens]),
    ]


def fits_context(lengths: Any, context: int) -> Any:
    import tensorflow as tf

    message = f"A prompt fills the model's context of {context} tokens, so nothing could follow it. Shorten it. Tokens:"
    return tf.debugging.Assert(tf.reduce_max(lengths) < context, [message, tf.reduce_max(lengths)])


class Chooser:
    """Picks each next token from logits as kit's samplers do: greedy, top-k, top-p (nucleus) or random."""

    def __init__(self, sampler: Any, temperature: Any, top_k: Any, top_p: Any, seed: Any):
        self.sampler, self.temperature, self.top_k, self.top_p, self.seed = sampler, temperature, top_k, top_p, seed

    def __call__(self, logits: Any, index: Any) -> Any:
        import tensorflow as tf

        logits = tf.cast(logits, tf.float32) / self.temperature
        vocabulary = tf.shape(logits)[-1]
        k = tf.where(tf.equal(self.sampler, "top_k"), tf.clip_by_value(self.top_k, 1, vocabulary), vocabulary)
        kth = tf.math.top_k(logits, k).values[:, -1:]
        logits = tf.where(logits < kth, -1e9, logits)
        p = tf.where(tf.equal(self.sampler, "top_p"), self.top_p, 1.0)
        ordered = tf.sort(logits, axis=-1, direction="DESCENDING")
        before = tf.cumsum(tf.nn.softmax(ordered), axis=-1, exclusive=True)  # mass of the more likely tokens
        cutoff = tf.reduce_min(tf.where(before < p, ordered, 1e9), axis=-1, keepdims=True)
        logits = tf.where(logits < cutoff, -1e9, logits)
        sampled = tf.random.stateless_categorical(logits, 1, seed=tf.stack([self.seed, index]), dtype=tf.int32)
        return tf.where(tf.equal(self.sampler, "greedy"), tf.argmax(logits, -1, output_type=tf.int32), sampled[:, 0])


def decode(lm: Any, ids: Any, mask: Any, lengths: Any, total: Any, choose: Chooser, stop_ids: list[int]) -> Any:
    """keras-hub's cached decoding loop (as `CausalLM.generate_step`), one new token per position after each prompt."""
    import tensorflow as tf

    _, cache = lm._build_cache(ids)
    stops = tf.constant(stop_ids, tf.int32)

    def step(index: Any, ids: Any, cache: Any, done: Any) -> tuple[Any, ...]:
        logits, _, cache = lm.call_with_cache(tf.slice(ids, [0, index - 1], [-1, 1]), cache, index - 1)
        chosen = choose(logits[:, 0, :], index)
        given = mask[:, index]  # a prompt token at this position (prompts differ in length): keep it
        token = tf.where(given, ids[:, index], chosen)
        ids = tf.where(tf.one_hot(index, total, on_value=True, off_value=False)[None, :], token[:, None], ids)
        stopped = tf.logical_and(tf.logical_not(given), tf.reduce_any(tf.equal(token[:, None], stops), -1))
        return index + 1, ids, cache, tf.logical_or(done, stopped)

    def going(index: Any, ids: Any, cache: Any, done: Any) -> Any:
        return tf.logical_and(index < total, tf.logical_not(tf.reduce_all(done)))

    done = tf.zeros([tf.shape(ids)[0]], tf.bool)
    _, ids, _, _ = tf.while_loop(going, step, (tf.reduce_min(lengths), ids, cache, done))
    return ids


def new_tokens(ids: Any, lengths: Any, max_new_tokens: Any, stop_ids: list[int]) -> Any:
    """Each row's generated tokens: after its prompt, at most `max_new_tokens`, up to its first stop token."""
    import tensorflow as tf

    positions = tf.range(tf.shape(ids)[1])[None, :]
    new = tf.logical_and(positions >= lengths[:, None], positions < lengths[:, None] + max_new_tokens)
    stop = tf.logical_and(new, tf.reduce_any(tf.equal(ids[..., None], tf.constant(stop_ids, tf.int32)), -1))
    after_stop = tf.cumsum(tf.cast(stop, tf.int32), axis=1) > 0
    return tf.ragged.boolean_mask(ids, tf.logical_and(new, tf.logical_not(after_stop)))


# ------------------------------------------------------------------ keras-hub's causal LM: model.keras or a preset

CAUSAL_LM_LOADER = """
{imports}
import numpy as np


def load(folder):
    {load}


def predict(lm, inputs):
    lm.compile(sampler="greedy")
    completions = []
    for prompt in inputs["prompts"]:
        length = int(np.sum(lm.preprocessor.generate_preprocess([prompt])["padding_mask"]))  # start token included
        text = lm.generate([str(prompt)], max_length=length + int(inputs["max_new_tokens"]))[0]
        completions.append(text[len(prompt):] if text.startswith(prompt) else text)
    return {{"greedy": np.asarray(completions, dtype=str)}}
"""

LOADS = {
    "keras": 'return keras.saving.load_model(f"{folder}/model.keras")  # safe mode',
    "preset": "return keras_hub.models.CausalLM.from_preset(folder)",
}


class CausalLMFile(GenerationExporter):
    def __init__(self, fmt: str):
        self.fmt = fmt
        self.description = {
            "keras": "keras-hub's causal LM with its preprocessor in `model.keras`: `generate()` continues text.",
            "preset": "A keras-hub preset of the whole causal LM: `keras_hub.models.CausalLM.from_preset(folder)`.",
        }[fmt]

    def write(self, job: Job) -> None:
        lm = job.trained.model
        if self.fmt == "keras":
            path = job.folder / job.trained.run.MODEL_FILE  # model.keras, named as in the run
            lm.save(path)
            pin_keras_archive_tokenizers(path)
        else:
            lm.save_to_preset(str(job.folder))
            pin_preset_tokenizers(job.folder)
        job.require("tensorflow", "keras", "keras-hub", "tensorflow-text")

    def loader(self, job: Job) -> str:
        return CAUSAL_LM_LOADER.format(imports=imports(job.requires), load=LOADS[self.fmt])


# ------------------------------------------------------------------ Hugging Face transformers folder

HF_LOADER = """
{imports}
import numpy as np


def load(folder):
    # keras-hub reads Hugging Face folders; transformers users: AutoModelForCausalLM.from_pretrained(folder)
    lm = keras_hub.models.CausalLM.from_preset(folder)
    lm.preprocessor.tokenizer._allow_python_workflow = False  # GPT-2's own split of spaces (as transformers)
    return lm
""" + CAUSAL_LM_LOADER.split("\n\n\ndef load(folder):\n    {load}\n", 1)[1]


class HuggingFaceFolder(GenerationExporter):
    description = (
        "A Hugging Face folder (config.json with `architectures`, model.safetensors, tokenizer files, "
        "generation_config.json): `transformers.AutoModelForCausalLM.from_pretrained(folder)` and "
        "`AutoTokenizer.from_pretrained(folder)` load it."
    )

    def refuse_early(self, trained: Any) -> None:
        from keras_hub.src.utils.transformers.export import hf_exporter

        name = type(trained.model.backbone).__name__
        if name not in hf_exporter.MODEL_EXPORTERS:
            known = ", ".join(sorted(n.removesuffix("Backbone") for n in hf_exporter.MODEL_EXPORTERS))
            raise kit.ModelError(
                f"keras-hub has no Hugging Face exporter for {name} (it has one for {known}). Use --format preset "
                f"or saved_model."
            )

    def write(self, job: Job) -> None:
        lm = job.trained.model
        lm.export_to_transformers(str(job.folder))
        complete_for_transformers(job.folder, lm)
        job.require("tensorflow", "keras", "keras-hub", "tensorflow-text", "safetensors")
        job.record["transformers"] = (
            "AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)"
        )

    def loader(self, job: Job) -> str:
        return HF_LOADER.format(imports=imports(job.requires))


ARCHITECTURES = {
    "gpt2": "GPT2LMHeadModel",
    "llama": "LlamaForCausalLM",
    "gemma": "GemmaForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
}


def complete_for_transformers(folder: Path, lm: Any) -> None:
    """What keras-hub's exporter leaves out: `architectures`, the real special-token ids, a generation config."""
    tokenizer = lm.preprocessor.tokenizer
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    architecture = ARCHITECTURES.get(config.get("model_type", ""))
    if architecture:
        config["architectures"] = [architecture]
    special = {"bos_token_id": tokenizer.start_token_id, "eos_token_id": tokenizer.end_token_id}
    pad = getattr(tokenizer, "pad_token_id", None)
    special["pad_token_id"] = pad if pad is not None else tokenizer.end_token_id
    config.update({k: int(v) for k, v in special.items() if v is not None})
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    generation = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in config}
    (folder / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n", encoding="utf-8")
    _tokenizer_names(folder, lm)


def _tokenizer_names(folder: Path, lm: Any) -> None:
    """The tokenizer's special tokens and class, as `AutoTokenizer` reads them."""
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    tokenizer = lm.preprocessor.tokenizer
    vocabulary = tokenizer.get_vocabulary() if hasattr(tokenizer, "get_vocabulary") else []
    if config.get("model_type") == "gpt2":
        end = tokenizer.end_token
        config.update({"tokenizer_class": "GPT2Tokenizer", "bos_token": end, "eos_token": end, "unk_token": end})
        config["pad_token"] = "<pad>" if "<pad>" in vocabulary else end  # kit's own vocabularies reserve <pad>
        config["add_prefix_space"] = False
        config["model_max_length"] = context_length(lm)
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


class Unsupported(Exporter):
    def __init__(self, fmt: str):
        self.fmt = fmt

    def refuse_early(self, trained: Any) -> None:
        raise kit.ModelError(
            f"--format {self.fmt} does not hold a generation run: text generation needs the decoding loop and the "
            f"byte-pair tokenizer, which LiteRT's converter does not take. Use --format saved_model (prompts and "
            f"sampler settings in, text out), preset, keras or huggingface."
        )
