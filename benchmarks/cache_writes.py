"""Decoding without XLA: keras-hub's cache writes as TensorFlow's own kernel (kit) vs XLA's operation run apart.

    python benchmarks/cache_writes.py --folder RUN/export/huggingface --batch 8 --new 48 --calls 40   # gpt-tiny
    python benchmarks/cache_writes.py --gguf SmolLM2-135M-Instruct.Q4_1.gguf --batch 8 --new 64 --calls 6

Two `kit generate` decoders (`kit_plugins.generation.sampling.Generator`) on one model folder in one process:
one traced as kit traces it, with keras-hub's `keras.ops.slice_update` calls written by
`TensorStridedSliceUpdate` (`kit_plugins.generation.cache_updates`), one traced with that switch off, so
that they run as `XlaDynamicUpdateSlice`, which TensorFlow compiles on demand and runs apart from the
graph. Greedy, prompts in and texts out, each decoder traced once, then called in turn, the order
alternating; median tokens/s of `--calls` calls each. Checks that both give the same completions.
Appends the table to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from types import SimpleNamespace

PROMPT = "The capital of France is"


def decoders(folder: str, prompts: list[str], sampling) -> dict:
    """{name: Generator}, each traced once on `prompts`; 'XLA operation' traced without kit's switch."""
    import keras_hub
    from kit_plugins.generation import cache_updates
    from kit_plugins.generation.sampling import Generator

    from kit.text import load_preset

    made, completions = {}, {}
    for name in ("XLA operation", "TensorFlow kernel (kit)"):
        model = load_preset(folder, keras_hub.models.CausalLM)
        generator = Generator(Path(folder), trained=SimpleNamespace(model=model, task=None), eager_batches=0)
        switch = cache_updates.tensorflow_slice_updates
        if name == "XLA operation":
            cache_updates.tensorflow_slice_updates = contextlib.nullcontext
        try:
            completions[name] = generator.generate(prompts, sampling)  # traces the decoder
        finally:
            cache_updates.tensorflow_slice_updates = switch
        made[name] = generator
    first, second = completions.values()
    if first != second:
        raise SystemExit(f"the decoders' completions differ: {first!r} vs {second!r}")
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", help="a Hugging Face or keras-hub model folder (e.g. a run's export)")
    parser.add_argument("--gguf", type=Path, help="a .gguf file instead (converted once by kit)")
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
    made = decoders(args.folder, prompts, sampling)
    from _kit import append_results, median_seconds_in_turn

    calls = {name: lambda g=generator: g.generate(prompts, sampling) for name, generator in made.items()}
    seconds = median_seconds_in_turn(calls, args.calls)
    median = {name: sum(made[name].generated_tokens) / s for name, s in seconds.items()}
    before, after = median["XLA operation"], median["TensorFlow kernel (kit)"]
    row = (
        f"| {Path(args.gguf or args.folder).name} | {args.batch} | {args.new} | {args.calls} | {before:,.1f} | "
        f"{after:,.1f} | {after / before:.2f}x | yes |"
    )
    print(row)
    append_results(
        "Decoding without XLA: cache writes by TensorFlow's kernel vs XLA's operation",
        "`python benchmarks/cache_writes.py` - two `kit generate` decoders on one model in one process, called "
        "in turn, order alternating; greedy, prompts in and texts out; median tokens/s.",
        [
            "model",
            "batch",
            "new tokens",
            "calls each",
            "XLA operation",
            "TensorFlow kernel (kit)",
            "speed-up",
            "same completions",
        ],  # fmt: skip
        [row],
    )


if __name__ == "__main__":
    main()
