"""The generation task end to end: pretrain gpt-tiny on real text, generate with every sampler,
reload the exported preset, continue training and fine-tune a classifier from the run."""

from __future__ import annotations

import json
import os
import random

import pytest
from click.testing import CliRunner

from kit.cli import cli
from kit.plugins import reset_plugins
from tests.conftest import project, review

pytestmark = pytest.mark.slow


def python_docs(limit: int = 120_000) -> str:
    """Real English prose that ships with every Python: the interpreter's help topics."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[name] for name in sorted(topics))
    return text[:limit]


def generation_config(corpus, backbone="gpt-tiny", epochs=2, sequence_length=32, held_out=True) -> str:
    """A generation project. `held_out=False` for corpora of a few passages: a 10% split of them may well be
    empty, which kit refuses (set validation and test fractions to 0 instead)."""
    splits = "" if held_out else "  validation_fraction: 0\n  test_fraction: 0\n"
    return (
        f"task: generation\ndata:\n  train: {corpus}\n  batch_size: 16\n{splits}"
        f"model:\n  backbone: {backbone}\n  sequence_length: {sequence_length}\n  vocabulary_size: 600\n"
        f"train:\n  epochs: {epochs}\n  learning_rate: 0.003\n  verbose: 0\n"
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small pretraining run shared by the tests of this module."""
    root = tmp_path_factory.mktemp("generation")
    corpus = root / "corpus"
    corpus.mkdir()
    (corpus / "python_docs.txt").write_text(python_docs(), encoding="utf-8")
    folder = project(root / "lm", generation_config(corpus, epochs=3))
    os.environ["KIT_LOAD_PLUGINS"] = ""
    reset_plugins()
    result = CliRunner().invoke(cli, ["run", str(folder)])
    assert result.exit_code == 0, result.output
    return folder / "runs" / "run-1"


def generate(runner, run_dir, *args):
    result = runner.invoke(cli, ["generate", str(run_dir), *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_pretraining_lowers_perplexity_and_saves_everything(trained):
    history = [json.loads(line) for line in (trained / "history.jsonl").read_text().splitlines()]
    perplexities = [line["val_perplexity"] for line in history]
    assert all(later < earlier for earlier, later in zip(perplexities, perplexities[1:])), perplexities
    metrics = json.loads((trained / "metrics.json").read_text())
    for split in ("validation", "test"):
        assert 1 < metrics[split]["perplexity"] < 600  # below the vocabulary size: better than uniform
        assert metrics[split]["tokens"] > 0
    assert (trained / "model" / "model.keras").is_file()
    assert (trained / "model" / "preset" / "config.json").is_file()
    assert (trained / "model" / "preset" / "assets" / "tokenizer" / "merges.txt").is_file()


def test_every_sampler_continues_the_prompt(runner, trained):
    for sampler in ("greedy", "top_k", "top_p", "random", "beam"):
        output = generate(runner, trained, "The if statement", "--sampler", sampler, "-n", "12", "--seed", "3")
        assert output.startswith("The if statement")
        assert len(output.strip()) > len("The if statement")


def test_greedy_is_deterministic_and_streaming_matches_it(runner, trained):
    batch = generate(runner, trained, "The assert statement", "--sampler", "greedy", "-n", "16")
    again = generate(runner, trained, "The assert statement", "--sampler", "greedy", "-n", "16")
    streamed = generate(runner, trained, "The assert statement", "--sampler", "greedy", "-n", "16", "--stream")
    assert batch == again == streamed


def test_xla_compiled_decoding_gives_the_greedy_tokens(runner, trained):
    """In a fresh process: this one has TensorFlow's deterministic ops on (the run above), where Keras refuses XLA."""
    import subprocess
    import sys

    batch = generate(runner, trained, "The assert statement", "--sampler", "greedy", "-n", "16")
    command = [sys.executable, "-m", "kit", "generate", str(trained), "The assert statement", "--sampler", "greedy"]
    compiled = subprocess.run([*command, "-n", "16", "--jit-compile"], capture_output=True, text=True, check=True)
    assert compiled.stdout == batch
    assert "XLA cannot" not in compiled.stderr + compiled.stdout


def test_seeded_sampling_repeats(runner, trained):
    first = generate(runner, trained, "A class", "--sampler", "top_k", "--seed", "11", "-n", "16")
    second = generate(runner, trained, "A class", "--sampler", "top_k", "--seed", "11", "-n", "16")
    assert first == second


def test_one_generator_traces_each_graph_once_for_every_batch_shape(trained):
    """Batches of other sizes and prompt lengths reuse the traced graphs (SmolLM2-135M: 9-14 s a trace) and
    give what a fresh generator gives; a seeded sampler starts from its seed again on every call."""
    from kit_plugins.generation.sampling import Generator, Sampling

    generator = Generator(trained, eager_batches=1)
    traces = []
    step = generator.model.generate_step
    generator.model.generate_step = lambda *args: traces.append(args) or step(*args)
    batches = [["The for statement"], ["The for statement", "Names refer to objects", "A class"], ["x", "y"]]
    greedy = Sampling("greedy", max_new_tokens=6)
    completions = [generator.generate(batch, greedy) for batch in batches]
    assert len(traces) == 1
    assert "encode" in generator._graphs  # the first batch was tokenised eagerly, the others by one graph
    fresh = Generator(trained)  # tokenises eagerly
    assert completions == [fresh.generate(batch, greedy) for batch in batches]
    steps = []
    call_with_cache = generator.model.call_with_cache
    generator.model.call_with_cache = lambda *args: steps.append(args) or call_with_cache(*args)
    streamed = [["".join(pieces) for pieces in zip(*generator.steps(batch, greedy))] for batch in batches]
    assert streamed == completions
    assert len(steps) == 2  # traced once in the cache graph and once in the step graph, for all three batches
    for seeded in (Sampling("top_k", max_new_tokens=8, seed=5), Sampling("top_p", max_new_tokens=8, seed=7)):
        repeated = [generator.generate(batch, seeded) for batch in batches]
        assert repeated == [generator.generate(batch, seeded) for batch in batches]
        assert repeated == [fresh.generate(batch, seeded) for batch in batches]
    assert len(traces) == 3  # one decoder per sampler setting, whatever the seed
    generator.generate(batches[0], greedy)
    assert len(traces) == 3  # greedy's decoder was kept


def test_decoding_graphs_trace_dense_layers_as_fused_products(trained, monkeypatch):
    """Without XLA the batch decoder, and always the streaming graphs, take kit.fused_dense's row products
    (gpt-tiny: fewer, larger operations per token), write the cache with TensorFlow's own kernel
    (`cache_updates`) and score one token's attention in the cache's layout (`decode_attention`), and give
    keras-hub's own decoder's tokens (its `generate`:
    `test_exported_preset_loads_in_plain_keras_hub_and_generates_the_same`)."""
    import keras
    import keras_hub
    import tensorflow as tf
    from kit_plugins.generation import decode_attention
    from kit_plugins.generation.sampling import Generator, Sampling

    from kit import fused_dense

    products, cache_writes, one_token_attention, handed_to_keras = [], [], [], []
    keras_slice_update = keras.ops.slice_update
    product = fused_dense._rows_product
    monkeypatch.setattr(fused_dense, "_rows_product", lambda *a, **k: products.append(a) or product(*a, **k))
    write = tf.raw_ops.TensorStridedSliceUpdate
    monkeypatch.setattr(tf.raw_ops, "TensorStridedSliceUpdate", lambda **k: cache_writes.append(k) or write(**k))
    wrap = decode_attention._wrap

    def counted_wrap(keras_attention):  # the query lengths the switch is traced for, and those it hands to Keras
        def kerass(layer, query, *a, **k):
            handed_to_keras.append(query.shape[1])
            return keras_attention(layer, query, *a, **k)

        switched = wrap(kerass)
        return lambda layer, query, *a, **k: (
            one_token_attention.append(query.shape[1]) or switched(layer, query, *a, **k)
        )

    monkeypatch.setattr(decode_attention, "_wrap", counted_wrap)
    generator = Generator(trained, jit_compile=False)  # on a GPU "auto" would compile with XLA, unfused
    per_pass = 6 * generator.model.backbone.num_layers  # query, key, value, output, two feed-forward products
    greedy = Sampling("greedy", max_new_tokens=6)
    batch = generator.generate(["The for statement"], greedy)
    assert len(products) >= per_pass
    assert len(cache_writes) >= 2 * 2 * generator.model.backbone.num_layers  # keys and values, prompt and step
    assert one_token_attention.count(1) == generator.model.backbone.num_layers  # the loop's step, traced once
    traced = len(products)
    pieces = generator.steps(["The for statement"], greedy)
    writes = len(cache_writes)
    streamed = next(pieces)[0]
    assert len(products) - traced == 2 * per_pass  # the cache graph and the step graph, each traced once
    assert len(cache_writes) - writes >= 2 * 2 * generator.model.backbone.num_layers
    assert one_token_attention.count(1) == 2 * generator.model.backbone.num_layers  # and the streaming step graph
    assert 1 not in handed_to_keras  # every one-token step scored in the cache's layout
    streamed += "".join(piece for step in pieces for piece in step)
    assert streamed == batch[0]
    assert len(products) - traced == 2 * per_pass  # later steps reuse the traced graph
    # Keras's own calls are back once decoding is done: the fused calls are open only around the graphs' calls.
    assert keras.layers.Dense.call.__qualname__ == "Dense.call"
    assert keras.layers.EinsumDense.call.__qualname__ == "EinsumDense.call"
    assert keras.ops.slice_update is keras_slice_update
    assert "_compute_attention" not in vars(keras_hub.layers.CachedMultiHeadAttention)


def test_prompts_file_gives_jsonl_with_line_numbers(runner, trained, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The for statement\n\nNames refer to\n", encoding="utf-8")
    output = generate(runner, trained, "--prompts", str(prompts), "--sampler", "greedy", "-n", "8")
    rows = [json.loads(line) for line in output.splitlines()]
    assert [r["line"] for r in rows] == [1, 3]
    assert [r["prompt"] for r in rows] == ["The for statement", "Names refer to"]
    assert all(r["completion"] for r in rows)


def test_exported_preset_loads_in_plain_keras_hub_and_generates_the_same(runner, trained):
    import keras_hub

    ours = generate(runner, trained, "The while statement", "--sampler", "greedy", "-n", "10")
    lm = keras_hub.models.CausalLM.from_preset(str(trained / "model" / "preset"))
    lm.compile(sampler="greedy")
    prompt_tokens = int(lm.preprocessor.generate_preprocess("The while statement")["padding_mask"].numpy().sum())
    theirs = lm.generate("The while statement", max_length=prompt_tokens + 10)
    assert ours.strip() == theirs.strip()


def test_generate_refuses_bad_requests(runner, trained, tmp_path):
    cases = [
        (["x" * 400, "-n", "4"], "context is 32 tokens"),
        (["Hi", "--stream", "--sampler", "beam"], "cannot stream"),
        (["Hi", "--stream", "--jit-compile"], "--jit-compile compiles the batch decoder"),
        (["Hi", "--top-p", "1.5"], "--top-p must be in (0, 1]"),
        (["Hi", "--temperature", "0"], "--temperature must be above 0"),
        ([], "Give a PROMPT or --prompts FILE"),
        (["--prompts", str(tmp_path / "none.txt")], "does not exist"),
    ]
    for args, message in cases:
        result = runner.invoke(cli, ["generate", str(trained), *args])
        assert result.exit_code in (1, 2), (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output


def test_generate_needs_a_generation_run(runner, tmp_path, text_csv):
    folder = project(
        tmp_path / "c", f"task: classification\ndata:\n  train: {text_csv}\ntrain:\n  epochs: 1\n  verbose: 0\n"
    )
    assert runner.invoke(cli, ["run", str(folder)]).exit_code == 0
    result = runner.invoke(cli, ["generate", str(folder / "runs" / "run-1"), "Hello"])
    assert result.exit_code == 2
    assert "needs a run of the generation task" in result.output


def test_continue_pretraining_from_a_run(runner, trained, tmp_path):
    corpus = tmp_path / "more.txt"
    corpus.write_text(python_docs(40_000), encoding="utf-8")
    folder = project(tmp_path / "more", generation_config(corpus, backbone=trained, epochs=1, held_out=False))
    result = runner.invoke(cli, ["run", str(folder)])
    assert result.exit_code == 0, result.output
    record = json.loads((folder / "runs" / "run-1" / "run.json").read_text())
    start = json.loads((trained / "metrics.json").read_text())["test"]["perplexity"]
    # Continuing starts from the pretrained weights: far better than a fresh model (~vocabulary size).
    assert record["metrics"]["train"]["perplexity"] < max(start * 2, 100)


def test_fine_tune_a_classifier_on_the_pretrained_decoder(runner, trained, tmp_path, text_csv):
    config = (
        f"task: classification\ndata:\n  train: {text_csv}\n  batch_size: 16\nmodel:\n  backbone: {trained}\n"
        f"  sequence_length: 16\n"
        f"train:\n  epochs: 10\n  learning_rate: 0.003\n  verbose: 0\n"
    )
    folder = project(tmp_path / "cls", config)
    result = runner.invoke(cli, ["run", str(folder)])
    assert result.exit_code == 0, result.output
    run_dir = folder / "runs" / "run-1"
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["accuracy"] > 0.7
    # New reviews like the training ones (2 sentiment words among 5 others): a three-word phrase, shorter than any
    # training text, was labelled by chance of the training's float rounding on a given CPU.
    rng = random.Random(7)
    wanted = [rng.random() < 0.5 for _ in range(12)]
    new = tmp_path / "new.csv"
    new.write_text("text\n" + "".join(review(rng, positive) + "\n" for positive in wanted))
    output = runner.invoke(cli, ["predict", str(run_dir), str(new)]).output
    labels = [json.loads(line)["label"] for line in output.splitlines() if line.startswith("{")]
    assert len(labels) == 12
    assert sum(label == ("pos" if positive else "neg") for label, positive in zip(labels, wanted)) >= 10, labels


def test_generation_mistakes_are_explained(runner, tmp_path, trained):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (generation_config(empty), "or for a text corpus .txt/.md files"),
        (generation_config(trained.parent.parent / "lm.txt", sequence_length=64, backbone=trained), "does not exist"),
        (
            generation_config(tmp_path / "x.txt", backbone="gpt-huge", held_out=False),
            "is not a built-in backbone, an existing folder or file, or a keras-hub preset name. "
            "Built-in backbones: bert-small (kit_plugins.backbones.bert)",
        ),
    ]
    (tmp_path / "x.txt").write_text("Some text.\n")
    for number, (config, message) in enumerate(cases):
        folder = project(tmp_path / f"p{number}", config)
        result = runner.invoke(cli, ["run", str(folder)])
        assert result.exit_code == 1, result.output
        assert message in result.output, result.output
        assert not (folder / "runs").exists()


def test_a_causal_lm_has_no_head_for_a_backbone_learning_rate(runner, tmp_path, trained):
    corpus = tmp_path / "c.txt"
    corpus.write_text(python_docs(5_000), encoding="utf-8")
    config = generation_config(corpus, backbone=trained, held_out=False) + "  backbone_learning_rate: 0.0001\n"
    result = runner.invoke(cli, ["run", str(project(tmp_path / "p", config))])
    assert result.exit_code == 1
    assert "Every trainable weight of this model belongs to its backbone" in result.output


def test_sequence_longer_than_the_pretrained_decoder_allows(runner, tmp_path, trained):
    corpus = tmp_path / "c.txt"
    corpus.write_text(python_docs(5_000), encoding="utf-8")
    folder = project(tmp_path / "long", generation_config(corpus, backbone=trained, sequence_length=64, held_out=False))
    result = runner.invoke(cli, ["run", str(folder)])
    assert result.exit_code == 1
    assert "handles at most 32 tokens" in result.output
    assert not (folder / "runs").exists()


def test_export_formats_of_a_generation_run(runner, trained, tmp_path):
    import keras_hub

    for fmt in ("preset", "keras", "saved_model"):
        destination = tmp_path / fmt
        result = runner.invoke(cli, ["export", str(trained), "--format", fmt, "--output", str(destination)])
        assert result.exit_code == 0, result.output
        assert "reload check passed" in result.output
    lm = keras_hub.models.CausalLM.from_preset(str(tmp_path / "preset"))
    assert isinstance(lm, keras_hub.models.GPT2CausalLM)


def test_only_decoders_with_biased_dense_layers_are_traced_fused():
    """GPT-2's layers add biases, which fuse into their products; Llama's have none (SmolLM2 measured no gain)."""
    import keras
    from kit_plugins.generation.sampling import biased_dense_layers

    inputs = keras.Input((None, 4))
    projection = keras.layers.EinsumDense("abc,cd->abd", output_shape=(None, 4))  # no bias_axes: no bias
    unbiased = keras.Model(inputs, keras.layers.Dense(4, use_bias=False)(projection(inputs)))
    assert not biased_dense_layers(unbiased)
    assert biased_dense_layers(keras.Model(inputs, keras.layers.Dense(4)(projection(inputs))))


def test_every_split_is_packed_through_one_traced_tokenizer_graph():
    """tf.data traces each `map`'s function anew; the splits share one tokenizer graph (a byte-pair tokenizer's
    trace takes seconds), which gives the tokens the tokenizer gives, and goes when the tokenizer does."""
    import gc

    gone = _pack_two_splits()  # in a function of its own: TensorFlow's tracing keeps its caller's locals
    gc.collect()
    assert gone() is None  # the cache of traced graphs (weak keys) does not keep the tokenizer alive


def _pack_two_splits():
    """Packs a train and a test split with one tokenizer, checks the windows, returns a weak reference to it."""
    import weakref

    import keras_hub
    import numpy as np
    import tensorflow as tf
    from kit_plugins.generation.packing import document_tokens, pack_documents

    vocabulary = {"<|endoftext|>": 0, "a": 1, "b": 2, "ab": 3, "Ġ": 4, "Ġab": 5}
    tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=vocabulary, merges=["a b", "Ġ ab"])
    splits = {
        "train": tf.data.Dataset.from_tensor_slices({"text": ["ab ab", "ba"]}),
        "test": tf.data.Dataset.from_tensor_slices({"text": ["a b ab"]}),
    }
    windows = {name: [w for w, _ in pack_documents(d, tokenizer, "text", 2)] for name, d in splits.items()}
    assert document_tokens(tokenizer).experimental_get_tracing_count() == 1
    stream = [*np.asarray(tokenizer("ab ab")).tolist(), 0, *np.asarray(tokenizer("ba")).tolist(), 0]
    expected = [stream[start : start + 2] for start in range(0, len(stream) - 2, 3)]  # windows of 2 + 1 tokens
    assert [w["token_ids"].numpy().tolist() for w in windows["train"]] == expected
    return weakref.ref(tokenizer)
