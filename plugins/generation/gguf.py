"""Llama-family GGUF files (llama.cpp's format) as Hugging Face folders keras-hub converts.

`model.backbone: path/to/model.gguf` works through this module: the file is
read with the `gguf` package (pure Python; `pip install gguf`), dequantised to
float32, written once as a Hugging Face Llama folder (`config.json`,
`model.safetensors`, `tokenizer.json`, `tokenizer_config.json`) in kit's cache,
and loaded from there by `keras_hub.models.CausalLM.from_preset`.

Example:
    >>> folder = hugging_face_folder("SmolLM2-135M-Instruct.Q4_1.gguf")
    >>> lm = keras_hub.models.CausalLM.from_preset(str(folder))
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from kit.cache import cache_dir
from kit.errors import ModelError

# GGUF tensor names -> Hugging Face LlamaForCausalLM names ({i}: layer number).
TENSOR_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.attn_q.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blk.{i}.attn_k.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blk.{i}.attn_v.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blk.{i}.attn_output.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blk.{i}.ffn_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blk.{i}.ffn_up.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blk.{i}.ffn_down.weight": "model.layers.{i}.mlp.down_proj.weight",
}
CONTROL_TOKEN = 3  # tokenizer.ggml.token_type of special tokens
FORMAT = 3  # of the converted folder; part of the cache key, so a folder an older kit wrote is converted again


def is_gguf(source: str) -> bool:
    return source.lower().endswith(".gguf")


def hugging_face_folder(gguf_file: str | Path) -> Path:
    """The Hugging Face folder converted from `gguf_file`, converting it on first use.

    The folder's name carries the file's size and modification time (and
    kit's conversion format), so an edited file is converted again; the conversion is written to a temporary
    folder and renamed, so an interrupted one leaves nothing half-done.
    """
    path = Path(gguf_file).expanduser().resolve()
    if not path.is_file():
        raise ModelError(f"model.backbone {gguf_file} does not exist. Point it at a .gguf file or a model folder.")
    stat = path.stat()
    key = hashlib.sha256(f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{FORMAT}".encode()).hexdigest()[:12]
    target = cache_dir() / "gguf" / f"{path.stem}-{key}"
    if (target / "model.safetensors").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        convert(path, scratch)
        scratch.replace(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def convert(gguf_file: Path, folder: Path) -> None:
    """Write `gguf_file` (a Llama-architecture GGUF) as a Hugging Face Llama folder."""
    reader = _reader(gguf_file)
    meta = {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}
    architecture = meta.get("general.architecture")
    if architecture != "llama":
        raise ModelError(
            f"{gguf_file} holds a '{architecture}' model; kit converts Llama-architecture GGUF files "
            f"(Llama, SmolLM, Mistral-style). Use a Hugging Face or keras-hub folder for others."
        )
    tokenizer, vocabulary_size = _tokenizer(meta, gguf_file)
    config = _config(meta, vocabulary_size)
    weights = _weights(reader, config)
    config["tie_word_embeddings"] = "lm_head.weight" not in weights
    from safetensors.numpy import save_file

    save_file(weights, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer["json"]))
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer["config"], indent=2))


def _reader(gguf_file: Path) -> Any:
    try:
        import gguf
    except ImportError:
        raise ModelError(
            f"Reading {gguf_file.name} needs the `gguf` package: pip install gguf (or pip install 'kit[gguf]')."
        ) from None
    try:
        return gguf.GGUFReader(str(gguf_file))
    except (ValueError, OSError) as exc:
        raise ModelError(f"{gguf_file} is not a readable GGUF file: {exc}") from None


def _config(meta: dict[str, Any], vocabulary_size: int) -> dict[str, Any]:
    def need(key: str) -> Any:
        if key not in meta:
            raise ModelError(f"The GGUF file has no '{key}' entry; kit cannot rebuild the model's config.")
        return meta[key]

    heads = int(need("llama.attention.head_count"))
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": vocabulary_size,
        "hidden_size": int(need("llama.embedding_length")),
        "intermediate_size": int(need("llama.feed_forward_length")),
        "num_hidden_layers": int(need("llama.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(meta.get("llama.attention.head_count_kv", heads)),
        "max_position_embeddings": int(meta.get("llama.context_length", 2048)),
        "rope_theta": float(meta.get("llama.rope.freq_base", 10000.0)),
        "rms_norm_eps": float(meta.get("llama.attention.layer_norm_rms_epsilon", 1e-5)),
    }


def _weights(reader: Any, config: dict[str, Any]) -> dict[str, np.ndarray]:
    from gguf.quants import dequantize

    names = _name_map(config["num_hidden_layers"])
    weights = {}
    for tensor in reader.tensors:
        if tensor.name not in names:
            continue  # e.g. rope_freqs: recomputed by keras-hub from the config
        array = dequantize(tensor.data, tensor.tensor_type).astype("float32")
        array = array.reshape([int(n) for n in reversed(tensor.shape)])  # GGUF lists dimensions innermost first
        name = names[tensor.name]
        if name.endswith("q_proj.weight"):
            array = unpermute(array, config["num_attention_heads"])
        elif name.endswith("k_proj.weight"):
            array = unpermute(array, config["num_key_value_heads"])
        weights[name] = np.ascontiguousarray(array)
    return weights


def _name_map(layers: int) -> dict[str, str]:
    names = {}
    for gguf_name, hf_name in TENSOR_NAMES.items():
        if "{i}" not in gguf_name:
            names[gguf_name] = hf_name
            continue
        for i in range(layers):
            names[gguf_name.format(i=i)] = hf_name.format(i=i)
    return names


def unpermute(weights: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row order: its rotary embedding pairs neighbouring rows, Hugging Face's halves."""
    rows = weights.shape[0]
    return weights.reshape(heads, rows // heads // 2, 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's q/k row order, as its `convert_hf_to_gguf.py` writes it; `unpermute` inverts it."""
    rows = weights.shape[0]
    return weights.reshape(heads, 2, rows // heads // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _tokenizer(meta: dict[str, Any], gguf_file: Path) -> tuple[dict[str, Any], int]:
    """tokenizer.json (byte-level BPE) and tokenizer_config.json from the GGUF's tokenizer entries."""
    if meta.get("tokenizer.ggml.model") != "gpt2":
        raise ModelError(
            f"{gguf_file} has a '{meta.get('tokenizer.ggml.model')}' tokenizer; kit converts byte-level BPE "
            f"('gpt2') tokenizers, as used by Llama 3 and SmolLM. Use the model's Hugging Face folder instead."
        )
    tokens = list(meta["tokenizer.ggml.tokens"])
    kinds = list(meta.get("tokenizer.ggml.token_type", [1] * len(tokens)))
    special = [i for i, kind in enumerate(kinds) if kind == CONTROL_TOKEN]
    vocabulary = {token: i for i, token in enumerate(tokens)}
    # Every field the Hugging Face `tokenizers` library requires of an added token, not only what keras-hub reads.
    flags = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
    added = [{"id": i, "content": tokens[i], **flags} for i in special]
    bos = tokens[int(meta.get("tokenizer.ggml.bos_token_id", special[0] if special else 0))]
    eos = tokens[int(meta.get("tokenizer.ggml.eos_token_id", special[-1] if special else 0))]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    tokenizer_json = {  # a complete tokenizer.json: keras-hub reads the model, transformers all of it
        "version": "1.0",
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": None,
        "decoder": byte_level,
        "model": {"type": "BPE", "vocab": vocabulary, "merges": list(meta.get("tokenizer.ggml.merges", []))},
    }
    return {"json": tokenizer_json, "config": {"bos_token": bos, "eos_token": eos}}, len(tokens)
