"""Plots written into run directories (matplotlib, no display needed). Public: tasks draw their reports with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kit.scratch import written_atomically


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 100, **options: Any) -> Path:
    """Write the figure (in the format `path`'s suffix names; PNG without one) under a temporary name, then
    rename it, and close it: a reader never sees half a plot. `options` go to matplotlib's `savefig`."""
    try:
        with written_atomically(path) as scratch:
            fig.savefig(scratch, format=path.suffix.lstrip(".").lower() or "png", dpi=dpi, **options)
    finally:
        _pyplot().close(fig)
    return path


def plot_curves(history: list[dict[str, Any]], path: Path) -> Path | None:
    """One panel per metric, training and validation curves by epoch."""
    if not history:
        return None
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    names = [k for k in history[0] if k not in ("epoch", "seconds", "learning_rate") and not k.startswith("val_")]
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.5), squeeze=False)
    epochs = [r["epoch"] for r in history]
    for ax, name in zip(axes[0], names):
        ax.plot(epochs, [r.get(name) for r in history], marker="o", label="train")
        if any(f"val_{name}" in r for r in history):
            ax.plot(epochs, [r.get(f"val_{name}") for r in history], marker="o", label="validation")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def plot_confusion(matrix: list[list[int]], labels: list[str], path: Path, title: str) -> Path:
    plt = _pyplot()
    size = max(4.0, 0.5 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    peak = max((max(row) for row in matrix), default=0)
    if len(labels) <= 20:
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                ax.text(j, i, str(count), ha="center", va="center", color="white" if count > peak / 2 else "black")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return save_figure(fig, path)
