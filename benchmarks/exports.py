"""Exports on real data: TFLite (float, dynamic int8, full int8) against the float SavedModel, and a GPT
exported to Hugging Face format checked with a real `transformers`.

    python benchmarks/exports.py [--hf-python /tmp/hfvenv/bin/python] [--work DIR]

1. Diamonds (../shared/data/diamonds.csv, 53,940 rows, price regression, MLP) and rotten_tomatoes
   (../shared/data/rotten_tomatoes.csv, 10,662 reviews, bert-tiny trained from scratch) are trained with
   `kit run`, then exported as saved_model and tflite (none, dynamic, int8) with `kit export`. For each:
   size on disk; latency of one example (median of 300 calls, batch of one, this process, after
   warm-up; the SavedModel through its serving signature with raw columns in, TFLite through its signature
   runner; text models take token ids, tokenised outside, as LiteRT needs); test metrics of the run's
   model and of the TFLite model on the same test rows (from export.json, measured by kit export).
2. gpt-tiny trained on Jane Austen (../shared/data/austen) and exported with --format huggingface; a
   separate Python with torch and transformers (`--hf-python`; `pip install torch transformers` into a
   venv) loads the folder with AutoModelForCausalLM / AutoTokenizer and compares, on prompts including
   indented and whitespace-heavy text: token ids (transformers' tokenizer vs kit's), next-token logits
   (max abs difference) and greedy continuations (vs `kit generate --sampler greedy`).

Figures are appended to benchmarks/RESULTS.md. Nothing is asserted: see tests/test_exports.py for the checks.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PROMPTS = ["It is a truth universally acknowledged", "Emma Woodhouse, handsome", "    She said:\n        'no  more'"]


def kit(*args: str, cwd: Path) -> str:
    result = subprocess.run([sys.executable, "-m", "kit", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"kit {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def train(work: Path, name: str, config: str) -> Path:
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kit.yaml").write_text(config, encoding="utf-8")
    kit("run", str(folder), cwd=work)
    return folder / "runs" / "run-1"


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def median_ms(call, rounds: int = 300) -> float:  # type: ignore[no-untyped-def]
    call()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def one_example(run: Path) -> tuple[dict[str, np.ndarray], object]:
    from kit.inference import TrainedModel

    trained = TrainedModel(run)
    return {k: np.asarray(v)[:1] for k, v in trained.sample_features(1).items()}, trained


def saved_model_latency(folder: Path, example: dict[str, np.ndarray]) -> float:
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  text SavedModels use its ops

    serve = tf.saved_model.load(str(folder)).signatures["serving_default"]
    names = json.loads((folder / "export.json").read_text())["signature"]["inputs"]
    feed = {names[k]: tf.constant(v) for k, v in example.items()}
    return median_ms(lambda: serve(**feed))


def tflite_latency(folder: Path, inputs: dict[str, np.ndarray]) -> float:
    import tensorflow as tf

    from kit.exports.tflite import _tf_ready

    runner = tf.lite.Interpreter(model_path=str(folder / "model.tflite")).get_signature_runner("serving_default")
    names = json.loads((folder / "export.json").read_text())["inputs"]
    feed = {names[k]: _tf_ready(np.asarray(v)) for k, v in inputs.items() if k in names}
    return median_ms(lambda: runner(**feed))


def tflite_rows(name: str, run: Path, work: Path, metric: str) -> list[str]:
    example, trained = one_example(run)
    kit("export", str(run), "--format", "saved_model", "-o", str(work / f"{name}-sm"), cwd=work)
    sm_ms = saved_model_latency(work / f"{name}-sm", example)
    sm_size = folder_size(work / f"{name}-sm")
    model_inputs = (
        example
        if trained.kind.name == "tabular"
        else {k: np.asarray(v) for k, v in trained.backbone.preprocess_batch(example).items()}
    )
    rows = [f"| {name} | SavedModel float32 | {sm_size / 1e6:.2f} MB | {sm_ms:.3f} ms | (reference) |"]
    for quantize in ("none", "dynamic", "int8"):
        folder = work / f"{name}-tflite-{quantize}"
        kit("export", str(run), "--format", "tflite", "--quantize", quantize, "-o", str(folder), cwd=work)
        measured = json.loads((folder / "export.json").read_text())["measured"]
        ours, theirs = measured["test_metrics_keras"][metric], measured["test_metrics_tflite"][metric]
        ms = tflite_latency(folder, model_inputs)
        label = {"none": "TFLite float32", "dynamic": "TFLite dynamic int8", "int8": "TFLite full int8"}[quantize]
        rows.append(
            f"| {name} | {label} | {measured['size_bytes'] / 1e6:.3f} MB | {ms:.3f} ms | "
            f"{metric} {ours:.4g} -> {theirs:.4g} ({theirs - ours:+.4g}) on {measured['test_examples']} test rows |"
        )
    return rows


HF_CHECK = r"""
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, prompts, n = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder).eval()
answers = []
for prompt in prompts:
    ids = [model.config.bos_token_id] + tokenizer(prompt)["input_ids"]  # kit's models start with <|endoftext|>
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = model(x).logits[0, -1].tolist()
        out = model.generate(x, max_new_tokens=n, do_sample=False, pad_token_id=model.config.pad_token_id)[0]
    new = out[len(ids):].tolist()
    if model.config.eos_token_id in new:
        new = new[: new.index(model.config.eos_token_id)]
    answers.append({"ids": ids, "logits": logits, "completion": tokenizer.decode(new)})
print(json.dumps(answers))
"""


def hugging_face_rows(work: Path, hf_python: str) -> list[str]:
    import keras

    from kit.inference import TrainedModel

    corpus = DATA / "austen"
    config = (
        f"task: generation\ndata:\n  train: {corpus}\n  unwrap_lines: true\n  batch_size: 32\n"
        f"model:\n  backbone: gpt-tiny\n  sequence_length: 64\n  vocabulary_size: 4000\n"
        f"train:\n  epochs: 1\n  steps_per_epoch: 300\n  learning_rate: 0.003\n  verbose: 0\n"
    )
    run = train(work, "austen", config)
    folder = work / "austen-hf"
    kit("export", str(run), "--format", "huggingface", "-o", str(folder), cwd=work)
    n = 16
    theirs = json.loads(
        subprocess.run([hf_python, "-c", HF_CHECK, str(folder), json.dumps(PROMPTS), str(n)], capture_output=True,
                       text=True, check=True).stdout.strip().splitlines()[-1]
    )  # fmt: skip
    lm = TrainedModel(run).model
    rows = []
    for prompt, answer in zip(PROMPTS, theirs):
        x = lm.preprocessor.generate_preprocess([prompt], sequence_length=64)
        length = int(np.asarray(x["padding_mask"]).sum())
        ids = np.asarray(x["token_ids"])[0, :length].tolist()
        logits = np.asarray(
            lm.backbone.token_embedding(lm.backbone({k: v[:, :length] for k, v in x.items()}), reverse=True)
        )
        ours = kit("generate", str(run), prompt, "--sampler", "greedy", "-n", str(n), cwd=work)[len(prompt) :].rstrip(
            "\n"
        )
        diff = float(np.max(np.abs(logits[0, -1] - np.asarray(answer["logits"]))))
        shown = prompt.replace("\n", "\\n")
        rows.append(
            f"| `{shown}` | {'same' if ids == answer['ids'] else 'DIFFERENT'} ({len(ids)}) | {diff:.2e} | "
            f"{'same' if ours == answer['completion'] else 'DIFFERENT'} |"
        )
    keras.backend.clear_session()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hf-python", default="/tmp/hfvenv/bin/python", help="A Python with torch and transformers.")
    parser.add_argument("--work", type=Path, default=Path("/tmp/kit-bench-exports"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    diamonds = train(
        args.work, "diamonds",
        f"task: regression\ndata:\n  train: {DATA / 'diamonds.csv'}\n  target: price\n  batch_size: 256\n"
        f"train:\n  epochs: 8\n  learning_rate: 0.003\n  verbose: 0\n",
    )  # fmt: skip
    reviews = train(
        args.work, "reviews",
        f"task: classification\ndata:\n  train: {DATA / 'rotten_tomatoes.csv'}\nmodel:\n  backbone: bert-tiny\n"
        f"  sequence_length: 64\n  vocabulary_size: 8000\ntrain:\n  epochs: 3\n  verbose: 0\n",
    )  # fmt: skip
    rows = tflite_rows("diamonds price (MLP)", diamonds, args.work, "mae")
    rows += tflite_rows("rotten_tomatoes (bert-tiny)", reviews, args.work, "accuracy")
    from benchmarks._kit import append_results

    append_results(
        "Exports: TFLite (float, dynamic-range int8, full int8) vs the float SavedModel",
        "`python benchmarks/exports.py`: each model trained with `kit run`, exported with `kit export` "
        "(--format saved_model; --format tflite --quantize none/dynamic/int8). Latency: one example, median of "
        "300 calls in one process after warm-up (SavedModel: raw columns in, tokenising inside for text; TFLite: "
        "its signature runner, token ids in for text). Metric change: every test row (up to 2,000) through the "
        "run's model and the TFLite model, measured by kit export. Other work (helpers' tests and builds) shared "
        "the 2 cores while this ran, so latencies are indicative.",
        ["data set", "format", "size", "latency (1 example)", "test metric, run's model -> export"],
        rows,
    )
    if Path(args.hf_python).exists():
        append_results(
            "Exports: gpt-tiny (Jane Austen) as a Hugging Face folder, loaded by transformers",
            "`python benchmarks/exports.py`: `kit export --format huggingface`, then a separate venv with torch "
            "2.13 (CPU) and transformers loads it with AutoModelForCausalLM/AutoTokenizer. Token ids: transformers' "
            "tokenizer (with the start token kit's models begin with) vs kit's; logits: max abs difference of the "
            "next-token logits after the prompt, transformers vs keras-hub; greedy: 16 new tokens vs `kit "
            "generate --sampler greedy`. Other work shared the 2 cores.",
            ["prompt", "token ids", "max logit diff", "greedy continuation"],
            hugging_face_rows(args.work, args.hf_python),
        )
    print((ROOT / "benchmarks" / "RESULTS.md").read_text()[-3000:])


if __name__ == "__main__":
    main()
