"""Memory of writing a weights file: into reserved disk space (kit's way) vs built in memory first.

    python benchmarks/weights_write.py

For two models, a BERT backbone of all-MiniLM-L6-v2's shapes (22.7M values, half of them in one 47 MB
token embedding) and a stack of twelve 2,048 x 2,048 Dense layers (50M values in 24 even variables), each
with Adam's slots built, writes a training state (weights and slots) and a checkpoint (weights only)
twice: `kit.harness.resume.write_weights` (space reserved with `posix_fallocate`, HDF5 writing straight
to the file) and `weights_image` (the file built in memory, kit's earlier way). A thread reads the
resident size from /proc every 2 ms; the table gives the most it rose above where it started. Appends
the table to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import functools
import os
import tempfile
import threading
import time
from pathlib import Path


def resident_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


class PeakWatch:
    """The highest resident size seen since `reset`, sampled every 2 ms."""

    def __init__(self) -> None:
        self.peak = 0.0
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while True:
            self.peak = max(self.peak, resident_mb())
            time.sleep(0.002)

    def rise(self, work) -> float:
        time.sleep(0.05)
        start = resident_mb()
        self.peak = start
        work()
        time.sleep(0.05)
        return self.peak - start


def models() -> dict:
    import keras
    import keras_hub

    minilm = keras_hub.models.BertBackbone(
        vocabulary_size=30522, num_layers=6, num_heads=12, hidden_dim=384, intermediate_dim=1536,
        max_sequence_length=512,
    )  # fmt: skip
    inputs = keras.Input((2048,))
    x = inputs
    for _ in range(12):
        x = keras.layers.Dense(2048)(x)
    stack = keras.Model(inputs, x)
    for model in (minilm, stack):
        model.compile(optimizer="adam", loss="mse")
        model.optimizer.build(model.trainable_variables)
    return {"MiniLM shapes (22.7M values)": minilm, "12 x Dense(2048) (50.4M values)": stack}


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from kit.harness.resume import weights_image, write_weights

    watch = PeakWatch()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "w.weights.h5"
        for name, model in models().items():
            for with_optimizer, what in ((True, "training state (with slots)"), (False, "checkpoint")):
                reserved = watch.rise(functools.partial(write_weights, target, model, with_optimizer))
                size = target.stat().st_size / 2**20
                in_memory = watch.rise(functools.partial(weights_image, model, with_optimizer))
                rows.append(f"| {name} | {what} | {size:,.0f} MB | {reserved:,.0f} MB | {in_memory:,.0f} MB |")
                print(rows[-1], flush=True)
    from _kit import append_results

    append_results(
        "Memory of writing a weights file: reserved disk space vs built in memory",
        "`python benchmarks/weights_write.py` - Adam's slots built; the rise of the resident size (read every "
        "2 ms) above where each write started.",
        ["model", "file", "size", "kit (space reserved, HDF5 writes the file)", "built in memory first"],
        rows,
    )


if __name__ == "__main__":
    main()
