"""What a study optimises: `tune.objective`, its direction, and the per-epoch metric the pruner watches.

`val_NAME` (or `loss`, `NAME`) is a metric Keras logs every epoch; the trial's
value is the finished run's own figure for it on the validation split, from
metrics.json (kit's final evaluation, in the task's units: a regression's RMSE
in the target's units), or the last epoch's value when metrics.json has no such
name. `validation.NAME` is a final metric only (`validation.f1_macro`).
Tuning on `test` is refused: the test split is for the final estimate.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit.config import Config
from kit.errors import ConfigError

LOWER_IS_BETTER = ("loss", "mae", "mse", "rmse", "error", "perplexity", "crossentropy")
HIGHER_IS_BETTER = ("accuracy", "f1", "precision", "recall", "auc", "r2", "iou")


@dataclass
class Objective:
    """The parsed objective.

    Attributes:
        name: as written (`val_rmse`, `validation.f1_macro`).
        direction: "minimize" or "maximize".
        epoch_metric: the per-epoch log name for pruning (`val_rmse`).
        epoch_sign: +1 when the pruned-on metric improves the same way as the objective, else -1
            (pruners compare intermediate values in the study's direction).
        final: (split, name) looked up in metrics.json, or None for a per-epoch-only metric.
    """

    name: str
    direction: str
    epoch_metric: str
    epoch_sign: int
    final: tuple[str, str] | None

    def value(self, metrics: dict[str, Any], history: list[dict[str, Any]]) -> float | None:
        """The finished trial's value: metrics.json's figure, else the last epoch's; None when neither has it."""
        if self.final is not None:
            split, name = self.final
            found = (metrics.get(split) or {}).get(name)
            if isinstance(found, (int, float)) and not isinstance(found, bool):
                return float(found)
        if self.name == self.epoch_metric and history:
            found = history[-1].get(self.name)
            if isinstance(found, (int, float)) and math.isfinite(found):
                return float(found)
        return None

    def missing(self, metrics: dict[str, Any]) -> str:
        """A message for a finished run that does not report the objective."""
        split, name = self.final or ("validation", self.name)
        reported = sorted(k for k, v in (metrics.get(split) or {}).items() if isinstance(v, (int, float)))
        close = difflib.get_close_matches(name, reported, n=1)
        hint = f" Did you mean '{split}.{close[0]}'?" if close else ""
        return (
            f"tune.objective '{self.name}' is not in the run's metrics ({split}: {', '.join(reported) or 'nothing'})."
            f"{hint} Set tune.objective to one of them."
        )

    def as_dict(self) -> dict[str, Any]:
        return {"objective": self.name, "direction": self.direction, "prune_on": self.epoch_metric}


def parse_objective(config: Config, task: Any) -> Objective:
    """Check `tune.objective`, `tune.direction` and `tune.prune_on` against what `task` reports.

    Raises:
        ConfigError: for a metric the task does not report, a test-split objective, a run without a
            validation split, or a direction kit cannot tell.
    """
    where, tune = config.origin, config.tune
    _check_validation_split(config, where)
    epoch_names = _epoch_names(task)
    name = tune.objective.strip()
    split, dot, final_name = name.partition(".")
    if dot:
        final = _final_metric(split, final_name, epoch_names, where)
    else:
        _check_epoch_metric(name, epoch_names, "tune.objective", where)
        final = ("validation", name[4:]) if name.startswith("val_") else None
    direction = tune.direction if tune.direction != "auto" else _direction(final[1] if final else name, where)
    watched = tune.prune_on or (name if not dot else f"val_{final_name}")
    if tune.prune_on is None and epoch_names is not None and watched not in epoch_names:
        watched = "val_loss"  # a final-only metric (f1_macro): prune on the validation loss
    _check_epoch_metric(watched, epoch_names, "tune.prune_on", where)
    sign = 1 if _direction(_bare(watched), None) in (direction, None) else -1
    return Objective(name, direction, watched, sign, final)


def _check_validation_split(config: Config, where: Any) -> None:
    data = config.data
    if data.validation is None and data.validation_fraction == 0:
        raise ConfigError(
            f"{where('data.validation_fraction')}: is 0 and data.validation is unset, so trials have no validation "
            "split to be compared on. Hold some rows out (validation_fraction: 0.1) or name a validation file."
        )


def _epoch_names(task: Any) -> list[str] | None:
    names = task.metric_names()
    if names is None:
        return None
    reported = ["loss", *names]
    return reported + [f"val_{n}" for n in reported]


def _final_metric(split: str, name: str, epoch_names: list[str] | None, where: Any) -> tuple[str, str]:
    if split == "test":
        raise ConfigError(
            f"{where('tune.objective')}: tuning on the test split makes its figures optimistic; the test split "
            f"is for the final estimate. Use validation.{name} (or val_{name})."
        )
    if split != "validation" or not name:
        raise ConfigError(
            f"{where('tune.objective')}: expected a per-epoch metric (val_loss, val_accuracy...) or "
            f"validation.NAME (a metric of metrics.json), got '{split}.{name}'."
        )
    return split, name


def _check_epoch_metric(name: str, epoch_names: list[str] | None, key: str, where: Any) -> None:
    if epoch_names is None or name in epoch_names:
        return
    close = difflib.get_close_matches(name, epoch_names, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ConfigError(
        f"{where(key)}: '{name}' is not a metric the task reports each epoch.{hint} Reported: "
        f"{', '.join(epoch_names)}; or a final metric as validation.NAME."
    )


def _bare(name: str) -> str:
    return name[4:] if name.startswith("val_") else name


def _direction(name: str, where: Any) -> str | None:
    """minimize for losses and errors, maximize for scores; with `where`, an unknown name is an error."""
    bare = _bare(name).lower()
    if any(word in bare for word in LOWER_IS_BETTER):
        return "minimize"
    if any(word in bare for word in HIGHER_IS_BETTER):
        return "maximize"
    if where is None:
        return None
    raise ConfigError(
        f"{where('tune.direction')}: kit cannot tell whether '{name}' is better low or high; set "
        "tune.direction: minimize or maximize."
    )


def read_outcome(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A finished trial's metrics.json and per-epoch history."""
    from kit.harness.callbacks import read_history
    from kit.rundir import RunDir
    from kit.runfiles import read_metrics

    return read_metrics(run_dir), read_history(RunDir(run_dir).history_file)
