"""`kit runs`: the runs of a project side by side, and `kit runs compare`: a few runs in detail.

A table of every run folder under the project's runs folder (`runs/run-N` and
`kit tune`'s `runs/tune-STUDY/trial-N`): status, task, the config keys that
differ between the runs, final metrics and wall time. `compare` gives the
config keys that differ, every final metric side by side, and the per-epoch
curves of all the runs overlaid in one PNG.

Run folders are read as untrusted data (bounded JSON, files inside the run
only; nothing in them is run). No TensorFlow here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kit.config import CONFIG_FILE, did_you_mean, find_config_file, load_config, parse_yaml, resolved_dict
from kit.errors import KitError, RunDirError, UsageError
from kit.outputs import shown
from kit.rundir import RunDir
from kit.runfiles import RECORD_LIMIT, read_json, read_record, run_file

SPLITS = ("validation", "test", "train")
PER_SPLIT = 4  # metrics per split in the table (--json has them all)
HIDDEN_KEYS = {"name", "runs_dir"}  # the same for every run of a project


@dataclass
class Run:
    """One run folder as the table shows it."""

    path: Path
    name: str
    record: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        status = str(self.record.get("status", "unknown"))
        trial = self.record.get("trial")
        if status == "complete" and isinstance(trial, dict) and trial.get("pruned_at_epoch"):
            return f"pruned@{trial['pruned_at_epoch']}"
        if status == "running":
            from kit.harness.rundir import run_in_progress

            return "running" if run_in_progress(self.path) else "stopped"
        return status

    @property
    def wall_seconds(self) -> float | None:
        value = self.record.get("wall_seconds")
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def metric(self, dotted: str) -> float | None:
        split, _, name = dotted.partition(".")
        value = self.metrics.get(split, {}).get(name)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# ------------------------------------------------------------------ reading


def runs_folder(project: Path) -> Path:
    """The folder holding a project's runs: its `runs_dir` (PROJECT/runs by default), or PROJECT itself when it
    is a folder of runs (no kit.yaml)."""
    project = Path(project)
    if not project.exists():
        raise RunDirError(f"No such project or runs folder: {shown(project)}.")
    if project.is_file() or (project / CONFIG_FILE).exists():
        config = load_config(find_config_file(project))
        return Path(resolved_dict(config)["runs_dir"])
    return project


def find_runs(folder: Path) -> list[Path]:
    """Run folders (holding run.json) in `folder` and one level below (`kit tune`'s studies), in order."""
    found = []
    for child in _folders(folder):
        if (child / RunDir.RECORD).is_file():
            found.append(child)
        elif not child.name.startswith("."):
            found += [grand for grand in _folders(child) if (grand / RunDir.RECORD).is_file()]
    return sorted(found, key=lambda p: _order(p, folder))


def _folders(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()]
    except OSError:
        return []


def _order(path: Path, root: Path) -> tuple:
    """run-2 before run-10; each study's trials by number, after the plain runs."""
    parts = path.relative_to(root).parts
    return tuple((0, int(p.rsplit("-", 1)[1])) if p.rsplit("-", 1)[-1].isdigit() else (1, p) for p in parts)


def read_run(path: Path, root: Path | None = None, curves: bool = False) -> Run:
    """A run folder's record, config, metrics (and per-epoch history with `curves`); damaged parts are left empty."""
    record = read_record(path)
    name = str(path.relative_to(root)) if root is not None and path.is_relative_to(root) else str(path)
    run = Run(path, name, record)
    run.config = _read_config(path)
    run.metrics = _read_metrics(path)
    if curves:
        run.history = _read_history(path)
    return run


def _read_config(path: Path) -> dict[str, Any]:
    try:
        file = run_file(path, RunDir.CONFIG)
        config, _ = parse_yaml(file.read_text(encoding="utf-8"), file)
    except (KitError, OSError, UnicodeDecodeError):
        return {}
    return config


def _read_metrics(path: Path) -> dict[str, dict[str, float]]:
    try:
        file = run_file(path, RunDir.METRICS)
        metrics = read_json(file, RECORD_LIMIT, RunDirError, "") if file.is_file() else {}
    except (KitError, OSError):
        return {}
    if not isinstance(metrics, dict):
        return {}
    return {
        str(split): {str(k): v for k, v in values.items() if _number(v)}
        for split, values in metrics.items()
        if isinstance(values, dict)
    }


def _read_history(path: Path) -> list[dict[str, Any]]:
    try:
        file = run_file(path, RunDir.HISTORY)
        if not file.is_file() or file.stat().st_size > RECORD_LIMIT:
            return []
        lines = file.read_text(encoding="utf-8").splitlines()
    except (KitError, OSError, UnicodeDecodeError):
        return []
    history = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("epoch"), int):
            history.append(row)
    return history


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ------------------------------------------------------------------ the table


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differing_keys(runs: list[Run]) -> list[str]:
    """The config keys whose values are not the same in every run (a key one run lacks differs too)."""
    flats = [flatten(run.config) for run in runs if run.config]
    keys = sorted({key for flat in flats for key in flat} - HIDDEN_KEYS)
    return [key for key in keys if len({json.dumps(flat.get(key), sort_keys=True) for flat in flats}) > 1]


def metric_columns(runs: list[Run], sort: str | None = None) -> list[str]:
    """`split.name` columns: the first metrics of each split in the order runs report them, and the sort metric."""
    columns: list[str] = []
    for split in SPLITS:
        names: list[str] = []
        for run in runs:
            names += [n for n in run.metrics.get(split, {}) if n not in names and n != "examples"]
        columns += [f"{split}.{n}" for n in names[:PER_SPLIT]]
    if sort and sort not in columns:
        columns.append(sort)
    return columns


def resolve_sort(metric: str, runs: list[Run]) -> str:
    """`--sort rmse` -> `validation.rmse` (the first split that has it); an unknown metric is a UsageError."""
    reported = sorted({f"{split}.{name}" for run in runs for split, values in run.metrics.items() for name in values})
    if metric in reported:
        return metric
    for split in SPLITS:
        if f"{split}.{metric}" in reported:
            return f"{split}.{metric}"
    bare = sorted({name.partition(".")[2] for name in reported})
    raise KitError(
        f"--sort {metric}: no run reports that metric.{did_you_mean(metric, reported + bare)} "
        f"Reported: {', '.join(reported) or 'none (no run has finished)'}."
    )


def lower_is_better(metric: str) -> bool:
    from kit.tune.objective import LOWER_IS_BETTER

    name = metric.rpartition(".")[2].lower()
    return any(word in name for word in LOWER_IS_BETTER)


def sort_runs(runs: list[Run], metric: str) -> list[Run]:
    """Best first by `metric` (losses and errors ascending, scores descending); runs without it last."""
    sign = 1 if lower_is_better(metric) else -1
    return sorted(runs, key=lambda r: (r.metric(metric) is None, sign * (r.metric(metric) or 0.0)))


def table_rows(runs: list[Run], sort: str | None = None) -> tuple[list[str], list[list[str]]]:
    """The header and rows of `kit runs`."""
    keys, metrics = differing_keys(runs), metric_columns(runs, sort)
    header = ["run", "status", "task", *keys, *metrics, "seconds"]
    rows = []
    for run in runs:
        flat = flatten(run.config)
        rows.append(
            [
                run.name,
                run.status,
                str(run.record.get("task", "")),
                *(_cell(flat.get(key)) for key in keys),
                *(_cell(run.metric(m)) for m in metrics),
                _cell(run.wall_seconds),
            ]
        )
    return header, rows


def as_json(runs: list[Run]) -> list[dict[str, Any]]:
    """`kit runs --json`: every run with its differing config keys, all its metrics and its trial."""
    keys = differing_keys(runs)
    return [
        {
            "run": run.name,
            "path": str(run.path),
            "status": run.status,
            "task": run.record.get("task"),
            "config": {key: flatten(run.config).get(key) for key in keys},
            "metrics": run.metrics,
            "wall_seconds": run.wall_seconds,
            "trial": run.record.get("trial"),
        }
        for run in runs
    ]


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def list_runs(project: Path, sort: str | None = None) -> tuple[list[Run], str | None]:
    """The runs of `project` (sorted by `sort` when given) and the resolved sort metric."""
    root = runs_folder(project)
    runs = []
    for path in find_runs(root):
        try:
            runs.append(read_run(path, root))
        except KitError:
            continue  # a damaged run.json: `kit eval` on it says what is wrong
    if sort:
        sort = resolve_sort(sort, runs)
        runs = sort_runs(runs, sort)
    return runs, sort


# ------------------------------------------------------------------ compare


def compare_text(runs: list[Run]) -> str:
    """The config keys that differ (one column per run), then every final metric side by side."""
    names = [run.name for run in runs]
    keys = differing_keys(runs)
    flats = [flatten(run.config) for run in runs]
    out = []
    if keys:
        out.append(format_table(["config", *names], [[key, *(_cell(f.get(key)) for f in flats)] for key in keys]))
    else:
        out.append("config: the same in every run")
    metrics = sorted({f"{s}.{n}" for run in runs for s, values in run.metrics.items() for n in values})
    if metrics:
        rows = [[m, *(_cell(run.metric(m)) for run in runs)] for m in metrics]
        out.append(format_table(["metric", *names], rows))
    status = [["status", *(run.status for run in runs)], ["seconds", *(_cell(run.wall_seconds) for run in runs)]]
    out.append(format_table(["run", *names], status))
    return "\n\n".join(out)


def plot_compare(runs: list[Run], path: Path) -> Path:
    """Every per-epoch metric as one panel, each run's training (solid) and validation (dashed) curves overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from kit.plots import save_figure

    names = _curve_names(runs)
    if not names:
        raise RunDirError("None of these runs has per-epoch history yet (history.jsonl); nothing to plot.")
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, name in zip(axes.flat, names):
        for index, run in enumerate(runs):
            color = colors[index % len(colors)]
            epochs = [r["epoch"] for r in run.history]
            for key, style, label in ((name, "-", "train"), (f"val_{name}", "--", "validation")):
                values = [r.get(key) if _number(r.get(key)) else None for r in run.history]
                if any(v is not None for v in values):
                    ax.plot(epochs, values, style, marker="o", markersize=3, color=color, label=f"{run.name} {label}")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, bbox_to_anchor=(0.5, 0))
    fig.tight_layout(rect=(0, 0.06 + 0.03 * math.ceil(len(labels) / 4), 1, 1))
    return save_figure(fig, path)


def _curve_names(runs: list[Run]) -> list[str]:
    skip = {"epoch", "seconds", "learning_rate"}
    names: list[str] = []
    for run in runs:
        for row in run.history:
            for key in row:
                bare = key[4:] if key.startswith("val_") else key
                if key not in skip and bare not in names and _number(row[key]):
                    names.append(bare)
    return names


def read_for_compare(paths: list[Path]) -> list[Run]:
    """The runs to compare, named as given; at least two, each a run folder."""
    if len(paths) < 2:
        raise UsageError(
            "kit runs compare needs at least two run folders, e.g. kit runs compare runs/run-1 runs/run-2."
        )
    runs = [read_run(Path(p), curves=True) for p in paths]
    for run, given in zip(runs, paths):
        run.name = str(given)
    return runs


def check_plot_destination(path: Path) -> Path:
    """A .png to write; never a folder, never inside a run folder (runs are kit's), never over something else."""
    from kit.outputs import enclosing_run

    if path.suffix.lower() != ".png":
        raise UsageError(f"-o {shown(path)}: the curves are a PNG image; name a .png file.")
    if path.is_dir():
        raise UsageError(f"-o {shown(path)} is a folder; name a .png file.")
    inside = enclosing_run(path.absolute().parent)
    if inside is not None:
        raise UsageError(f"-o {shown(path)} is inside the run folder {shown(inside)}; kit writes nothing into runs.")
    if path.exists() and path.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
        raise UsageError(f"-o {shown(path)} exists and is not a PNG image; kit will not overwrite it.")
    return path
