"""What the benchmarks share: kit's model and training stream, built the way `kit run` builds them."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def model_and_stream(folder: Path, schedule_epochs: int | None = None) -> tuple[Any, Any, Any]:
    """(config, compiled model, TrainingStream) of the project in `folder`, without a run directory.

    `schedule_epochs` sets the learning-rate schedule's length (default: the config's epochs).
    """
    from kit.config import load_config
    from kit.data.plan import scan
    from kit.harness import trainer
    from kit.harness.setup import assemble

    config = load_config(folder)
    pieces = assemble(config)
    reports = scan(pieces.plan, pieces.fields, config.data.bad_rows)
    trainer.adapt_inputs(pieces)
    trainer.seed_everything(config.seed, deterministic_ops=config.train.jit_compile is not True)
    _, _, stream = trainer.make_datasets(config, pieces, reports)
    model = trainer.build_model(config, pieces, stream.batches_per_pass * (schedule_epochs or config.train.epochs))
    return config, model, stream


RESULTS = Path(__file__).with_name("RESULTS.md")


def append_results(title: str, how: str, columns: list[str], rows: list[str]) -> None:
    """Append one table to benchmarks/RESULTS.md, its heading stamped with the date and machine.

    `how` says which command made it and how it measured; `rows` are markdown table rows.
    """
    import datetime
    import os
    import platform

    stamp = f"{datetime.date.today()}, {platform.machine()}, {os.cpu_count()} CPUs"
    table = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n" + "\n".join(rows) + "\n"
    with open(RESULTS, "a", encoding="utf-8") as handle:
        handle.write(f"\n### {title} ({stamp})\n\n{how}\n\n{table}")
