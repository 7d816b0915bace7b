"""A second text-classification data set for the benchmarks: Debian's `fortunes` package as a CSV.

    apt-get install fortunes          # or: apt-get download fortunes && dpkg-deb -x fortunes_*.deb root
    python benchmarks/fortunes_csv.py /usr/share/games/fortunes fortunes.csv
    python benchmarks/vs_transformers.py --hf-python PY --data fortunes.csv --train-rows 11500 --epoch \\
        --sides "kit (defaults)" --sides "Trainer (dynamic padding, grouped by length)"

Each entry (the text between lines holding `%`) becomes one row, `text` its words joined by single spaces,
`label` the topic file it came from: 14,377 texts in 40 topics (the largest `people`, 1,251; 33 tokens on
average with MiniLM's tokenizer), shuffled with a fixed seed. Unlike rotten_tomatoes (two labels, short
reviews) it has many classes of very different sizes and texts from one word to a page.
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path


def entries(folder: Path) -> list[tuple[str, str]]:
    """(text, topic) for each entry of each topic file in `folder` (not the .dat indexes or the .u8 links)."""
    rows = []
    for path in sorted(folder.iterdir()):
        if path.suffix or path.is_symlink() or not path.is_file():
            continue
        for entry in path.read_text(encoding="latin-1").split("\n%\n"):
            text = " ".join(entry.split())
            if len(text) > 10:
                rows.append((text, path.name))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="the fortunes folder, e.g. /usr/share/games/fortunes")
    parser.add_argument("output", type=Path, help="the CSV to write (columns text, label)")
    args = parser.parse_args()
    rows = entries(args.folder)
    random.Random(0).shuffle(rows)
    with args.output.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    print(f"{len(rows):,} texts in {len({label for _, label in rows})} topics written to {args.output}")


if __name__ == "__main__":
    main()
