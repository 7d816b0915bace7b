"""`kit generate`: continue prompts with a trained generation run (added to the CLI through `register_commands`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from kit.commands import handle_errors, quiet_tensorflow
from kit.errors import UsageError


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("prompt", required=False)
@click.option(
    "--prompts", "prompts_file", type=click.Path(path_type=Path), help="A file of prompts, one per line (JSONL out)."
)
@click.option(
    "--sampler",
    type=click.Choice(["greedy", "top_k", "top_p", "random", "beam"]),
    default="top_k",
    show_default=True,
    help="How the next token is picked.",
)
@click.option("--max-new-tokens", "-n", type=int, default=64, show_default=True, help="Tokens to add to each prompt.")
@click.option("--temperature", "-t", type=float, default=1.0, show_default=True, help="Below 1: safer; above: bolder.")
@click.option("--top-k", type=int, default=50, show_default=True, help="Candidates kept by top_k.")
@click.option("--top-p", type=float, default=0.9, show_default=True, help="Probability mass kept by top_p.")
@click.option("--beams", type=int, default=4, show_default=True, help="Beam width for beam.")
@click.option("--seed", type=int, default=None, help="Make random samplers repeatable.")
@click.option("--stream", is_flag=True, help="Print tokens as they are generated (one prompt).")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Prompts generated together (--prompts).")
@click.option(
    "--jit-compile/--no-jit-compile",
    default=None,
    help="Compile the decoding loop with XLA (default: on a GPU only; not with --stream). On CPU 1.2-1.3x the "
    "tokens/s of SmolLM2, 3.6-4.6x gpt-tiny's, but each new batch size and prompt length compiles again.",
)
@click.option("--unsafe", is_flag=True, help="Allow loading models that contain Python code.")
@handle_errors
def generate(
    run_dir: Path,
    prompt: str | None,
    prompts_file: Path | None,
    stream: bool,
    batch_size: int,
    jit_compile: bool | None,
    unsafe: bool,
    **sampling: Any,
) -> None:
    """Continue PROMPT (or every line of --prompts) with a trained generation run.

    \b
    Examples:
      kit generate runs/run-1 "It is a truth universally acknowledged"
      kit generate runs/run-1 "Emma" --sampler greedy -n 40
      kit generate runs/run-1 --prompts prompts.txt --sampler top_p --top-p 0.95 --seed 1
      kit generate runs/run-1 "Emma" -n 512 --jit-compile
    """
    if (prompt is None) == (prompts_file is None):
        raise UsageError("Give a PROMPT or --prompts FILE (one of them).")
    if stream and prompts_file is not None:
        raise UsageError("--stream prints one prompt's tokens as they come; use it with a PROMPT, not --prompts.")
    if stream and jit_compile:
        raise UsageError(
            "--jit-compile compiles the batch decoder; --stream runs one step at a time from Python. Drop one of them."
        )
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}.")
    from kit_plugins.generation.sampling import Sampling, read_prompts

    settings = Sampling(**sampling)
    settings.check()
    prompts = read_prompts(prompts_file) if prompts_file is not None else [(0, prompt or "")]
    quiet_tensorflow()
    from kit_plugins.generation.sampling import Generator

    generator = Generator(run_dir, unsafe, jit_compile=jit_compile)
    if prompts_file is None:
        pieces = generator.stream(prompts[0][1], settings) if stream else generator.generate([prompts[0][1]], settings)
        click.echo(prompts[0][1], nl=False)
        for piece in pieces:
            click.echo(piece, nl=False)
        click.echo()
        return
    for start in range(0, len(prompts), batch_size):
        group = prompts[start : start + batch_size]
        completions = generator.generate([text for _, text in group], settings)
        for (line, text), completion in zip(group, completions):
            click.echo(json.dumps({"line": line, "prompt": text, "completion": completion}, ensure_ascii=False))
