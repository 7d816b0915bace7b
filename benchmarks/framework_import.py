"""What importing TensorFlow and Keras costs a kit command, against a plain `import tensorflow, keras`.

    python benchmarks/framework_import.py            # 7 interleaved rounds
    python benchmarks/framework_import.py --rounds 15

Every command that trains or loads a model starts with `kit.commands.quiet_tensorflow()`. Each side is a
fresh process, interleaved round by round; the table gives the median wall time, the median peak RSS (the
child's own, from `wait4`) and which of Keras's optional companions (scikit-learn, pandas) the import loaded.
The figures depend on what is installed: with neither package, both sides import the same modules.
Appends the table to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys

from _kit import append_results, run_measured

REPORT = "import sys; print(' '.join(m for m in ('sklearn', 'pandas') if m in sys.modules) or 'neither')"
SIDES = {
    "import tensorflow, keras": f"import tensorflow, keras; {REPORT}",
    "kit.commands.quiet_tensorflow()": f"from kit.commands import quiet_tensorflow; quiet_tensorflow(); {REPORT}",
}


def measure(code: str) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MB and the report line of one fresh process."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    status, wall, peak, output = run_measured([sys.executable, "-c", code], env, stderr=subprocess.DEVNULL)
    if status != 0:
        raise SystemExit(f"{code!r} failed")
    return wall, peak, output.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    for code in SIDES.values():  # warm the file cache and .pyc files
        measure(code)
    runs: dict[str, list[tuple[float, float, str]]] = {name: [] for name in SIDES}
    for _ in range(args.rounds):
        for name, code in SIDES.items():
            runs[name].append(measure(code))
    lines = []
    for name, results in runs.items():
        wall = statistics.median(result[0] for result in results)
        rss = statistics.median(result[1] for result in results)
        line = f"| `{name}` | {wall:.2f} s | {rss:,.0f} MB | {results[-1][2]} |"
        print(line, flush=True)
        lines.append(line)
    append_results(
        f"Importing TensorFlow and Keras (Python {platform.python_version()})",
        f"`python benchmarks/framework_import.py --rounds {args.rounds}` - median of fresh processes, interleaved.",
        ["import", "wall time", "peak RSS", "of scikit-learn, pandas, loaded"],
        lines,
    )


if __name__ == "__main__":
    main()
