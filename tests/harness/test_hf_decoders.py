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
    from kit.text import train_bpe

    vocab, merges = train_bpe([text], vocabulary_size, ["<pad>", "<|endoftext|>"])
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
        f"task: generation\ndata:\n  train: {corpus}\n  batch_size: 8\n  validation_fraction: 0\n  test_fraction: 0\n"
        f"model:\n  backbone: {backbone}\n"
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


def tiny_llama_gguf(path, text):
    """The tiny Llama written as llama.cpp's converter would: GGUF names, permuted q/k, BPE tokenizer."""
    import gguf
    from kit_plugins.generation.gguf import TENSOR_NAMES, permute

    tokenizer = llama_tokenizer_json(text)
    tokens = sorted(tokenizer["model"]["vocab"], key=tokenizer["model"]["vocab"].get)
    tokens += [added["content"] for added in tokenizer["added_tokens"]]
    weights = llama_weights(len(tokens))
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(LLAMA["layers"])
    writer.add_embedding_length(LLAMA["hidden"])
    writer.add_feed_forward_length(LLAMA["intermediate"])
    writer.add_head_count(LLAMA["heads"])
    writer.add_head_count_kv(LLAMA["kv_heads"])
    writer.add_context_length(64)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if token in (BOS, EOS) else 1 for token in tokens])
    writer.add_token_merges(tokenizer["model"]["merges"])
    writer.add_bos_token_id(tokens.index(BOS))
    writer.add_eos_token_id(tokens.index(EOS))
    to_gguf = {hf.format(i=0): name.format(i=0) for name, hf in TENSOR_NAMES.items()}
    for name, array in weights.items():
        if name.endswith("q_proj.weight"):
            array = permute(array, LLAMA["heads"])
        elif name.endswith("k_proj.weight"):
            array = permute(array, LLAMA["kv_heads"])
        writer.add_tensor(to_gguf[name], array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, weights, tokenizer


def test_gguf_file_converts_back_to_the_hugging_face_weights(tmp_path, monkeypatch):
    from kit_plugins.generation.gguf import hugging_face_folder
    from safetensors.numpy import load_file

    monkeypatch.setenv("KIT_CACHE_DIR", str(tmp_path / "cache"))
    path, weights, tokenizer = tiny_llama_gguf(tmp_path / "tiny.gguf", python_docs(20_000))
    folder = hugging_face_folder(path)
    converted = load_file(str(folder / "model.safetensors"))
    assert sorted(converted) == sorted(weights)
    for name, array in weights.items():
        np.testing.assert_array_equal(converted[name], array, err_msg=name)  # q/k un-permuted exactly
    config = json.loads((folder / "config.json").read_text())
    assert config["tie_word_embeddings"] is True and config["num_key_value_heads"] == LLAMA["kv_heads"]
    vocabulary = {**tokenizer["model"]["vocab"], **{t["content"]: t["id"] for t in tokenizer["added_tokens"]}}
    assert json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"] == vocabulary
    assert json.loads((folder / "tokenizer_config.json").read_text()) == {"bos_token": BOS, "eos_token": EOS}
    from tokenizers import Tokenizer  # Hugging Face's own reader accepts the converted tokenizer too

    converted_tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    sample = "import os\nfor name in sorted(os.listdir('.')): print(name)  # déjà vu"
    ids = converted_tokenizer.encode(sample).ids
    assert converted_tokenizer.decode(ids) == sample and len(ids) < len(sample.encode())  # byte-level, merged
    assert hugging_face_folder(path) == folder  # converted once, then reused from the cache


def test_gguf_backbone_trains_and_generates(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_CACHE_DIR", str(tmp_path / "cache"))
    path, _, _ = tiny_llama_gguf(tmp_path / "tiny.gguf", python_docs(20_000))
    result = runner.invoke(cli, ["run", str(llama_project(tmp_path, path))])
    assert result.exit_code == 0, result.output
    text = generate(runner, tmp_path / "p" / "runs" / "run-1", "The class", "-n", "5", "--sampler", "greedy")
    assert text.startswith("The class")


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "does not exist"),
        (b"not a gguf file at all", "is not a readable GGUF file"),
    ],
)
def test_bad_gguf_backbones_are_explained(runner, tmp_path, monkeypatch, content, message):
    monkeypatch.setenv("KIT_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "model.gguf"
    if content is not None:
        path.write_bytes(content)
    result = runner.invoke(cli, ["run", str(llama_project(tmp_path, path))])
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not list((tmp_path / "cache").glob("gguf/*"))  # nothing half-converted left behind
