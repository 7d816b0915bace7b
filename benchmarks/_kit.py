"""What the benchmarks share: kit's model and training stream, built the way `kit run` builds them."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator


def model_and_stream(folder: Path, schedule_epochs: int | None = None) -> tuple[Any, Any, Any]:
    """(config, compiled model, TrainingStream) of the project in `folder`, without a run directory.

    `schedule_epochs` sets the learning-rate schedule's length (default: the config's epochs).
    """
    from kit.assembly import assemble
    from kit.config import load_config
    from kit.data.plan import scan
    from kit.harness import trainer
    from kit.harness.datasets import make_datasets, training_features

    config = load_config(folder)
    pieces = assemble(config)
    reports = scan(pieces.plan, pieces.fields, config.data.bad_rows, check=pieces.check_example)
    trainer.seed_everything(config.seed, deterministic_ops=config.train.jit_compile is not True)
    pieces.backbone.adapt(training_features(pieces))
    _, _, stream = make_datasets(config, pieces, reports)
    model, _ = trainer.build_model(config, pieces, stream.batches_per_pass * (schedule_epochs or config.train.epochs))
    return config, model, stream


@contextmanager
def detached_preprocessor(model: Any) -> Iterator[Any]:
    """The keras-hub task without its preprocessor, as kit trains and generates: inputs are token ids already."""
    preprocessor, model.preprocessor = model.preprocessor, None
    try:
        yield model
    finally:
        model.preprocessor = preprocessor


def add_callback(callback: Any, name: str) -> None:
    """Have `kit run` in this process use the Keras `callback`, registered as a plugin would (`register_callbacks`).

    Only kit's built-in plugins load besides it: installed third-party ones would change what is measured.
    """
    import os

    os.environ["KIT_LOAD_PLUGINS"] = ""
    import kit.hookspecs
    import kit.plugins

    class CallbackPlugin:
        @kit.hookspecs.hookimpl
        def register_callbacks(self, register, run):
            register(callback)

    kit.plugins.get_plugins().add_plugin(CallbackPlugin(), name, "benchmark")


RESULTS = Path(__file__).with_name("RESULTS.md")


def median_seconds_in_turn(calls: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """Each call's median seconds over `rounds` rounds, the calls made in turn and which goes first alternating,
    so that all of them see the same machine."""
    import statistics
    import time

    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(rounds):
        for name in list(calls) if round_ % 2 == 0 else reversed(list(calls)):
            started = time.perf_counter()
            calls[name]()
            seconds[name].append(time.perf_counter() - started)
    return {name: statistics.median(times) for name, times in seconds.items()}


def run_measured(
    argv: list[str], env: dict[str, str] | None = None, stderr: Any = None
) -> tuple[int, float, float, str]:
    """Run `argv` in a fresh process: its exit status, wall seconds, peak RSS in MB and its stdout (text).

    The peak is this child's own (`wait4`); `RUSAGE_CHILDREN` would give the largest of all children so far.
    `stderr`: where the child's standard error goes (`subprocess.STDOUT` joins it to the output).
    """
    import os
    import subprocess
    import time

    started = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
    with child.stdout:
        output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    return child.returncode, time.perf_counter() - started, usage.ru_maxrss / 1024, output


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


def run_side(argv: list[str], threads: int, side: str) -> dict:
    """Run one side of a comparison in a fresh process with `threads` threads; its last stdout line is JSON.

    Adds `process_s`: the whole process's wall time, from launch to exit, as a user waits for it.
    """
    import json
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "OMP_NUM_THREADS": str(threads),
        "TF_NUM_INTRAOP_THREADS": str(threads),
        "TF_NUM_INTEROP_THREADS": str(threads),
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    import time

    started = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True)
    process_s = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{side} side failed:\n{result.stderr[-4000:]}")
    return {**json.loads(result.stdout.strip().splitlines()[-1]), "process_s": process_s}
