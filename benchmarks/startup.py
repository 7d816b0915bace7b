"""Start-up cost of kit's light commands vs the bare minimum a click + pluggy CLI imports.

    python benchmarks/startup.py            # 15 interleaved rounds
    python benchmarks/startup.py --rounds 30

Times `kit --help`, `kit tasks`, `kit plugins` and `kit new` (each a fresh
process) against `python -c "import click, pluggy"`, interleaved round by
round, and reports each one's median wall time and its ratio to the baseline
(goal: at most 1.5x). Also checks, with `python -X importtime`, that none of
them imports TensorFlow or keras-hub. Appends the table to benchmarks/RESULTS.md.

The commands run with PYTHONDONTWRITEBYTECODE removed from their environment
and after one warm-up round, so kit's modules load from cached bytecode as
they do on a user's machine (pip compiles it at install time); a shell that
sets the variable would otherwise have every start recompile kit from source.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
KIT = [sys.executable, "-m", "kit"]


def commands(scratch: Path) -> dict[str, list[str]]:
    return {
        'python -c "import click, pluggy"': [sys.executable, "-c", "import click, pluggy"],
        "kit --help": [*KIT, "--help"],
        "kit tasks": [*KIT, "tasks"],
        "kit plugins": [*KIT, "plugins"],
        "kit new": [*KIT, "new", str(scratch / "project")],
        # What `kit new` cannot do without: it renders Jinja templates listed in YAML manifests.
        'python -c "import click, pluggy, jinja2, yaml"': [sys.executable, "-c", "import click, pluggy, jinja2, yaml"],
    }


CHILD_ENV = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


def wall_time(argv: list[str], scratch: Path) -> float:
    shutil.rmtree(scratch / "project", ignore_errors=True)
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=scratch, env=CHILD_ENV)
    return time.perf_counter() - started


def heavy_imports(argv: list[str], scratch: Path) -> list[str]:
    """Which of tensorflow / keras / keras_hub the command imports."""
    shutil.rmtree(scratch / "project", ignore_errors=True)
    traced = [argv[0], "-X", "importtime", *argv[1:]]
    result = subprocess.run(traced, capture_output=True, text=True, cwd=scratch, env=CHILD_ENV)
    modules = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    return sorted(name for name in ("tensorflow", "keras", "keras_hub") if name in modules)


def install_kind() -> str:
    """ "editable" when kit runs from a source checkout, else "regular"."""
    import kit

    return (
        "editable"
        if Path(kit.__file__).resolve().parent.parent == Path(__file__).resolve().parent.parent
        else "regular"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    env_note = os.environ.get("KIT_LOAD_PLUGINS")
    scratch = Path(tempfile.mkdtemp(prefix="kit-startup-"))
    table = commands(scratch)
    for argv in table.values():  # warm the file cache and .pyc files
        wall_time(argv, scratch)
    times: dict[str, list[float]] = {name: [] for name in table}
    for _ in range(args.rounds):
        for name, argv in table.items():
            times[name].append(wall_time(argv, scratch))
    baseline_name = next(iter(table))
    baseline = statistics.median(times[baseline_name])
    lines = []
    for name, argv in table.items():
        median = statistics.median(times[name])
        heavy = "-" if not name.startswith("kit") else (", ".join(heavy_imports(argv, scratch)) or "none")
        line = f"| `{name}` | {median * 1000:.0f} ms | {median / baseline:.2f}x | {heavy} |"
        print(line, flush=True)
        lines.append(line)
    shutil.rmtree(scratch, ignore_errors=True)
    header = (
        f"\n### Start-up: light commands vs import click, pluggy ({datetime.date.today()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}"
        f"{', KIT_LOAD_PLUGINS=' + env_note if env_note is not None else ''})\n\n"
        f"`python benchmarks/startup.py --rounds {args.rounds}` - median wall time of a fresh process, interleaved "
        f"({install_kind()} install, bytecode cached).\n\n"
        "| command | median | vs baseline | imports TensorFlow / Keras / keras-hub |\n|---|---|---|---|\n"
    )
    with open(RESULTS, "a", encoding="utf-8") as handle:
        handle.write(header + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
