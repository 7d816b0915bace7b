"""Decoding without XLA: `kit generate`'s decoder with one of its switches on (as kit runs it) and off.

    python benchmarks/decoder_switches.py --switch attention --folder RUN/export/huggingface --batch 8   # gpt-tiny
    python benchmarks/decoder_switches.py --switch cache-writes --folder RUN/export/huggingface --calls 40
    python benchmarks/decoder_switches.py --switch cache-writes --gguf SmolLM2-135M-Instruct.Q4_1.gguf --new 64 --calls 6

The switches `kit_plugins.generation.sampling.decoder_tracing` opens around a decoder's trace:

- `cache-writes`: keras-hub's `keras.ops.slice_update` calls written by `TensorStridedSliceUpdate`
  (`kit_plugins.generation.cache_updates`); off, they run as `XlaDynamicUpdateSlice`, which TensorFlow
  compiles on demand and runs apart from the graph;
- `attention`: `CachedMultiHeadAttention` scoring one query token over the cache in its own layout
  (`kit_plugins.generation.decode_attention`); off, Keras's einsums transpose the cache every step.
- `grouped-attention`: Llama's `LlamaAttention` writing a step into its cache with one update and scoring
  each group of query heads against its own key/value head (`kit_plugins.generation.grouped_attention`);
  off, keras-hub slices, stacks, repeats and transposes the cache every step.

Two `kit generate` decoders (`kit_plugins.generation.sampling.Generator`) on one model folder in one
process, one traced with the switch off. Greedy, prompts in and texts out, each decoder traced once, then
called in turn, the order alternating; median tokens/s of `--calls` calls each. Checks that both give the
same completions, on their first call and after the timed ones. Appends the table to benchmarks/RESULTS.md.
(Until 2026-11-27 this was `benchmarks/cache_writes.py`, with the cache-writes switch only.)
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from types import SimpleNamespace

PROMPT = "The capital of France is"
# --switch: (module in kit_plugins.generation, its context manager, what the decoder does with it off / on).
SWITCHES = {
    "cache-writes": ("cache_updates", "tensorflow_slice_updates", "XLA operation", "TensorFlow kernel (kit)"),
    "attention": ("decode_attention", "single_token_attention", "Keras's einsums", "cache layout (kit)"),
    "grouped-attention": ("grouped_attention", "grouped_query_decoding", "keras-hub's call", "one cache copy (kit)"),
}


def decoders(folder: str, prompts: list[str], sampling, switch: str) -> dict:
    """{name: Generator}, each traced once on `prompts`, the first with `switch` off."""
    import importlib

    import keras_hub
    from kit_plugins.generation.sampling import Generator

    from kit.text import load_preset

    module_name, function, off, on = SWITCHES[switch]
    module = importlib.import_module(f"kit_plugins.generation.{module_name}")
    made, completions = {}, {}
    for name in (off, on):
        model = load_preset(folder, keras_hub.models.CausalLM)
        generator = Generator(Path(folder), trained=SimpleNamespace(model=model, task=None), eager_batches=0)
        kept = getattr(module, function)
        if name == off:
            setattr(module, function, contextlib.nullcontext)
        try:
            completions[name] = generator.generate(prompts, sampling)  # traces the decoder
        finally:
            setattr(module, function, kept)
        made[name] = generator
    first, second = completions.values()
    if first != second:
        raise SystemExit(f"the decoders' completions differ: {first!r} vs {second!r}")
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--switch", choices=sorted(SWITCHES), required=True)
    parser.add_argument("--folder", help="a Hugging Face or keras-hub model folder (e.g. a run's export)")
    parser.add_argument("--gguf", type=Path, help="a .gguf file instead (converted once by kit)")
    parser.add_argument("--label", help="the model's name in the table (default: the folder's or file's name)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new", type=int, default=48)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    if not (args.folder or args.gguf):
        parser.error("pass --folder or --gguf")
    from kit_plugins.generation.sampling import Sampling

    if args.gguf:
        from kit_plugins.generation.gguf import hugging_face_folder

        args.folder = str(hugging_face_folder(args.gguf))
    sampling = Sampling(sampler="greedy", max_new_tokens=args.new)
    prompts = [PROMPT] * args.batch
    made = decoders(args.folder, prompts, sampling, args.switch)
    from _kit import append_results, median_seconds_in_turn

    calls = {name: lambda g=generator: g.generate(prompts, sampling) for name, generator in made.items()}
    seconds = median_seconds_in_turn(calls, args.calls)
    after_timing = {name: generator.generate(prompts, sampling) for name, generator in made.items()}
    if len({tuple(texts) for texts in after_timing.values()}) != 1:
        raise SystemExit(f"the decoders' completions differ after the timed calls: {after_timing!r}")
    median = {name: sum(made[name].generated_tokens) / s for name, s in seconds.items()}
    _, _, off, on = SWITCHES[args.switch]
    before, after = median[off], median[on]
    row = (
        f"| {args.switch} | {args.label or Path(args.gguf or args.folder).name} | {args.batch} | {args.new} | {args.calls} | "
        f"{before:,.1f} | {after:,.1f} | {after / before:.2f}x | yes |"
    )
    print(row)
    append_results(
        "Decoding without XLA: kit's decoder switches on and off",
        "`python benchmarks/decoder_switches.py` - two `kit generate` decoders on one model in one process, one "
        "traced with the switch off, called in turn, order alternating; greedy, prompts in and texts out; median "
        "tokens/s (off: cache-writes = XLA's operation, attention = Keras's einsums, grouped-attention = keras-hub's "
        "call).",
        ["switch", "model", "batch", "new tokens", "calls each", "off", "on (kit)", "speed-up", "same completions"],
        [row],
    )


if __name__ == "__main__":
    main()
