"""`kit tune` end to end: trials as runs, the report, the best config re-run, HParams, `kit runs`,
two workers on one study, and workers stopped by Ctrl-C or `kill -9` whose trials the next worker resumes.

These train real (small) models, in this process and in `kit tune` processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from kit.cli import cli
from kit.tune import study as studies
from tests.conftest import make_tabular, project

pytestmark = pytest.mark.slow

PROJECT = """task: regression
data:
  train: {data}
  target: y
model:
  hidden_units: [16]
train:
  epochs: {epochs}
  verbose: 0
tune:
  objective: val_rmse
  trials: {trials}
  startup_trials: 2
  space:
    train.learning_rate: {{low: 1.0e-3, high: 3.0e-2, log: true}}
    model.hidden_units: [[8], [32, 16]]
{extra}"""


def tune_project(root: Path, trials: int = 4, epochs: int = 3, rows: int = 400, extra: str = "") -> Path:
    data = make_tabular(root, rows=rows)
    return project(root / "p", PROJECT.format(data=data, trials=trials, epochs=epochs, extra=extra))


def study_of(folder: Path, name: str = "p") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'tune.db'}")


def ok(runner, args):
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """One finished study of four trials, run in this process."""
    from click.testing import CliRunner

    folder = tune_project(tmp_path_factory.mktemp("tuned"))
    result = ok(CliRunner(), ["tune", str(folder)])
    return folder, result.output


def test_each_trial_is_an_ordinary_run_with_its_parameters(tuned):
    folder, output = tuned
    study = study_of(folder)
    assert len(study.trials) == 4
    for trial in study.trials:
        run_dir = Path(trial.user_attrs[studies.RUN_DIR])
        assert run_dir == folder / "runs" / "tune-p" / f"trial-{trial.number}"
        record = json.loads((run_dir / "run.json").read_text())
        assert record["status"] == "complete"
        assert record["trial"]["number"] == trial.number and record["trial"]["study"] == "p"
        params = record["trial"]["params"]
        assert params["train.learning_rate"] == trial.params["train.learning_rate"]
        assert json.dumps(params["model.hidden_units"]) == trial.params["model.hidden_units"]
        config = (run_dir / "config.yaml").read_text()
        assert f"hidden_units: {params['model.hidden_units']}" in config and "tune:" not in config
        if trial.state == optuna.trial.TrialState.COMPLETE:
            metrics = json.loads((run_dir / "metrics.json").read_text())
            assert trial.value == metrics["validation"]["rmse"]
        else:
            assert trial.state == optuna.trial.TrialState.PRUNED
            assert record["trial"]["pruned_at_epoch"] == max(trial.intermediate_values)
    assert "kit: best: trial" in output


def test_the_report_and_the_best_config_trains_to_the_same_metric(tuned, runner):
    folder, _ = tuned
    report = folder / "runs" / "tune-p"
    for name in ("summary.md", "trials.csv", "history.png", "importances.png", "parallel.png", "intermediate.png"):
        assert (report / name).is_file(), name
    assert (report / "history.png").read_bytes()[:4] == b"\x89PNG"
    best = study_of(folder).best_trial
    summary = (report / "summary.md").read_text()
    assert f"best: trial {best.number}, val_rmse = {best.value:.6g}" in summary
    assert "\ntune:" not in (report / "best" / "kit.yaml").read_text()  # a plain config: no search in it
    ok(runner, ["run", str(report / "best")])
    again = json.loads((folder / "runs" / "run-1" / "metrics.json").read_text())
    assert again["validation"]["rmse"] == best.value  # bit for bit: the same config trains the same model


def test_runs_table_lists_trials_and_what_differs(tuned, runner):
    folder, _ = tuned
    table = ok(runner, ["runs", str(folder), "--sort", "rmse"]).output
    header, *rows = table.splitlines()
    assert header.split()[:3] == ["run", "status", "task"]
    assert "train.learning_rate" in header and "model.hidden_units" in header and "validation.rmse" in header
    assert "model.dropout" not in header  # the same in every run
    assert sum(line.startswith("tune-p/trial-") for line in rows) == 4
    listed = json.loads(ok(runner, ["runs", str(folder), "--json", "--sort", "validation.rmse"]).output)
    values = [r["metrics"]["validation"]["rmse"] for r in listed if r["metrics"]]
    assert values == sorted(values)
    assert {r["trial"]["number"] for r in listed if r["trial"]} == {0, 1, 2, 3}
    result = runner.invoke(cli, ["runs", str(folder), "--sort", "rsme"])
    assert result.exit_code == 1 and "Did you mean 'rmse'?" in result.output


def test_runs_compare_writes_one_png_of_all_curves(tuned, runner, tmp_path):
    folder, _ = tuned
    trials = [str(folder / "runs" / "tune-p" / f"trial-{n}") for n in (0, 1)]
    out = tmp_path / "both.png"
    result = ok(runner, ["runs", "compare", *trials, "-o", str(out)])
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert "train.learning_rate" in result.output and "validation.rmse" in result.output
    bad = runner.invoke(cli, ["runs", "compare", trials[0], "-o", str(tmp_path / "x.png")])
    assert bad.exit_code == 2 and "at least two run folders" in bad.output
    inside = runner.invoke(cli, ["runs", "compare", *trials, "-o", str(Path(trials[0]) / "c.png")])
    assert inside.exit_code == 2 and "inside the run folder" in inside.output


def test_every_run_writes_its_hparams_for_tensorboard(tuned):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    folder, _ = tuned
    logs = folder / "runs" / "tune-p" / "trial-0" / "logs"
    events = EventAccumulator(str(logs))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["tune.trial"].number_value == 0 and hparams["tune.study"].string_value == "p"
    assert hparams["model.hidden_units"].string_value in ("[8]", "[32, 16]")
    assert "data.train" not in hparams  # where the data is, not how the model trained
    assert "final/validation.rmse" in events.Tags()["tensors"]


def test_a_finished_study_runs_nothing_more(tuned, runner):
    folder, _ = tuned
    result = ok(runner, ["tune", str(folder)])
    assert "nothing left to run" in result.output
    assert len(study_of(folder).trials) == 4


def test_a_crashing_trial_is_recorded_and_the_study_goes_on(tmp_path, runner):
    extra = "    model.backbone: [mlp, cnn]\n  sampler: grid\n"
    folder = project(
        tmp_path / "p",
        PROJECT.format(data=make_tabular(tmp_path), trials=2, epochs=2, extra="").replace(
            "    train.learning_rate: {low: 1.0e-3, high: 3.0e-2, log: true}\n    model.hidden_units: [[8], [32, 16]]\n",
            extra,
        ),
    )
    result = ok(runner, ["tune", str(folder)])
    trials = study_of(folder).trials
    states = {t.params["model.backbone"]: t.state for t in trials}
    assert states == {"mlp": optuna.trial.TrialState.COMPLETE, "cnn": optuna.trial.TrialState.FAIL}
    error = next(t for t in trials if t.state == optuna.trial.TrialState.FAIL).user_attrs[studies.ERROR]
    assert "cnn" in error and "tabular" in error
    assert f"trial {trials[1].number} failed" in result.output or "failed:" in result.output
    assert "Traceback" not in result.output
    assert "## Failed trials" in (folder / "runs" / "tune-p" / "summary.md").read_text()


# ------------------------------------------------------------------ real processes


def kit_tune(folder: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen(
        [sys.executable, "-m", "kit", "tune", str(folder), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def finish(process: subprocess.Popen, timeout: float = 600) -> str:
    output, _ = process.communicate(timeout=timeout)
    return output


def test_two_workers_share_one_study(tmp_path):
    folder = tune_project(tmp_path, trials=6, epochs=2)
    workers = [kit_tune(folder), kit_tune(folder)]
    outputs = [finish(w) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    trials = study_of(folder).trials
    finished = [t for t in trials if t.state.is_finished()]
    assert 6 <= len(finished) <= 7  # a worker starts a trial only while fewer are finished or running
    assert {t.user_attrs[studies.WORKER]["slot"] for t in trials} == {1, 2}
    run_dirs = [t.user_attrs[studies.RUN_DIR] for t in trials]
    assert len(set(run_dirs)) == len(run_dirs) and all(Path(d, "metrics.json").is_file() for d in run_dirs)
    assert "worker 1" in "".join(outputs) and "worker 2" in "".join(outputs)


def wait_for_saved_state(folder: Path, process: subprocess.Popen, timeout: float = 300) -> Path:
    """The trial folder of the first training state saved (an epoch done), while `process` trains it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        for state in folder.glob("runs/tune-p/trial-*/backup/step-*"):
            return state.parents[1]
        time.sleep(0.05)
    raise AssertionError("no training state was saved in time")


def test_stopped_and_killed_workers_lose_only_their_trial_which_resumes(tmp_path, runner):
    folder = tune_project(tmp_path, trials=3, epochs=5, rows=3000)
    # Ctrl-C: the trial's state is saved, the worker exits 130 and says the trial is queued again.
    first = kit_tune(folder)
    stopped = wait_for_saved_state(folder, first)
    first.send_signal(signal.SIGINT)
    output = finish(first)
    assert first.returncode == 130, output
    assert "is queued again and carries on from its last saved state" in output
    assert json.loads((stopped / "run.json").read_text())["status"] == "running" and (stopped / "backup").is_dir()
    # kill -9 of the next worker, in the trial it resumed.
    second = kit_tune(folder)
    deadline = time.monotonic() + 300
    while not any(
        t.user_attrs.get(studies.RESUMES) is not None and t.state.name == "RUNNING" for t in study_of(folder).trials
    ):
        assert time.monotonic() < deadline and second.poll() is None, finish(second)
        time.sleep(0.1)
    resumed_dir = None
    while resumed_dir is None or not list(resumed_dir.glob("backup/step-*")):
        running = [t for t in study_of(folder).trials if t.state.name == "RUNNING"]
        resumed_dir = Path(running[0].user_attrs[studies.RUN_DIR]) if running else None
        assert time.monotonic() < deadline and second.poll() is None, finish(second)
        time.sleep(0.05)
    time.sleep(0.5)  # into the next epoch
    second.kill()
    second.wait()
    # The next worker finds the trial its dead predecessor left running, and finishes the study.
    result = ok(runner, ["tune", str(folder)])
    assert "lost its worker; queued again" in result.output
    trials = study_of(folder).trials
    lost = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(lost) == 2 and not any(Path(t.user_attrs[studies.RUN_DIR]).exists() for t in lost[:1])
    carried = [t for t in trials if t.user_attrs.get(studies.RESUMES) is not None]
    assert [t.user_attrs[studies.RESUMES] for t in carried] == [lost[0].number, lost[1].number]
    last = carried[-1]
    assert last.state.is_finished() and last.params == lost[0].params
    run_dir = Path(last.user_attrs[studies.RUN_DIR])
    record = json.loads((run_dir / "run.json").read_text())
    assert record["resumed"] >= 1 and record["trial"]["resumes"] == lost[1].number
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == list(range(1, len(history) + 1))
    finished = [t for t in trials if t.state.is_finished() and t.state != optuna.trial.TrialState.FAIL]
    assert len(finished) == 3
    if last.state == optuna.trial.TrialState.COMPLETE:  # exact resume: as if never stopped
        ok(runner, ["run", str(run_dir / "config.yaml"), "--run-dir", str(tmp_path / "fresh")])
        assert json.loads((tmp_path / "fresh" / "metrics.json").read_text()) == json.loads(
            (run_dir / "metrics.json").read_text()
        )
