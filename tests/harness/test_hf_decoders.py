"""Pretrained decoders from Hugging Face-format folders (Llama) and GGUF files, built in the tests."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kit.cli import cli
from tests.conftest import project
from tests.harness.test_generation import generate, python_docs

pytestmark = pytest.mark.slow

LLAMA = dict(hidden=16, layers=1, heads=2, kv_heads=1, intermediate=32)
BOS, EOS = "<s>", "</s>"


def llama_tokenizer_json(text: str, vocabulary_size: int = 400) -> dict:
    """A byte-level BPE `tokenizer.json` trained on `text`, with Llama's begin/end tokens added."""
    from kit.decoders import train_bpe

    vocab, merges = train_bpe([text], vocabulary_size)
    added = [{"id": len(vocab) + i, "content": token, "special": True} for i, token in enumerate((BOS, EOS))]
    return {"model": {"type": "BPE", "vocab": vocab, "merges": merges}, "added_tokens": added}


def llama_weights(vocabulary_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights under the names and (out, in) shapes Hugging Face's LlamaForCausalLM uses."""
    rng = np.random.default_rng(seed)
    hidden, inter, head_dim = LLAMA["hidden"], LLAMA["intermediate"], LLAMA["hidden"] // LLAMA["heads"]
    kv = LLAMA["kv_heads"] * head_dim

    def w(*shape):
        return (rng.normal(size=shape) * 0.2).astype("float32")

    weights = {"model.embed_tokens.weight": w(vocabulary_size, hidden), "model.norm.weight": np.ones(hidden, "float32")}
    for i in range(LLAMA["layers"]):
        layer = f"model.layers.{i}."
        weights |= {
            layer + "input_layernorm.weight": np.ones(hidden, "float32"),
            layer + "post_attention_layernorm.weight": np.ones(hidden, "float32"),
            layer + "self_attn.q_proj.weight": w(hidden, hidden),
            layer + "self_attn.k_proj.weight": w(kv, hidden),
            layer + "self_attn.v_proj.weight": w(kv, hidden),
            layer + "self_attn.o_proj.weight": w(hidden, hidden),
            layer + "mlp.gate_proj.weight": w(inter, hidden),
            layer + "mlp.up_proj.weight": w(inter, hidden),
            layer + "mlp.down_proj.weight": w(hidden, inter),
        }
    return weights


def llama_config(vocabulary_size: int) -> dict:
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": vocabulary_size,
        "hidden_size": LLAMA["hidden"],
        "intermediate_size": LLAMA["intermediate"],
        "num_hidden_layers": LLAMA["layers"],
        "num_attention_heads": LLAMA["heads"],
        "num_key_value_heads": LLAMA["kv_heads"],
        "max_position_embeddings": 64,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": True,
    }


def tiny_llama_folder(folder, text):
    """A Hugging Face Llama folder (config.json, model.safetensors, tokenizer files), as from the Hub."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True)
    tokenizer = llama_tokenizer_json(text)
    size = len(tokenizer["model"]["vocab"]) + len(tokenizer["added_tokens"])
    (folder / "config.json").write_text(json.dumps(llama_config(size)))
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": BOS, "eos_token": EOS}))
    save_file(llama_weights(size), str(folder / "model.safetensors"))
    return folder


def llama_project(tmp_path, backbone, epochs=1):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(python_docs(20_000), encoding="utf-8")
    config = (
        f"task: generation\ndata:\n  train: {corpus}\n  batch_size: 8\nmodel:\n  backbone: {backbone}\n"
        f"  sequence_length: 32\ntrain:\n  epochs: {epochs}\n  learning_rate: 0.003\n  verbose: 0\n"
    )
    return project(tmp_path / "p", config)


def test_hugging_face_llama_folder_continues_training_and_generates(runner, tmp_path):
    import keras_hub

    folder = tiny_llama_folder(tmp_path / "llama", python_docs(20_000))
    before = keras_hub.models.CausalLM.from_preset(str(folder))
    assert type(before).__name__ == "Llama3CausalLM"
    result = runner.invoke(cli, ["run", str(llama_project(tmp_path, folder, epochs=2))])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "p" / "runs" / "run-1"
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert history[-1]["loss"] < history[0]["loss"]
    ours = generate(runner, run_dir, "The class", "--max-new-tokens", "8", "--sampler", "greedy")
    assert ours.startswith("The class")
    # The run's preset is a Llama again, with the trained weights: it generates what kit generated.
    reloaded = keras_hub.models.CausalLM.from_preset(str(run_dir / "model" / "preset"))
    assert type(reloaded).__name__ == "Llama3CausalLM"
    reloaded.compile(sampler="greedy")
    prompt_tokens = int(reloaded.preprocessor.generate_preprocess("The class")["padding_mask"].numpy().sum())
    assert reloaded.generate("The class", max_length=prompt_tokens + 8).strip() == ours.strip()


def test_hugging_face_folder_without_weights_is_explained(runner, tmp_path):
    folder = tiny_llama_folder(tmp_path / "llama", python_docs(5_000))
    (folder / "model.safetensors").unlink()
    result = runner.invoke(cli, ["run", str(llama_project(tmp_path, folder))])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert str(folder) in result.output
