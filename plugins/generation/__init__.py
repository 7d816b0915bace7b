"""The built-in `generation` plugin: causal language modelling, written on kit's public API alone.

It registers everything generation needs, as a third-party plugin would:
the `causal_text` input kind, the decoder backbone families (`gpt-tiny` and
`gpt-small` from scratch; pretrained causal LMs from keras-hub presets,
Hugging Face folders, GGUF files and kit runs), the `generation` task, and
the `kit generate` command. Importing it does not import TensorFlow.
"""

from __future__ import annotations

from typing import Any

from kit_plugins.generation.backbones import CausalText, GPTFromScratch, PretrainedDecoder
from kit_plugins.generation.task import GenerationTask

import kit


@kit.hookimpl
def register_input_kinds(register: Any) -> None:
    register(CausalText)


@kit.hookimpl
def register_backbones(register: Any) -> None:
    register(GPTFromScratch)
    register(PretrainedDecoder)


@kit.hookimpl
def register_tasks(register: Any) -> None:
    register(GenerationTask)


@kit.hookimpl
def register_commands(cli: Any) -> None:
    from kit_plugins.generation.command import generate

    cli.add_command(generate)
