"""Where a run's wall time goes: seconds per stage, recorded in run.json and summed up in one line.

Stages, in order: `imports` (from the process start to TensorFlow imported),
`config` (config, plugins), `scan` (reading and checking every row),
`adapt` (learning a vocabulary or loading a pretrained model), `datasets`
(preprocessing and tokenising, holding examples in memory), `model`
(building and compiling), `restore` (a resumed run's saved state),
`first step` (tracing the training step), `training` (the other steps),
`validation` (per-epoch validation), `callbacks` (checkpoints, logs,
states saved during training), `evaluation` (final metrics),
`saving` (model.keras, the preset, kit_model.json), `outputs` (metrics.json, plots).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import kit


class Stages:
    """Seconds spent per stage of one run (repeated stages add up)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + max(seconds, 0.0)

    def since_start(self, name: str) -> None:
        """Record `name` as the time from the process start (kit's first import) to now."""
        self.add(name, time.perf_counter() - kit.STARTED)

    def record(self) -> dict[str, float]:
        return {name: round(seconds, 2) for name, seconds in self.seconds.items()}

    def outside_training(self) -> float:
        """Everything but the steady training steps and per-epoch validation: a run's fixed cost."""
        return sum(s for name, s in self.seconds.items() if name not in ("training", "validation"))

    def summary(self) -> str:
        """One line: the total, then every stage that took at least a tenth of a second."""
        total = sum(self.seconds.values())
        parts = [f"{name} {seconds:.1f}" for name, seconds in self.seconds.items() if seconds >= 0.1]
        return f"kit: {total:.0f} s ({self.outside_training():.0f} s outside training): " + ", ".join(parts)
