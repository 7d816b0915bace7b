"""tf.distribute: MirroredStrategy over two logical CPUs, two MultiWorkerMirroredStrategy workers on
127.0.0.1, and TPU selection with the TPU resolver mocked.

The multi-device runs are real subprocesses: logical devices and multi-worker
collectives must be configured before TensorFlow runs its first operation.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import make_tabular, project, review, write_csv

pytestmark = pytest.mark.slow

# No dropout and no gradient clipping: Keras clips each replica's gradients before summing them,
# so with clipping several replicas legitimately differ from one device (see docs/distributed.md).
REGRESSION = (
    "task: regression\ndata:\n  train: {data}\n  target: y\n  batch_size: 32\nmodel:\n  dropout: 0\n"
    "train:\n  epochs: 3\n  clip_norm: null\n  verbose: 0\n"
)


def kit_run(folder, run_dir, *settings, env=None):
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KIT_LOAD_PLUGINS": "", **(env or {})}
    argv = [sys.executable, "-m", "kit", "run", str(folder), "--run-dir", str(run_dir)]
    for setting in settings:
        argv += ["--set", setting]
    return subprocess.Popen(argv, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process):
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    return stderr


def losses(run_dir):
    lines = (run_dir / "history.jsonl").read_text().splitlines()
    return np.array([[json.loads(line)[key] for key in ("loss", "val_loss")] for line in lines])


def free_port():
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


def tf_config(ports, index):
    workers = [f"127.0.0.1:{port}" for port in ports]
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})


def test_two_workers_follow_the_one_worker_loss_trajectory(tmp_path):
    folder = project(tmp_path / "p", REGRESSION.format(data=make_tabular(tmp_path)))
    single = kit_run(folder, tmp_path / "single")
    ports = [free_port(), free_port()]
    workers = [
        kit_run(folder, tmp_path / f"worker-{i}", "train.strategy=multi_worker", env={"TF_CONFIG": tf_config(ports, i)})
        for i in range(2)
    ]
    for process in [single, *workers]:
        finish(process)
    expected = losses(tmp_path / "single")
    for i in range(2):
        np.testing.assert_allclose(losses(tmp_path / f"worker-{i}"), expected, rtol=1e-5)
    metrics = [json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("single", "worker-0")]
    assert metrics[0]["test"]["rmse"] == pytest.approx(metrics[1]["test"]["rmse"], rel=1e-5)


def test_mirrored_over_two_logical_cpus(tmp_path):
    """A keras-hub text model (bool padding mask) and a tabular one, mirrored over two CPU devices."""
    import random

    rng = random.Random(0)
    rows = [
        [review(rng, positive), "pos" if positive else "neg"] for positive in [rng.random() < 0.5 for _ in range(160)]
    ]
    text = write_csv(tmp_path / "reviews.csv", ["text", "label"], rows)
    classify = project(
        tmp_path / "text",
        f"task: classification\ndata:\n  train: {text}\n  batch_size: 16\nmodel:\n  sequence_length: 16\n"
        "  vocabulary_size: 200\ntrain:\n  epochs: 2\n  verbose: 0\n",
    )
    regress = project(tmp_path / "tab", REGRESSION.format(data=make_tabular(tmp_path)))
    two_cpus = {"KIT_CPU_DEVICES": "2"}
    stderr = finish(kit_run(classify, tmp_path / "text-run", "train.strategy=mirrored", env=two_cpus))
    assert "Traceback" not in stderr
    test_rows = json.loads((tmp_path / "text-run" / "run.json").read_text())["data"]["test"]["rows"]
    # Every test example predicted once: replicas split the batches, they do not each get them whole.
    assert json.loads((tmp_path / "text-run" / "metrics.json").read_text())["test"]["examples"] == test_rows
    mirrored = kit_run(regress, tmp_path / "mirrored", "train.strategy=mirrored", env=two_cpus)
    single = kit_run(regress, tmp_path / "single")
    finish(mirrored), finish(single)
    np.testing.assert_allclose(losses(tmp_path / "mirrored"), losses(tmp_path / "single"), rtol=1e-5)


def test_tpu_strategy_is_chosen_and_connected_with_the_resolver_mocked(monkeypatch):
    import tensorflow as tf

    from kit.harness.strategy import make_strategy

    calls = []

    class Resolver:
        def __init__(self, tpu):
            calls.append(("resolve", tpu))

    monkeypatch.setenv("TPU_NAME", "my-tpu")
    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", Resolver)
    monkeypatch.setattr(tf.config, "experimental_connect_to_cluster", lambda r: calls.append("connect"))
    monkeypatch.setattr(tf.tpu.experimental, "initialize_tpu_system", lambda r: calls.append("initialize"))
    monkeypatch.setattr(tf.distribute, "TPUStrategy", lambda r: ("TPUStrategy", type(r).__name__))
    assert make_strategy("auto") == ("TPUStrategy", "Resolver")  # TPU_NAME set: auto picks the TPU
    assert make_strategy("tpu") == ("TPUStrategy", "Resolver")
    assert calls[:3] == [("resolve", "my-tpu"), "connect", "initialize"]


def test_tpu_strategy_without_a_tpu_is_explained(monkeypatch):
    import tensorflow as tf

    from kit.errors import ConfigError
    from kit.harness.strategy import make_strategy

    def no_tpu(tpu):
        raise ValueError("Please provide a TPU Name to connect to.")

    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", no_tpu)
    with pytest.raises(ConfigError, match="train.strategy is tpu but no TPU was found"):
        make_strategy("tpu")


def test_multi_worker_without_tf_config_is_explained(monkeypatch):
    from kit.errors import ConfigError
    from kit.harness.strategy import make_strategy

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="TF_CONFIG names no workers"):
        make_strategy("multi_worker")
