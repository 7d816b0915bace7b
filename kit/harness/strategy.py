"""Choosing the `tf.distribute` strategy and precision policy from the config."""

from __future__ import annotations

import json
import os
from typing import Any

from kit.errors import ConfigError


def _tf_config_workers() -> int:
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    except json.JSONDecodeError:
        raise ConfigError(
            "TF_CONFIG is not valid JSON. See the TensorFlow multi-worker guide for its format."
        ) from None
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def make_strategy(name: str) -> Any:
    """Return a `tf.distribute.Strategy`.

    `auto` picks: TF_CONFIG with several workers -> MultiWorkerMirroredStrategy;
    a TPU named by TPU_NAME -> TPUStrategy; several GPUs -> MirroredStrategy;
    otherwise the default strategy (one device, no overhead).
    """
    import tensorflow as tf

    from kit.compat import fix_keras_distribution

    fix_keras_distribution()
    if name == "auto":
        if _tf_config_workers() > 1:
            name = "multi_worker"
        elif os.environ.get("TPU_NAME"):
            name = "tpu"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            return tf.distribute.get_strategy()
    if name == "cpu":
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if _tf_config_workers() < 1:
            raise ConfigError(
                "train.strategy is multi_worker but TF_CONFIG names no workers. Set TF_CONFIG on every worker "
                '(e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}).'
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        return _tpu_strategy(tf)
    raise ConfigError(f"Unknown train.strategy '{name}'.")


def _tpu_strategy(tf: Any) -> Any:
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=os.environ.get("TPU_NAME", ""))
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.NotFoundError) as exc:
        raise ConfigError(
            f"train.strategy is tpu but no TPU was found ({exc}). Run on a TPU VM or set TPU_NAME."
        ) from None
    return tf.distribute.TPUStrategy(resolver)


def split_cpu(environ: dict[str, str] | None = None) -> None:
    """KIT_CPU_DEVICES=N splits the CPU into N logical devices, to try `mirrored` training on one machine.

    Must run before TensorFlow executes its first operation.
    """
    count = (environ if environ is not None else os.environ).get("KIT_CPU_DEVICES")
    if not count:
        return
    if not count.isdigit() or int(count) < 1:
        raise ConfigError(f"KIT_CPU_DEVICES must be a whole number of devices, got '{count}'.")
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * int(count))
    except RuntimeError:  # already initialised in this process (e.g. a second run in the same Python)
        pass


def set_precision(policy: str) -> None:
    import keras

    keras.mixed_precision.set_global_policy(policy)
