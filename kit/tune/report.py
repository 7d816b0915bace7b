"""What a study found, in `RUNS/tune-STUDY/`: the best config as a ready kit.yaml, a table, and plots.

    best/kit.yaml       the best trial's config: `kit run RUNS/tune-STUDY/best` trains it again
    summary.md          the study, its best trial and every trial (value, state, parameters, run folder)
    trials.csv          the same table for a spreadsheet
    history.png         objective per trial and the best so far (Optuna's optimisation history)
    importances.png     how much each key mattered (Optuna's parameter importances)
    parallel.png        every trial as a line through its values (parallel coordinates)
    intermediate.png    each trial's per-epoch metric: where pruned trials stopped

The plots are Optuna's own (`optuna.visualization.matplotlib`).
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kit.config import dump_yaml, load_config, resolved_dict
from kit.console import say
from kit.rundir import write_text_atomic
from kit.runs import format_table as aligned_table
from kit.tune import study as studies


@dataclass
class Report:
    """The files a study's report wrote, and its best trial (None before any trial completed)."""

    folder: Path
    best: Any = None
    files: list[Path] = field(default_factory=list)


def write_report(study: Any, search: Any) -> Report:
    """Write the report of `study` into the search's folder and print its table."""
    import optuna

    report = Report(search.folder)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        report.best = study.best_trial
        report.files.append(write_best_config(report.best, search))
    table = trial_rows(trials, search)
    report.files += [_write_summary(study, search, table, report.best), _write_csv(search.folder, table)]
    report.files += _plots(study, search.folder)
    say(format_table(table[:15], search))
    if report.best is not None:
        say(
            f"kit: best: trial {report.best.number}, {search.objective.name} = {report.best.value:.6g}; its config "
            f"is {report.files[0]} (kit run {report.files[0].parent} trains it again)"
        )
    say(f"kit: report in {search.folder} (summary.md, trials.csv, plots)")
    return report


def config_values(search: Any, params: dict[str, Any]) -> dict[str, Any]:
    """A trial's parameters (as the study stores them) as config values."""
    by_key = {p.key: p for p in search.space.params}
    return {key: by_key[key].value_of(label) if key in by_key else label for key, label in params.items()}


def write_best_config(best: Any, search: Any) -> Path:
    """best/kit.yaml: the project's config with the best trial's values, every path absolute."""
    config = load_config(search.project, search.overrides, values=config_values(search, best.params))
    header = (
        f"# Best trial of study '{search.name}': trial {best.number}, {search.objective.name} = {best.value:.6g}.\n"
        f"# Written by kit tune. `kit run {search.folder / 'best'}` trains this config again.\n"
    )
    path = search.folder / "best" / "kit.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, header + dump_yaml(resolved_dict(config)))
    return path


def trial_rows(trials: list[Any], search: Any) -> list[dict[str, Any]]:
    """One row per trial, the best first (in the study's direction), then pruned, failed and running ones."""
    rows = []
    resumed = {t.user_attrs.get(studies.RESUMES): t.number for t in trials}
    for trial in trials:
        state = trial.state.name.lower()
        if trial.number in resumed:
            state = f"lost, resumed as {resumed[trial.number]}"
        seconds = trial.duration.total_seconds() if trial.duration else None
        rows.append(
            {
                "trial": trial.number,
                "state": state,
                # A pruned trial's study value is its last per-epoch one (scaled as the pruner compares them): not
                # the objective, so not shown as such; its run folder has its final metrics.
                "value": trial.value if trial.state.name == "COMPLETE" else None,
                "epochs": max(trial.intermediate_values, default=None),
                "seconds": round(seconds, 1) if seconds is not None else None,
                **{key: _shown(value) for key, value in config_values(search, trial.params).items()},
                "run": trial.user_attrs.get(studies.RUN_DIR),
                "error": trial.user_attrs.get(studies.ERROR),
            }
        )
    sign = 1 if search.objective.direction == "minimize" else -1
    order = {"complete": 0, "pruned": 1, "running": 2, "waiting": 3, "fail": 4}
    return sorted(
        rows,
        key=lambda r: (order.get(r["state"], 5), sign * r["value"] if r["value"] is not None else 0, r["trial"]),
    )


def _shown(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def columns(rows: list[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for row in rows:
        names += [key for key in row if key not in names]
    return names


def format_table(rows: list[dict[str, Any]], search: Any) -> str:
    """A plain-text table (what `kit tune` prints): trial, state, value, epochs, seconds, the parameters."""
    names = [n for n in columns(rows) if n not in ("run", "error")]
    cells = [[_cell(row.get(n)) for n in names] for row in rows]
    header = [search.objective.name if n == "value" else n for n in names]
    return aligned_table(header, cells)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _write_summary(study: Any, search: Any, rows: list[dict[str, Any]], best: Any) -> Path:
    states: dict[str, int] = {}
    for row in rows:
        key = row["state"].split(",")[0]
        states[key] = states.get(key, 0) + 1
    lines = [
        f"# Study {search.name}",
        "",
        f"- storage: `{studies.shown_url(search.url)}`",
        f"- objective: `{search.objective.name}` ({search.objective.direction}); pruned on "
        f"`{search.objective.epoch_metric}`",
        f"- trials: {len(rows)} ({', '.join(f'{n} {s}' for s, n in states.items())})",
    ]
    if best is not None:
        values = ", ".join(f"`{k}` = {json.dumps(v)}" for k, v in config_values(search, best.params).items())
        lines += [f"- best: trial {best.number}, {search.objective.name} = {best.value:.6g}: {values}"]
        lines += [f"- best config: `{search.folder / 'best' / 'kit.yaml'}`"]
    names = [n for n in columns(rows) if n != "error"]
    lines += ["", "| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(_cell(row.get(n)).replace("|", "\\|") for n in names) + " |" for row in rows]
    failed = [row for row in rows if row.get("error")]
    if failed:
        lines += ["", "## Failed trials", ""] + [f"- trial {row['trial']}: {row['error']}" for row in failed]
    path = search.folder / "summary.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def _write_csv(folder: Path, rows: list[dict[str, Any]]) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns(rows))
    writer.writeheader()
    writer.writerows(rows)
    path = folder / "trials.csv"
    write_text_atomic(path, buffer.getvalue())
    return path


# ------------------------------------------------------------------ plots


def _plots(study: Any, folder: Path) -> list[Path]:
    """Optuna's plots of the study; one that cannot be drawn yet (too few trials) is left out, with a note."""
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as plots

    drawn = []
    wanted = {
        "history.png": lambda: plots.plot_optimization_history(study),
        "importances.png": lambda: plots.plot_param_importances(study, evaluator=_importance_evaluator()),
        "parallel.png": lambda: plots.plot_parallel_coordinate(study),
        "intermediate.png": lambda: plots.plot_intermediate_values(study),
    }
    for name, draw in wanted.items():
        path = folder / name
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = draw()
            _save(axes, path)
            drawn.append(path)
        except (ValueError, RuntimeError, ZeroDivisionError, IndexError) as exc:
            say(f"kit: no {name} yet ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})")
    return drawn


def _importance_evaluator() -> Any:
    """fANOVA (Optuna's default) when scikit-learn is installed, else PED-ANOVA, which needs nothing more."""
    import optuna

    try:
        import sklearn  # noqa: F401

        return optuna.importance.FanovaImportanceEvaluator(seed=0)
    except ImportError:
        return optuna.importance.PedAnovaImportanceEvaluator()


def _save(axes: Any, path: Path) -> None:
    import numpy as np

    from kit.plots import save_figure

    first = np.ravel(axes)[0] if isinstance(axes, np.ndarray) else axes
    figure = first.figure
    figure.set_size_inches(max(figure.get_size_inches()[0], 9), max(figure.get_size_inches()[1], 5))
    save_figure(figure, path, dpi=110, bbox_inches="tight")  # two workers of one study may draw it at once
