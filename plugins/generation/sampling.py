"""Continuing prompts with a trained generation run: samplers, batched and streamed decoding.

Batches go through keras-hub's `CausalLM.generate()` (compiled, with the
key/value cache) and one of keras-hub's samplers. `--stream` runs the same
cached decoder one token at a time from Python, so each token can be printed
as soon as it exists.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from kit.console import say
from kit.errors import UsageError

SAMPLERS = ("greedy", "top_k", "top_p", "random", "beam")
KEPT_DECODERS = 4  # traced decoders a generator keeps, one per sampler setting (kit serve: beam requests)
# The settings each sampler reads (`Sampling.make`); the others do not change what a decoder computes.
SAMPLER_SETTINGS = {
    "greedy": (),
    "top_k": ("top_k", "temperature"),
    "top_p": ("top_p", "temperature"),
    "random": ("temperature",),
    "beam": ("beams", "temperature"),
}


@dataclass
class Sampling:
    """How to pick each next token.

    Attributes:
        sampler: greedy (most likely token), top_k, top_p (nucleus), random
            (the whole distribution) or beam (beam search, `beams` wide).
        max_new_tokens: tokens generated after the prompt (fewer when the end
            token comes first or the model's context is full).
        temperature: divides the logits; below 1 is more conservative.
        top_k / top_p / beams: the sampler's own setting.
        seed: makes random samplers repeatable.
    """

    sampler: str = "top_k"
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 0.9
    beams: int = 4
    seed: int | None = None

    def check(self) -> None:
        if self.sampler not in SAMPLERS:
            raise UsageError(f"Unknown sampler '{self.sampler}'. Choose one of: {', '.join(SAMPLERS)}.")
        for name, value, low in (("max-new-tokens", self.max_new_tokens, 1), ("top-k", self.top_k, 1)):
            if value < low:
                raise UsageError(f"--{name} must be at least {low}, got {value}.")
        if not 0 < self.top_p <= 1:
            raise UsageError(f"--top-p must be in (0, 1], got {self.top_p}.")
        if not self.temperature > 0:
            raise UsageError(f"--temperature must be above 0, got {self.temperature}.")
        if self.beams < 1:
            raise UsageError(f"--beams must be at least 1, got {self.beams}.")

    def traced_settings(self) -> tuple:
        """The settings a traced decoder depends on: the sampler and what it reads (not the seed or length)."""
        return (self.sampler, *(getattr(self, name) for name in SAMPLER_SETTINGS[self.sampler]))

    def make(self) -> Any:
        """The keras-hub sampler object."""
        import keras_hub

        samplers = keras_hub.samplers
        common = {"temperature": self.temperature}
        if self.sampler == "greedy":
            return samplers.GreedySampler(**common)
        if self.sampler == "top_k":
            return samplers.TopKSampler(k=self.top_k, seed=self.seed, **common)
        if self.sampler == "top_p":
            return samplers.TopPSampler(p=self.top_p, seed=self.seed, **common)
        if self.sampler == "random":
            return samplers.RandomSampler(seed=self.seed, **common)
        return samplers.BeamSampler(num_beams=self.beams, **common)

    @classmethod
    def from_request(cls, values: dict[str, Any]) -> Sampling:
        """Settings from a JSON object (`kit serve`'s /generate), checked like the command line's.

        Unknown keys and values of the wrong type are refused with what is allowed.
        """
        allowed = {name: type(value) for name, value in vars(cls()).items()}
        allowed["seed"] = int
        for name, value in values.items():
            if name not in allowed:
                raise UsageError(f"Unknown sampler setting '{name}'. Settings are: {', '.join(allowed)}.")
            wanted = allowed[name]
            fits = isinstance(value, (int, float)) and not isinstance(value, bool) if wanted is float else None
            fits = fits if fits is not None else isinstance(value, wanted) and not isinstance(value, bool)
            if not fits and not (name == "seed" and value is None):
                raise UsageError(f"Sampler setting '{name}' must be {_what(wanted)}, got {value!r}.")
        settings = cls(**values)
        settings.check()
        return settings


def _what(kind: type) -> str:
    return {int: "a whole number", float: "a number", str: "text"}.get(kind, kind.__name__)


def context_length(model: Any) -> int:
    """The most tokens a causal LM reads: its backbone's position limit, else its preprocessor's length."""
    limit = getattr(model.backbone, "max_sequence_length", None)
    return int(limit or model.preprocessor.sequence_length)


def biased_dense_layers(model: Any) -> bool:
    """Whether any of `model`'s dense layers (`Dense`, `EinsumDense`) adds a bias: then its decoder is traced
    with fused dense layers (`decoder_tracing`)."""
    import keras

    dense = (keras.layers.Dense, keras.layers.EinsumDense)
    return any(
        isinstance(layer, dense) and getattr(layer, "bias", None) is not None for layer in model._flatten_layers()
    )


@contextlib.contextmanager
def decoder_tracing(model: Any, xla: bool) -> Iterator[None]:
    """The block a decoding graph of `model` is traced in (on its first call), `xla`: whether it is compiled
    with XLA.

    Without XLA, four switches, each giving the same tokens:

    - keras-hub's cache updates trace as TensorFlow's own kernel instead of an XLA operation run on its own
      (`cache_updates`: gpt-tiny 1.08-1.11x the tokens/s);
    - keras-hub's `CachedMultiHeadAttention` (with attention dropout, as GPT-2's) scores one query token over
      the cache in the cache's own layout instead of transposing it (`decode_attention`: gpt-tiny 1.14-1.35x);
    - keras-hub's `LlamaAttention` (SmolLM2's) writes a step into its cache with one update and scores each
      group of query heads against its own key/value head, instead of repeating and transposing copies of the
      cache (`grouped_attention`: SmolLM2 1.11x at batch 8);
    - a decoder whose dense layers carry biases (GPT-2's) has them traced as fused products
      (`kit.fused_dense`): a small decoder's step is many small operations, and a layer's product, bias and
      activation become one (gpt-tiny: 1.01-1.16x). Llama's layers have no bias: nothing to fuse, and
      SmolLM2 measured 0.93-0.97x, so it keeps Keras's layers (`benchmarks/decoder_fusion.py`).

    With XLA the decoder is traced without them: XLA compiles each step whole, fusing operations itself.
    """
    from kit_plugins.generation.cache_updates import tensorflow_slice_updates
    from kit_plugins.generation.decode_attention import single_token_attention
    from kit_plugins.generation.grouped_attention import grouped_query_decoding

    from kit.fused_dense import fused_dense_layers

    if xla:
        yield
        return
    fused = fused_dense_layers() if biased_dense_layers(model) else contextlib.nullcontext()
    with tensorflow_slice_updates(), single_token_attention(), grouped_query_decoding(), fused:
        yield


class Generator:
    """A generation run's causal LM, ready to continue prompts.

    Args:
        run_dir: the run directory.
        unsafe: allow model.keras to hold Python code.
        trained: the run already loaded (a `kit.inference.TrainedModel`; `kit serve`), instead of loading it.
        eager_batches: how many batches of prompts are tokenised eagerly before a tokenizer graph is
            traced. Tracing costs about a second or two (SmolLM2's byte-pair tokenizer: 1.5 s with its
            first call), then ~4 ms a batch; eagerly a batch costs 0.03-1 s. So a command continuing a few
            batches never waits for the trace, and a server (0) traces it while warming up.
        jit_compile: compile `generate()`'s decoding loop with XLA (not `steps()`, which runs one step at
            a time from Python); None: Keras's `jit_compile="auto"`, XLA on a GPU. On 2 CPU cores XLA gives
            1.2-1.3x the tokens/s of SmolLM2-135M and 3.6-4.6x gpt-tiny's (2026-11-27, batch 1 and 8), but
            compiles again for each new batch size and prompt length.
    """

    def __init__(
        self,
        run_dir: Path,
        unsafe: bool = False,
        trained: Any = None,
        eager_batches: int = 4,
        jit_compile: bool | None = None,
    ):
        import keras_hub

        from kit.inference import TrainedModel

        trained = trained or TrainedModel(run_dir, unsafe)
        self.model = trained.model
        self.generated_tokens: list[int] = []  # per prompt, by the last generate() or steps()
        if not isinstance(self.model, keras_hub.models.CausalLM) or self.model.preprocessor is None:
            raise UsageError(
                f"{run_dir} is a '{trained.task.name}' run; kit generate needs a run of the generation task. "
                f"Use kit predict for it instead."
            )
        self.preprocessor = self.model.preprocessor
        self.tokenizer = self.preprocessor.tokenizer
        self.context = context_length(self.model)
        self.eager_batches = eager_batches
        # Keras resolves "auto" (XLA on a GPU, not under a distribution strategy, not for layers without
        # XLA support) and refuses XLA where it cannot run; the compiled state is otherwise unused here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras's "doesn't support jit_compile": said below in kit's words
            self.model.compile(jit_compile="auto" if jit_compile is None else jit_compile)
        self.jit_compile = bool(self.model.jit_compile)
        if jit_compile and not self.jit_compile:
            say(
                "kit: XLA cannot compile this model here (a layer without XLA support, or TensorFlow's "
                "deterministic ops are on in this process); generating without it."
            )

    def settings(self, values: dict[str, Any]) -> Sampling:
        """Sampler settings from a JSON object (`kit serve`'s /generate), checked like the command line's."""
        return Sampling.from_request(values)

    def _encode(self, prompts: list[str], max_new_tokens: int) -> tuple[dict[str, Any], list[int], int]:
        """Prompts as padded token ids, each prompt's length in tokens (start token included), and the
        length to generate to; tokenised once, at the full context, then cut to that length."""
        import tensorflow as tf

        texts = tf.constant(prompts)
        encode = lambda x: self.preprocessor.generate_preprocess(x, sequence_length=self.context)  # noqa: E731
        if self.eager_batches > 0:
            self.eager_batches -= 1
        else:
            encode = self._graph("encode", encode, texts)
        inputs = {name: value.numpy() for name, value in encode(texts).items()}
        lengths = [int(n) for n in np.sum(inputs["padding_mask"], axis=1)]
        for number, (prompt, length) in enumerate(zip(prompts, lengths), start=1):
            if length >= self.context:
                shown = prompt if len(prompt) < 60 else prompt[:57] + "..."
                raise UsageError(
                    f"Prompt {number} ('{shown}') is {length} tokens; the model's context is {self.context} tokens, "
                    f"so nothing could follow it. Shorten the prompt."
                )
        total = min(max(lengths) + max_new_tokens, self.context)
        return {name: value[:, :total] for name, value in inputs.items()}, lengths, total

    def generate(self, prompts: list[str], sampling: Sampling) -> list[str]:
        """One completion (the new text only) per prompt, generated as one batch."""
        sampling.check()
        inputs, lengths, _ = self._encode(prompts, sampling.max_new_tokens)
        saved = self.model.preprocessor, self.model.sampler, self.model.generate_function
        self.model.sampler, self.model.generate_function = self._decoder(sampling, inputs)
        self.model.preprocessor = None  # inputs are token ids already
        try:
            with decoder_tracing(self.model, xla=self.jit_compile):
                outputs = self.model.generate(inputs, stop_token_ids=self._stop_ids())
        finally:  # the model is keras-hub's again for anyone else who calls it
            self.model.preprocessor, self.model.sampler, self.model.generate_function = saved
        token_ids = np.asarray(outputs["token_ids"])
        new = [row[n : n + sampling.max_new_tokens] for row, n in zip(token_ids, lengths)]
        self.generated_tokens = [len(self._kept(ids)) for ids in new]
        return [self._decode(ids) for ids in new]

    def stream(self, prompt: str, sampling: Sampling) -> Iterator[str]:
        """Yield the completion of one prompt piece by piece, as tokens are generated."""
        for pieces in self.steps([prompt], sampling):
            if pieces[0]:
                yield pieces[0]

    def steps(
        self, prompts: list[str], sampling: Sampling, streamed: Sequence[bool] | None = None
    ) -> Iterator[list[str]]:
        """Continue several prompts together, one token per step (keras-hub's cached decoder, from Python).

        Yields, at every step, each prompt's new text ("" when it has none: its prompt is still
        being read, it has ended, or a multi-byte character is not complete yet), so each token can
        be shown as soon as it exists; the pieces of a prompt add up to its completion. A prompt
        whose `streamed` entry is False gets its whole completion in one piece when it ends
        (decoding text at every step costs more than the step). Prompts of different lengths share
        the steps as in keras-hub's `generate()`: a prompt's own tokens are kept until it is read.
        """
        import tensorflow as tf

        sampling.check()
        if sampling.sampler == "beam":
            raise UsageError("Beam search picks its best sequence at the end, so it cannot stream; drop --stream.")
        if not hasattr(self.model, "_build_cache"):
            raise UsageError(f"{type(self.model).__name__} does not expose keras-hub's decoding cache; drop --stream.")
        inputs, lengths, total = self._encode(prompts, sampling.max_new_tokens)
        sampler = sampling.make()
        token_ids = np.array(inputs["token_ids"])
        prompt = tf.constant(token_ids)
        with decoder_tracing(self.model, xla=False):  # `steps` graphs are never compiled with XLA
            _, cache = self._graph("cache", self.model._build_cache, prompt, lengths=(total,))(prompt)
        stop = set(self._stop_ids())
        rows = [_Row(length, True if streamed is None else streamed[n]) for n, length in enumerate(lengths)]
        step = None
        for index in range(min(lengths), total):
            arguments = (tf.constant(token_ids[:, index - 1 : index]), cache, tf.constant(index - 1, tf.int32))
            first = step is None  # the step graph is traced on its first call: the block is needed then only
            step = step or self._graph("step", self.model.call_with_cache, *arguments, lengths=(total,))
            with decoder_tracing(self.model, xla=False) if first else contextlib.nullcontext():
                logits, _, cache = step(*arguments)
            next_ids = np.asarray(sampler.get_next_token(sampler.compute_probabilities(logits[:, 0, :])))
            pieces = []
            for number, (row, next_id) in enumerate(zip(rows, next_ids)):
                if index >= row.length:  # past its prompt: the sampled token is its next input
                    token_ids[number, index] = next_id
                pieces.append(row.add(int(next_id), index, stop, sampling.max_new_tokens, self._decode))
            self.generated_tokens = [len(row.new) for row in rows]
            if all(row.done for row in rows):
                yield pieces
                return
            yield pieces
        yield [row.rest(self._decode) for row in rows]  # the context is full: what is not shown yet

    def _decoder(self, sampling: Sampling, inputs: dict[str, np.ndarray]) -> tuple[Any, Any]:
        """(sampler, keras-hub's generate step as a graph) for these sampler settings, kept for the next batch.

        keras-hub's own `compile(sampler=...)` drops its compiled function, and that function is traced
        again for every new batch size and prompt length (SmolLM2-135M: 11-14 s each time, longer than
        generating 64 tokens for 8 prompts). This one is traced once, for any batch size and length, and
        kept for the last few sampler settings (those the sampler reads: a seed is not one). Its sampler
        starts every call from the random state a new sampler would have, so a seed repeats.
        """
        import tensorflow as tf

        decoders: OrderedDict = self.__dict__.setdefault("_decoders", OrderedDict())
        key = sampling.traced_settings()
        if key not in decoders:
            sampler, model, stop_ids = sampling.make(), self.model, self._stop_ids()
            any_shape = {name: tf.TensorSpec([None] * value.ndim, value.dtype) for name, value in inputs.items()}

            @tf.function(input_signature=[any_shape], autograph=False, jit_compile=self.jit_compile)
            def generate_step(inputs: Any) -> Any:
                model.sampler = sampler  # keras-hub reads the sampler while tracing
                return model.generate_step(inputs, stop_ids)

            def generate_function(inputs: Any, stop_token_ids: Any = None) -> Any:
                return generate_step(inputs)  # kit always passes stop_ids (`generate`)

            decoders[key] = (sampler, generate_function)
            while len(decoders) > KEPT_DECODERS:
                decoders.popitem(last=False)
        decoders.move_to_end(key)
        sampler, function = decoders[key]
        for variable, start in zip(sampler.variables, sampling.make().variables):  # the seed generators
            variable.assign(start.value)
        return sampler, function

    def _graph(self, name: str, function: Any, *examples: Any, lengths: tuple[int, ...] = ()) -> Any:
        """`function` as a TensorFlow graph, traced once per generator for any batch size and length.

        Eager keras-hub calls (tokenising, the cache, a step) cost 10-30 times more per call, and a
        graph traced again for each new shape costs seconds every time (SmolLM2's byte-pair tokenizer:
        1.5 s). So the graph's signature comes from the first call's arguments (`examples`) with the
        batch dimension and every dimension of a size in `lengths` left open. kit's tokenizers give the
        same tokens in graphs as eagerly (`kit.compat.fix_keras_hub`)."""
        graphs = self.__dict__.setdefault("_graphs", {})
        if name not in graphs:
            import tensorflow as tf

            def open_dimensions(value: Any) -> Any:
                shape = [None if axis == 0 or size in lengths else size for axis, size in enumerate(value.shape)]
                return tf.TensorSpec(shape, value.dtype)

            signature = [tf.nest.map_structure(open_dimensions, example) for example in examples]
            graphs[name] = tf.function(function, input_signature=signature, autograph=False)
        return graphs[name]

    def _stop_ids(self) -> tuple[int, ...]:
        ids = [self.tokenizer.end_token_id]
        if hasattr(self.tokenizer, "end_token2_id"):
            ids.append(self.tokenizer.end_token2_id)
        return tuple(ids)

    def _kept(self, ids: Any) -> list[int]:
        """The tokens before the first end token."""
        stop = set(self._stop_ids())
        kept = []
        for token in ids:
            if int(token) in stop:
                break
            kept.append(int(token))
        return kept

    def _decode(self, ids: Any) -> str:
        import tensorflow as tf

        kept = self._kept(ids)
        if not kept:
            return ""
        ids = tf.constant(kept, tf.int32)
        text = self._graph("detokenize", self.tokenizer.detokenize, ids)(ids).numpy()
        return text.decode("utf-8", errors="ignore")  # as keras-hub decodes eagerly: a partial character waits


class _Row:
    """One prompt of `Generator.steps`: its length, the tokens it has gained, the text given so far."""

    def __init__(self, length: int, streamed: bool = True):
        self.length = length
        self.streamed = streamed
        self.new: list[int] = []
        self.shown = ""
        self.done = False

    def add(self, token: int, index: int, stop: set[int], limit: int, decode: Any) -> str:
        """Take the token sampled at `index`; return the text it adds (possibly "")."""
        if self.done or index < self.length:
            return ""
        if token in stop:
            self.done = True
            return self.rest(decode)
        self.new.append(token)
        self.done = len(self.new) >= limit
        return self.rest(decode) if self.streamed or self.done else ""

    def rest(self, decode: Any) -> str:
        """The text not given yet."""
        if not self.new:
            return ""
        text = decode(self.new)
        piece, self.shown = text[len(self.shown) :], text
        return piece


def read_prompts(path: Path) -> list[tuple[int, str]]:
    """(line number, prompt) for every non-blank line of a prompts file."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UsageError(f"Prompts file {path} does not exist.") from None
    except UnicodeDecodeError:
        raise UsageError(f"Prompts file {path} is not UTF-8 text. Re-save it as UTF-8, one prompt per line.") from None
    prompts = [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]
    if not prompts:
        raise UsageError(f"Prompts file {path} has no prompts: write one prompt per line.")
    return prompts
