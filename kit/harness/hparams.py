"""TensorBoard's HParams record of a finished run: its hyperparameters and final metrics.

Written next to the Keras TensorBoard callback's logs (`logs/`, whose `train/`
and `validation/` hold the per-epoch scalars), so `tensorboard --logdir runs`
shows every run and every `kit tune` trial as one row of the HParams
dashboard: the config keys, the trial's study and number, and the final
metrics as `final/SPLIT.NAME`.
"""

from __future__ import annotations

from typing import Any

from kit.config import hyperparameters
from kit.rundir import RunDir


def hparams_of(resolved: dict[str, Any], record: dict[str, Any]) -> dict[str, bool | int | float | str]:
    """The run's hyperparameters as HParams takes them: dotted keys, numbers, booleans and text."""
    flat = hyperparameters(resolved)
    trial = record.get("trial")
    if isinstance(trial, dict):
        flat["tune.study"] = trial.get("study")
        flat["tune.trial"] = trial.get("number")
    return {key: _plain(value) for key, value in flat.items() if value is not None}


def _plain(value: Any) -> bool | int | float | str:
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)  # [64, 32] -> "[64, 32]": HParams compares it as a discrete value


def write_hparams(run: RunDir, resolved: dict[str, Any], metrics: dict[str, Any], record: dict[str, Any]) -> None:
    """Write the HParams session of `run` into its TensorBoard folder, with the final metrics as scalars."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    epochs = resolved.get("train", {}).get("epochs")
    step = epochs if isinstance(epochs, int) else 0
    writer = tf.summary.create_file_writer(str(run.logs_dir))
    with writer.as_default():
        hp.hparams(hparams_of(resolved, record), trial_id=f"{run.path.parent.name}/{run.path.name}")
        for split, values in metrics.items():
            for name, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    tf.summary.scalar(f"final/{split}.{name}", float(value), step=step)
    writer.close()
