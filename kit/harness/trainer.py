"""Training: the model compiled under the strategy, and `model.fit` with kit's callbacks and exact resume."""

from __future__ import annotations

import os
from typing import Any

import keras
import tensorflow as tf

from kit.assembly import Pieces
from kit.backbone import Built
from kit.config import Config
from kit.console import say
from kit.errors import Interrupted, PluginError, TrainingError
from kit.evaluation import split_metrics
from kit.harness.callbacks import BackboneSchedule, JsonHistory, NanGuard, PruneCheckpoints
from kit.harness.datasets import make_datasets
from kit.harness.finetune import apply_fine_tuning, backbone_rate
from kit.harness.optim import make_optimizer
from kit.harness.resume import SaveTrainingState, restore_state
from kit.harness.strategy import make_strategy, set_precision


def seed_everything(seed: int, deterministic_ops: bool = True) -> None:
    """Same seed, same run on CPU: Python, NumPy and TF seeds plus, unless XLA is asked for, deterministic ops.

    Keras silently turns XLA off while op determinism is enabled (`model_supports_jit`), so a run
    with `train.jit_compile: true` trades bit-for-bit repeatability for XLA.
    """
    keras.utils.set_random_seed(seed)
    if deterministic_ops:
        tf.config.experimental.enable_op_determinism()
    else:  # the switch back has no public name; a process that enabled it earlier (tests) must clear it
        from tensorflow.python.framework import config as framework_config

        framework_config.disable_op_determinism()


def build_model(config: Config, pieces: Pieces, total_steps: int) -> tuple[keras.Model, Built]:
    """The backbone family's layers, the task's head, fine-tuning settings, compiled."""
    built = pieces.backbone.build()
    model = pieces.task.build_model(built)
    apply_fine_tuning(config, model, built.backbone)
    backbone_variables, scale = backbone_rate(config, model, built.backbone)
    model.compile(
        optimizer=make_optimizer(config.train, total_steps, backbone_variables, scale),
        loss=pieces.task.loss(),
        metrics=pieces.task.metrics(),
        jit_compile=config.train.jit_compile,
    )
    build_optimizer(model)
    return model, built


def build_optimizer(model: keras.Model) -> None:
    """Create the optimizer's slot variables now rather than inside the first training step.

    Without a distribution strategy Keras leaves this to the first trace of
    the train step, and a `tf.function` that creates variables is traced twice
    (with and without creating them). For MiniLM that second trace cost ~6 s
    before the first step and ~180 MB of peak memory. A model that is not built
    yet (a subclassed model builds on its first call) keeps Keras's lazy path.
    """
    if model.built and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def fit(
    config: Config, pieces: Pieces, reports: dict[str, Any], context: Any, strategy: Any = None
) -> tuple[keras.Model, Built, dict]:
    """Build the model and train it, resuming exactly from the run's saved training state if there is one.

    Returns the trained model, what the backbone family built, and the batched datasets of every split.
    """
    seed_everything(config.seed, deterministic_ops=config.train.jit_compile is not True)
    set_precision(config.train.precision)
    strategy = strategy or make_strategy(config.train.strategy)
    datasets, sizes, stream = make_datasets(config, pieces, reports, strategy)
    steps = config.train.steps_per_epoch or stream.batches_per_pass
    epochs = config.train.epochs
    with strategy.scope():
        model, built = build_model(config, pieces, steps * epochs)
    saver = SaveTrainingState(context.run.backup_dir, config.train.checkpoint_every_steps)
    start = restore_state(model, saver.folder)
    guard = NanGuard()
    # The saver runs after kit's epoch-end writers: a kill while they write leaves the previous state newest,
    # so the epoch is trained and its files written again. Plugin callbacks come last.
    callbacks = [guard, *_callbacks(config, context, "validation" in datasets), saver, *_plugin_callbacks(context)]
    say(f"kit: training {model.count_params():,} parameters for {epochs} epochs of {steps} steps")
    with saver.stopping_on_signals():
        for first_epoch, end_epoch, epoch_steps, from_step in training_phases(start, steps, epochs):
            model.fit(
                stream.from_step(from_step),
                validation_data=datasets.get("validation"),
                initial_epoch=first_epoch,
                epochs=end_epoch,
                steps_per_epoch=epoch_steps,
                callbacks=callbacks,
                shuffle=False,  # the stream is shuffled already
                verbose=_verbosity(config.train.verbose),
            )
            if model.stop_training:  # early stopping, the NaN guard or a signal
                break
    if guard.failed_at:
        epoch, batch, loss = guard.failed_at
        raise TrainingError(
            f"Training stopped: the loss became {loss} at epoch {epoch}, batch {batch}. "
            f"The last good state is kept in {saver.folder} and run again resumes from it. "
            f"Usual remedies: a lower train.learning_rate, train.precision: float32, or check the data for extreme values."
        )
    if saver.stopped_at is not None:
        raise Interrupted(
            f"Training stopped by {saver.stop_requested} at step {saver.stopped_at}; its state is saved in "
            f"{saver.folder}. Run the same command again to continue exactly where it stopped."
        )
    return model, built, datasets


def training_phases(start_step: int, steps: int, epochs: int) -> list[tuple[int, int, int, int]]:
    """The `model.fit` calls that finish training from global step `start_step`.

    Each is (initial_epoch, epochs, steps_per_epoch, first global step). Keras
    epochs always start at their first batch, so a run stopped mid-epoch
    finishes that epoch with a short fit of its remaining steps, then trains
    the remaining epochs in a second one.
    """
    epoch, done = divmod(start_step, steps)
    phases = []
    if done and epoch < epochs:
        phases.append((epoch, epoch + 1, steps - done, start_step))
        epoch += 1
    if epoch < epochs:
        phases.append((epoch, epochs, steps, epoch * steps))
    return phases


def _verbosity(setting: Any) -> Any:
    if setting != "auto":
        return setting
    return 1 if os.isatty(1) else 2


def _callbacks(config: Config, context: Any, has_validation: bool) -> list[keras.callbacks.Callback]:
    run = context.run
    checkpoints = run.checkpoints_dir
    checkpoints.mkdir(exist_ok=True)
    monitor = config.train.monitor if has_validation or not config.train.monitor.startswith("val_") else "loss"
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.ModelCheckpoint(str(checkpoints / "epoch-{epoch:03d}.weights.h5"), save_weights_only=True),
        PruneCheckpoints(checkpoints, keep=config.train.keep_checkpoints),
        keras.callbacks.ModelCheckpoint(
            str(checkpoints / "best.weights.h5"), save_weights_only=True, save_best_only=True, monitor=monitor
        ),
        keras.callbacks.TensorBoard(str(run.logs_dir)),
        JsonHistory(run.history_file),
    ]
    if config.train.early_stopping_patience is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=monitor, patience=config.train.early_stopping_patience, restore_best_weights=True
            )
        )
    if config.model.unfreeze_backbone_after is not None or config.train.backbone_learning_rate is not None:
        callbacks.append(BackboneSchedule(config.model.unfreeze_backbone_after or 0))
    return callbacks


def _plugin_callbacks(context: Any) -> list[keras.callbacks.Callback]:
    """The Keras callbacks plugins add through `register_callbacks`, each checked and owned by its plugin."""
    from kit.plugins import get_plugins

    found: list[keras.callbacks.Callback] = []

    def register_for(plugin: str) -> Any:
        def register(callback: Any) -> None:
            if not isinstance(callback, keras.callbacks.Callback):
                raise PluginError(
                    f"Plugin '{plugin}' registered {callback!r}; callbacks must be keras.callbacks.Callback."
                )
            found.append(callback)

        return register

    errors = get_plugins().call_each("register_callbacks", register_for, run=context)
    for plugin, exc in errors.items():
        if isinstance(exc, PluginError):
            raise exc
        raise PluginError(f"Plugin '{plugin}' failed in register_callbacks: {type(exc).__name__}: {exc}") from None
    return found


def final_metrics(model: keras.Model, pieces: Pieces, datasets: dict, context: Any) -> dict[str, dict[str, float]]:
    """Metrics on validation and test (on train when neither has rows), with the task's report files."""
    results = {}
    for split in ("validation", "test"):
        if split in datasets:
            results[split] = split_metrics(model, pieces.task, datasets[split], context.run.path, split)
    if not results:
        results["train"] = split_metrics(model, pieces.task, datasets["train"], context.run.path, "train")
    return results
