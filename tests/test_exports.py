"""Every export format of every built-in task, loaded as a user would: plain libraries, a fresh process, no kit.

One tiny run per task is trained once for the module (copied per test where a test writes into it).
Each test exports with `kit export` (which checks the export itself), then loads the folder again in a
subprocess that cannot import kit, by the code docs/exports.md shows, and compares with `kit predict` /
`kit generate`. Tokenisation is compared across training (tf.data), prediction and exports for every
tokenizer family on indented, whitespace-heavy text.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from kit.cli import cli
from kit.plugins import reset_plugins
from tests.conftest import make_tabular, project, review, write_csv

pytestmark = pytest.mark.slow

# Runs of spaces, tabs, indented lines, spaces before punctuation: where tokenizer paths used to part ways.
WHITESPACE_TEXTS = [
    "    indented   film  with   long    gaps",
    "a\t\tb  \n\n   c  ,  d !",
    'x   ::= "[" a\n      | b\n  c',
    "  wonderful  ,  charming   story  ",
]


def train(root: Path, name: str, config: str) -> Path:
    folder = project(root / name, config)
    os.environ["KIT_LOAD_PLUGINS"] = ""
    reset_plugins()
    result = CliRunner().invoke(cli, ["run", str(folder)])
    assert result.exit_code == 0, result.output
    return folder / "runs" / "run-1"


def reviews_csv(path: Path, rows: int = 200) -> Path:
    rng = random.Random(0)
    table = []
    for i in range(rows):
        positive = rng.random() < 0.5
        text = review(rng, positive)
        if i % 3 == 0:
            text = "    " + text.replace(" ", "   ", 2) + "\n\t  " + rng.choice(WHITESPACE_TEXTS)
        table.append([text, "pos" if positive else "neg"])
    return write_csv(path, ["text", "label"], table)


TINY_TEXT = "  sequence_length: 32\n  vocabulary_size: 300\ntrain:\n  epochs: 2\n  verbose: 0\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export-runs")
    data = root / "data"
    make_tabular(data)
    table = (data / "table.csv").read_text().splitlines()
    labelled = [table[0].replace(",y", ",label")] + [
        f"{line.rsplit(',', 1)[0]},{'high' if float(line.rsplit(',', 1)[1]) > 0 else 'low'}" for line in table[1:]
    ]
    (data / "labelled.csv").write_text("\n".join(labelled) + "\n")
    reviews_csv(data / "reviews.csv")
    from tests.harness.test_generation import python_docs

    (data / "docs.txt").write_text(python_docs(120_000), encoding="utf-8")
    train_block = "train:\n  epochs: 3\n  verbose: 0\n"
    return {
        "regression": train(
            root, "reg", f"task: regression\ndata:\n  train: {data}/table.csv\n  target: y\n{train_block}"
        ),
        "tabular": train(root, "tab", f"task: classification\ndata:\n  train: {data}/labelled.csv\n{train_block}"),
        "bert": train(
            root,
            "bert",
            f"task: classification\ndata:\n  train: {data}/reviews.csv\nmodel:\n  backbone: bert-tiny\n{TINY_TEXT}",
        ),
        "roberta": train(
            root,
            "roberta",
            f"task: classification\ndata:\n  train: {data}/reviews.csv\nmodel:\n  backbone: roberta-tiny\n{TINY_TEXT}",
        ),  # fmt: skip
        "gpt": train(
            root,
            "gpt",
            f"task: generation\ndata:\n  train: {data}/docs.txt\n  batch_size: 16\n  validation_fraction: 0.1\n"
            f"  test_fraction: 0.1\nmodel:\n  backbone: gpt-tiny\n{TINY_TEXT}",
        ),  # fmt: skip
    }


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    """`exported(run, fmt, *extra)`: the export folder and its export.json, made once for the module."""
    root, made = tmp_path_factory.mktemp("exports"), {}

    def make(run: str, fmt: str, *extra: str) -> tuple[Path, dict]:
        key = (run, fmt, *extra)
        if key not in made:
            folder = root / "-".join(key).replace("--", "")
            made[key] = (folder, export(runs[run], fmt, folder, *extra))
        return made[key]

    return make


def export(run: Path, fmt: str, destination: Path, *extra: str) -> dict:
    result = CliRunner().invoke(cli, ["export", str(run), "--format", fmt, "-o", str(destination), *extra])
    assert result.exit_code == 0, result.output
    assert "reload check passed" in result.output
    return json.loads((destination / "export.json").read_text())


def plain(script: str, *args: object) -> object:
    """Run `script` in a fresh Python that cannot import kit; it prints one JSON value."""
    guard = "import sys\nsys.modules['kit'] = None\nsys.modules['kit_plugins'] = None\n"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-I", "-c", guard + textwrap.dedent(script), *map(str, args)],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def kit_predict(run: Path, rows: Path) -> list[dict]:
    result = CliRunner().invoke(cli, ["predict", str(run), str(rows)])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]


def rows_file(folder: Path, header: list[str], rows: list[list]) -> Path:
    return write_csv(folder / "rows.csv", header, rows)


# ------------------------------------------------------------------ numbers in the user's units


def test_regression_exports_answer_in_the_data_units(runs, exported, tmp_path):
    rows = rows_file(tmp_path, ["x1", "x2", "colour"], [[0.5, 0.0, "red"], [0.0, 0.5, "blue"], [-0.3, 0.1, "green"]])
    expected = [p["y"] for p in kit_predict(runs["regression"], rows)]
    keras_folder, record = exported("regression", "keras")
    assert record["outputs"]["targets"] == ["y"] and record["requires"] == ["keras", "tensorflow"]
    sm_folder, _ = exported("regression", "saved_model")
    got = plain(
        """
        import json, sys, csv
        import numpy as np, keras, tensorflow as tf
        rows = list(csv.DictReader(open(sys.argv[3])))
        features = {"x1": np.array([float(r["x1"]) for r in rows], "float32"),
                    "x2": np.array([float(r["x2"]) for r in rows], "float32"),
                    "colour": np.array([r["colour"] for r in rows])}
        model = keras.saving.load_model(sys.argv[1] + "/model.keras")
        from_keras = model.predict_on_batch(features)["prediction"][:, 0].tolist()
        serve = tf.saved_model.load(sys.argv[2]).signatures["serving_default"]
        from_sm = serve(**{k: tf.constant(v) for k, v in features.items()})["prediction"].numpy()[:, 0].tolist()
        print(json.dumps([from_keras, from_sm]))
        """,
        keras_folder, sm_folder, rows,
    )  # fmt: skip
    for values in got:
        assert values == pytest.approx(expected, rel=1e-4, abs=1e-4)
    assert max(abs(v) for v in expected) > 0.3  # in units of y (3*x1 - 2*x2 + colour), not normalised


# ------------------------------------------------------------------ label names and probabilities


def test_classification_exports_give_label_names_and_probabilities(runs, exported, tmp_path):
    rows = rows_file(tmp_path, ["x1", "x2", "colour"], [[0.9, -0.5, "red"], [-0.9, 0.8, "green"], [0.1, 0.1, "blue"]])
    expected = kit_predict(runs["tabular"], rows)
    sm_folder, record = exported("tabular", "saved_model")
    assert record["outputs"]["labels"] == ["high", "low"]
    assert record["signature"]["outputs"] == ["label", "probabilities", "probability"]
    keras_folder, _ = exported("tabular", "keras")
    got = plain(
        """
        import json, sys, csv
        import numpy as np, keras, tensorflow as tf
        rows = list(csv.DictReader(open(sys.argv[3])))
        features = {"x1": np.array([float(r["x1"]) for r in rows], "float32"),
                    "x2": np.array([float(r["x2"]) for r in rows], "float32"),
                    "colour": np.array([r["colour"] for r in rows])}
        answers = []
        out = keras.saving.load_model(sys.argv[1] + "/model.keras").predict_on_batch(features)
        answers.append([[l.decode() for l in out["label"]], out["probabilities"].tolist()])
        serve = tf.saved_model.load(sys.argv[2]).signatures["serving_default"]
        out = serve(**{k: tf.constant(v) for k, v in features.items()})
        answers.append([[l.decode() for l in out["label"].numpy()], out["probabilities"].numpy().tolist()])
        print(json.dumps(answers))
        """,
        keras_folder, sm_folder, rows,
    )  # fmt: skip
    for labels, probabilities in got:
        assert labels == [p["label"] for p in expected]
        for row, prediction in zip(probabilities, expected):
            assert row == pytest.approx([prediction["probabilities"][name] for name in ("high", "low")], abs=1e-5)


def test_tflite_float_and_quantised_report_size_latency_and_metrics(runs, exported, tmp_path):
    rows = rows_file(tmp_path, ["x1", "x2", "colour"], [[0.9, -0.5, "red"], [-0.9, 0.8, "green"]])
    expected = kit_predict(runs["tabular"], rows)
    folders = {}
    for quantize in ("none", "dynamic", "int8"):
        folders[quantize], record = exported("tabular", "tflite", "--quantize", quantize)
        measured = record["measured"]
        assert record["quantize"] == quantize and measured["size_bytes"] > 0
        assert measured["latency_ms_one_example"] > 0
        assert set(measured["test_metrics_tflite"]) == set(measured["test_metrics_keras"]) >= {"accuracy"}
    assert record["requires"] == ["tensorflow"]
    sizes = {
        q: json.loads((folders[q] / "export.json").read_text())["measured"]["size_bytes"] for q in ("none", "int8")
    }
    assert sizes["int8"] < sizes["none"]
    got = plain(
        """
        import json, sys
        import numpy as np, tensorflow as tf
        run = tf.lite.Interpreter(model_path=sys.argv[1] + "/model.tflite").get_signature_runner("serving_default")
        out = run(x1=np.array([0.9, -0.9], "float32"), x2=np.array([-0.5, 0.8], "float32"),
                  colour=np.array([b"red", b"green"]))
        print(json.dumps(out["probabilities"].tolist()))
        """,
        folders["none"],
    )  # fmt: skip
    for row, prediction in zip(got, expected):
        assert row == pytest.approx([prediction["probabilities"][n] for n in ("high", "low")], abs=1e-4)


# ------------------------------------------------------------------ text: the whole model, tokenizer included


def test_text_classifier_exports_match_kit_predict(runs, exported, tmp_path):
    texts = [*WHITESPACE_TEXTS, "dull boring film", "a wonderful charming story"]
    rows = rows_file(tmp_path, ["text"], [[t] for t in texts])
    expected = kit_predict(runs["bert"], rows)
    folders = {fmt: exported("bert", fmt)[0] for fmt in ("saved_model", "keras")}
    folders["preset"], record = exported("bert", "preset")
    assert record["task_in_preset"] and record["keras_hub_class"] == "BertTextClassifier"
    folders["tflite"], lite = exported("bert", "tflite", "--quantize", "dynamic")
    assert lite["requires"] == ["keras-hub", "tensorflow", "tensorflow-text"]
    got = plain(
        """
        import json, sys
        import numpy as np, keras, keras_hub, tensorflow as tf
        import tensorflow_text  # the SavedModel's tokenizer ops
        texts = json.loads(sys.argv[5])
        answers = {}
        out = tf.saved_model.load(sys.argv[1]).signatures["serving_default"](text=tf.constant(texts))
        answers["saved_model"] = out["probabilities"].numpy().tolist()
        pre = keras_hub.models.TextClassifierPreprocessor.from_preset(sys.argv[2] + "/preprocessor")
        model = keras.saving.load_model(sys.argv[2] + "/model.keras")
        answers["keras"] = model.predict_on_batch(pre(texts))["probabilities"].tolist()
        classifier = keras_hub.models.TextClassifier.from_preset(sys.argv[3])
        answers["preset"] = keras.ops.convert_to_numpy(keras.ops.softmax(classifier.predict(texts, verbose=0))).tolist()
        labels = json.load(open(sys.argv[3] + "/labels.json"))
        run = tf.lite.Interpreter(model_path=sys.argv[4] + "/model.tflite").get_signature_runner()
        x = pre(texts)
        out = run(token_ids=np.asarray(x["token_ids"], "int32"), segment_ids=np.asarray(x["segment_ids"], "int32"),
                  padding_mask=np.asarray(x["padding_mask"]))
        answers["tflite_labels"] = [labels[i] for i in out["probabilities"].argmax(-1)]
        print(json.dumps(answers))
        """,
        *(folders[f] for f in ("saved_model", "keras", "preset", "tflite")), json.dumps(texts),
    )  # fmt: skip
    want = [[p["probabilities"][n] for n in ("neg", "pos")] for p in expected]
    for name in ("saved_model", "keras", "preset"):
        assert np.allclose(got[name], want, atol=1e-5), name
    # dynamic-range int8 may move a probability a little; the labels must still be kit's
    assert got["tflite_labels"] == [p["label"] for p in expected]


def test_mean_pooled_preset_says_it_holds_the_backbone_only(exported):
    folder, record = exported("roberta", "preset")
    assert record["task_in_preset"] is False
    assert "holds the fine-tuned backbone and its preprocessor only" in record["notes"][0]
    assert "keras_hub.models.Backbone.from_preset" in (folder / "README.md").read_text()


# ------------------------------------------------------------------ tokens: training = prediction = every export

TOKENS_IN_FRESH_PROCESS = """
import json, sys
import numpy as np, keras_hub
import tensorflow_text  # noqa: F401
texts = json.loads(sys.argv[2])
if sys.argv[3] == "causal":
    x = keras_hub.models.CausalLMPreprocessor.from_preset(sys.argv[1]).generate_preprocess(texts, sequence_length=32)
else:
    x = keras_hub.models.TextClassifierPreprocessor.from_preset(sys.argv[1])(texts)
ids, mask = np.asarray(x["token_ids"]), np.asarray(x["padding_mask"]).astype(bool)
print(json.dumps([row[m].tolist() for row, m in zip(ids, mask)]))
"""


def kit_tokens(run: Path, texts: list[str]) -> tuple[list[list[int]], list[list[int]]]:
    """(tokens as training makes them in tf.data, tokens as prediction/generation/serving make them eagerly)."""
    import tensorflow as tf

    from kit.inference import TrainedModel

    trained = TrainedModel(run)
    backbone, column = trained.backbone, trained.kind.columns()[0]
    causal = trained.task.name == "generation"

    def graph(x):  # what tf.data runs for training (generation packs the tokenizer's own output)
        if causal:
            return backbone.preprocessor.generate_preprocess(x[column], sequence_length=32)
        return backbone.preprocess(x)

    dataset = tf.data.Dataset.from_tensor_slices({column: texts}).map(graph)
    trained_tokens = [np.asarray(x["token_ids"])[np.asarray(x["padding_mask"], bool)].tolist() for x in dataset]
    eager = (
        backbone.preprocessor.generate_preprocess(texts, sequence_length=32)
        if causal
        else backbone.preprocess_batch({column: tf.constant(texts)})
    )
    ids, mask = np.asarray(eager["token_ids"]), np.asarray(eager["padding_mask"], bool)
    return trained_tokens, [row[m].tolist() for row, m in zip(ids, mask)]


@pytest.mark.parametrize("family", ["bert", "roberta", "gpt"])  # WordPiece, RoBERTa BPE, GPT-2 BPE
def test_tokens_are_the_same_in_training_prediction_and_exports(runs, exported, family):
    texts = WHITESPACE_TEXTS + ["plain words here"]
    trained_tokens, predicted_tokens = kit_tokens(runs[family], texts)
    assert predicted_tokens == trained_tokens
    fmt = "preset" if family == "gpt" else "keras"
    folder, _ = exported(family, fmt)
    folder = folder if family == "gpt" else folder / "preprocessor"
    exported = plain(TOKENS_IN_FRESH_PROCESS, folder, json.dumps(texts), "causal" if family == "gpt" else "text")
    assert exported == trained_tokens


# ------------------------------------------------------------------ generation: prompts and sampler settings in


def kit_generate(run: Path, prompt: str, *args: str) -> str:
    result = CliRunner().invoke(cli, ["generate", str(run), prompt, *args])
    assert result.exit_code == 0, result.output
    return result.output[len(prompt) :].rstrip("\n")


def test_generation_saved_model_takes_prompts_and_sampler_settings(runs, exported):
    folder, record = exported("gpt", "saved_model")
    assert record["requires"] == ["tensorflow", "tensorflow-text"]
    assert "    if x:\n        return  y" in record["checked_prompts"]  # whitespace-heavy prompts are checked
    prompts = ["The for statement", "    def f(x):\n        return"]
    expected = [kit_generate(runs["gpt"], p, "--sampler", "greedy", "-n", "6") for p in prompts]
    got = plain(
        """
        import json, sys
        import tensorflow as tf
        import tensorflow_text  # the tokenizer ops inside the graph
        generate = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
        prompts = tf.constant(json.loads(sys.argv[2]))
        def run(sampler, seed=0, **settings):
            values = dict(temperature=1.0, top_k=50, top_p=0.9)
            values.update(settings)
            out = generate(prompts=prompts, max_new_tokens=tf.constant(6), sampler=tf.constant(sampler),
                           temperature=tf.constant(values["temperature"]), top_k=tf.constant(values["top_k"]),
                           top_p=tf.constant(values["top_p"]), seed=tf.constant(seed))
            return [c.decode() for c in out["completions"].numpy()]
        answers = {"greedy": run("greedy"), "top_p_a": run("top_p", 7), "top_p_b": run("top_p", 7),
                   "random": run("random", 1, temperature=1.5)}
        try:
            run("beam")
            answers["beam"] = "accepted"
        except tf.errors.InvalidArgumentError as error:
            answers["beam"] = error.message
        print(json.dumps(answers))
        """,
        folder, json.dumps(prompts),
    )  # fmt: skip
    assert got["greedy"] == expected
    assert got["top_p_a"] == got["top_p_b"]  # the same seed, the same text
    assert all(isinstance(c, str) for c in got["random"])
    assert "Unknown sampler. Choose one of: greedy, top_k, top_p, random" in got["beam"]


def test_generation_hugging_face_folder_has_what_transformers_reads(exported):
    folder, record = exported("gpt", "huggingface")
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["GPT2LMHeadModel"] and config["model_type"] == "gpt2"
    vocabulary = json.loads((folder / "vocab.json").read_text())
    assert config["eos_token_id"] == vocabulary["<|endoftext|>"] and config["pad_token_id"] == vocabulary["<pad>"]
    assert config["vocab_size"] == len(vocabulary) and (folder / "merges.txt").is_file()
    tokenizer = json.loads((folder / "tokenizer_config.json").read_text())
    assert tokenizer["tokenizer_class"] == "GPT2Tokenizer" and tokenizer["pad_token"] == "<pad>"
    assert json.loads((folder / "generation_config.json").read_text())["eos_token_id"] == config["eos_token_id"]
    from safetensors.numpy import load_file

    weights = load_file(str(folder / "model.safetensors"))
    assert weights["transformer.wte.weight"].shape == (config["vocab_size"], config["n_embd"])
    assert record["transformers"].startswith("AutoModelForCausalLM")


# ------------------------------------------------------------------ refusals and failures leave nothing


@pytest.mark.parametrize(
    "run, args, message",
    [
        ("gpt", ["--format", "tflite"], "does not hold a generation run"),
        ("tabular", ["--format", "huggingface"], "keras-hub cannot export to transformers"),
        ("tabular", ["--format", "preset"], "has no keras-hub backbone"),
        ("tabular", ["--format", "saved_model", "--quantize", "int8"], "--quantize applies to --format tflite only"),
    ],
)
def test_formats_a_run_cannot_take_are_refused_in_one_line(runs, tmp_path, run, args, message):
    result = CliRunner().invoke(cli, ["export", str(runs[run]), *args, "-o", str(tmp_path / "out")])
    assert result.exit_code in (1, 2) and message in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def test_several_formats_are_exported_from_one_load_each_checked(runs, tmp_path, monkeypatch):
    from kit.inference import TrainedModel

    run = Path(shutil.copytree(runs["tabular"], tmp_path / "run"))
    reads = []
    sample_features = TrainedModel.sample_features
    monkeypatch.setattr(TrainedModel, "sample_features", lambda self: reads.append(1) or sample_features(self))
    args = ["export", str(run), "--format", "keras", "--format", "saved_model", "--format", "keras"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert result.output.count("reload check passed") == 2  # keras named twice is exported once
    assert sorted(p.name for p in (run / "export").iterdir()) == ["keras", "saved_model"]
    for fmt in ("keras", "saved_model"):
        assert json.loads((run / "export" / fmt / "export.json").read_text())["format"] == fmt
    assert len(reads) == 1  # both checked on the same examples, read once


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "keras", "--format", "preset"], "has no keras-hub backbone"),
        (["--format", "keras", "--format", "tflite", "--quantize", "dynamic"], "export that format in a command"),
        (["--format", "keras", "--format", "saved_model", "-o", "out"], "--output names one export folder"),
    ],
)
def test_several_formats_are_refused_before_any_is_written(runs, tmp_path, args, message):
    run = Path(shutil.copytree(runs["tabular"], tmp_path / "run"))
    args = [str(tmp_path / a) if a == "out" else a for a in args]
    result = CliRunner().invoke(cli, ["export", str(run), *args])
    assert result.exit_code in (1, 2) and message in result.output, result.output
    assert "Traceback" not in result.output
    assert not (run / "export").exists() and not (tmp_path / "out").exists()


def test_interrupted_tflite_export_leaves_nothing(runs, tmp_path, monkeypatch):
    from kit.exports import tflite

    run = Path(shutil.copytree(runs["tabular"], tmp_path / "run"))

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(tflite, "convert", interrupted)
    result = CliRunner().invoke(cli, ["export", str(run), "--format", "tflite"])
    assert result.exit_code == 130
    assert not (run / "export").exists()
    monkeypatch.undo()
    export(run, "tflite", run / "export" / "tflite")  # the same export again, now whole
    assert sorted(p.name for p in (run / "export").iterdir()) == ["tflite"]


# ------------------------------------------------------------------ the code docs/exports.md shows runs as shown

DOCS = (Path(__file__).resolve().parents[1] / "docs" / "exports.md").read_text(encoding="utf-8")
DOC_EXPORTS = {
    "keras tabular": ("tabular", "keras"),
    "saved_model text": ("bert", "saved_model"),
    "saved_model generation": ("gpt", "saved_model"),
    "preset text": ("bert", "preset"),
    "tflite tabular": ("tabular", "tflite", "--quantize", "none"),
}


def test_every_docs_example_runs_on_a_real_export(exported):
    import re

    blocks = re.findall(r"```python\n# run: ([^\n]+)\n(.*?)```", DOCS, flags=re.S)
    assert sorted(name for name, _ in blocks) == sorted(DOC_EXPORTS)
    for name, code in blocks:
        folder, _ = exported(*DOC_EXPORTS[name])
        code = re.sub(r'folder = "[^"]+"', f"folder = {str(folder)!r}", code)
        assert plain(code + "\nprint('null')") is None, name
