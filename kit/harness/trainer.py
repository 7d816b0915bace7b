"""Training: the model compiled under the strategy, and `model.fit` with kit's callbacks and exact resume."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import keras
import tensorflow as tf

from kit.assembly import Pieces
from kit.backbone import Built
from kit.config import Config
from kit.console import say
from kit.data.pipeline import TrainingStream
from kit.errors import Interrupted, KitError, PluginError
from kit.evaluation import split_metrics
from kit.fused_dense import fused_dense_layers
from kit.harness.activations import lean_gelu_gradients
from kit.harness.callbacks import (
    BackboneSchedule,
    BestCheckpoint,
    EpochCheckpoints,
    JsonHistory,
    NanGuard,
    RunFolderGuard,
    StageTimer,
    TrainingCallbacks,
    plugin_failure,
)
from kit.harness.datasets import make_datasets
from kit.harness.finetune import apply_fine_tuning, backbone_rate
from kit.harness.optim import make_optimizer
from kit.harness.resume import SaveTrainingState, restore_state
from kit.harness.strategy import make_strategy, set_precision
from kit.harness.validation import EpochValidation


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
    config: Config,
    pieces: Pieces,
    reports: dict[str, Any],
    context: Any,
    strategy: Any = None,
    stops: Any = None,
    lock: Any = None,
) -> tuple[keras.Model, Built, dict]:
    """Build the model and train it, resuming exactly from the run's saved training state if there is one.

    Returns the trained model, what the backbone family built, and the batched datasets of every split.

    `stops` (`kit.harness.run.Stops`) says when a signal asks training to stop; `lock` is the run folder's
    `kit.harness.rundir.RunLock`, checked at every step so a deleted run folder stops the run.
    """
    seed_everything(config.seed, deterministic_ops=config.train.jit_compile is not True)
    set_precision(config.train.precision)
    strategy = strategy or make_strategy(config.train.strategy)
    stages = context.stages
    with stages.stage("datasets"):  # preprocessing, tokenising, holding examples in memory
        datasets, sizes, stream = make_datasets(config, pieces, reports, strategy)
    steps = config.train.steps_per_epoch or stream.batches_per_pass
    epochs = config.train.epochs
    with strategy.scope():
        with stages.stage("model"):
            model, built = build_model(config, pieces, steps * epochs)
    with stages.stage("restore"):
        restored = restore_state(model, context.run.backup_dir)
    callbacks = _training_callbacks(config, context, model, "validation" in datasets, steps, stops, lock)
    validation = datasets.get("validation")
    if validation is not None and EpochValidation.suits(model, pieces.task, validation):
        callbacks.validation = context.validation = EpochValidation(model, validation)
    # A state saved when training ended (early stopping or a callback, or the last epoch): nothing is left to
    # train. By its flag, not its step: a step count can fall short of the batches (mixed_float16's loss scaling
    # skips the update of an overflowing step), and a final state has no optimizer slots to train on.
    phases = [] if restored.stopped or restored.final else training_phases(restored.step, steps, epochs)
    say(f"kit: training {model.count_params():,} parameters for {epochs} epochs of {steps} steps")
    if phases and phases[0][3] % steps:  # resumed mid-epoch: carry on the epoch's running metrics
        _build_metrics(model, datasets["train"], restored.metrics)
        callbacks.metric_state = restored.metrics
    callbacks.start(restored.callbacks if restored.step else None)
    _train_phases(model, stream, datasets, callbacks, phases, steps, stops)
    callbacks.finish()  # early stopping puts the best weights back here
    context.utilisation = _utilisation(model, built, stream, datasets, context)
    return model, built, datasets


def _train_phases(
    model: keras.Model, stream: TrainingStream, datasets: dict, callbacks: Any, phases: list, steps: int, stops: Any
) -> None:
    """One `model.fit` per phase (see `training_phases`), all seen by the callbacks as one training."""
    stopping = stops.during_training() if stops is not None else contextlib.nullcontext()
    with stopping, lean_gelu_gradients(), fused_dense_layers():  # the training step unfused, validation fused
        for first_epoch, end_epoch, epoch_steps, from_step in phases:
            callbacks.first_batch = from_step - first_epoch * steps
            model.fit(
                stream.from_step(from_step),
                validation_data=None if callbacks.validation is not None else datasets.get("validation"),
                initial_epoch=first_epoch,
                epochs=end_epoch,
                steps_per_epoch=epoch_steps,
                callbacks=callbacks,
                shuffle=False,  # the stream is shuffled already
                verbose=0,  # the progress bar is in `callbacks`, counting the run's epochs
            )
            if model.stop_training:  # early stopping or a callback
                break
    if stops is not None and stops.received:  # it came after the last step's state was saved
        raise Interrupted(
            f"kit run stopped by {stops.received} after training; the trained state is saved. Run the same "
            f"command again to evaluate and save the model (without training again)."
        )


def _build_metrics(model: keras.Model, dataset: tf.data.Dataset, saved: list | None) -> None:
    """Build the compiled metrics now, from one batch, when they are not built yet (without a distribution
    strategy Keras builds them as it first traces a step), so the saved running totals can go back in first."""
    from kit.harness.resume import metric_variables

    if saved is None or len(metric_variables(model)) == len(saved):
        return
    x, y, weight = keras.utils.unpack_x_y_sample_weight(next(iter(dataset)))
    model.compute_metrics(x, y, model(x, training=False), sample_weight=weight)


def _utilisation(model: keras.Model, built: Built, stream: TrainingStream, datasets: dict, context: Any) -> Any:
    """Model FLOPs utilisation of the steady training steps (`kit.harness.flops`), or None."""
    from kit.harness.flops import epoch_flops, utilisation

    steady = context.timer.steps - 1  # the first step's time is tracing, not training
    if steady < 1:
        return None
    sample = next(iter(datasets["train"]))[0]
    flops = epoch_flops(model, built, stream.examples, sample)
    return utilisation(flops, steady / stream.batches_per_pass, context.stages.seconds.get("training", 0.0))


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


def _training_callbacks(
    config: Config, context: Any, model: keras.Model, has_validation: bool, steps: int, stops: Any, lock: Any
) -> TrainingCallbacks:
    """kit's callbacks, then the plugins', then the state saver."""
    backup = context.run.backup_dir
    saver = SaveTrainingState(backup, config.train.checkpoint_every_steps, stops=stops, epochs=config.train.epochs)
    plugins = _plugin_callbacks(context)
    guards = [RunFolderGuard(lock)] if lock is not None else []
    # The saver comes last: a state then holds every callback's state after its epoch end, and a kill while
    # kit's or a plugin's epoch-end writers run leaves the previous state newest (the epoch is done again).
    timer = context.timer = StageTimer(context.stages)  # first: it tells each step from the callbacks' work
    callbacks = TrainingCallbacks(
        [
            timer,
            *guards,
            NanGuard(backup),
            *_callbacks(config, context, has_validation),
            *(c for c, _ in plugins),
            saver,
        ],
        owners={id(callback): plugin for callback, plugin in plugins},
        model=model,
        verbose=_verbosity(config.train.verbose),
        epochs=config.train.epochs,
        steps=steps,
    )
    saver.callbacks = callbacks
    return callbacks


def _callbacks(config: Config, context: Any, has_validation: bool) -> list[keras.callbacks.Callback]:
    run = context.run
    checkpoints = run.checkpoints_dir
    checkpoints.mkdir(exist_ok=True)
    monitor = config.train.monitor if has_validation or not config.train.monitor.startswith("val_") else "loss"
    callbacks: list[keras.callbacks.Callback] = [
        EpochCheckpoints(checkpoints, keep=config.train.keep_checkpoints),
        BestCheckpoint(checkpoints / "best.weights.h5", monitor=monitor),
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


def _plugin_callbacks(context: Any) -> list[tuple[keras.callbacks.Callback, str]]:
    """The callbacks plugins register through `register_callbacks`, each with its plugin's name."""
    from kit.plugins import get_plugins

    found: list[tuple[keras.callbacks.Callback, str]] = []

    def register_for(plugin: str) -> Any:
        def register(callback: Any) -> None:
            _check_callback(callback, plugin, [c for c, _ in found])
            found.append((callback, plugin))

        return register

    for plugin, exc in get_plugins().call_each("register_callbacks", register_for, run=context).items():
        if isinstance(exc, KitError):
            raise exc
        # sys.exit() and its own KeyboardInterrupt too: a plugin cannot end kit
        raise PluginError(plugin_failure(plugin, "register_callbacks", exc)) from None
    return found


def _check_callback(callback: Any, plugin: str, registered: list) -> None:
    if not isinstance(callback, keras.callbacks.Callback):
        raise PluginError(f"Plugin '{plugin}' registered {callback!r}; callbacks must be keras.callbacks.Callback.")
    if isinstance(callback, keras.callbacks.BackupAndRestore):
        raise PluginError(
            f"Plugin '{plugin}' registered keras.callbacks.BackupAndRestore. kit saves and restores the training "
            f"state itself (backup/ in the run folder), exactly, and the two would fight: leave it out."
        )
    if any(callback is other for other in registered):
        raise PluginError(
            f"Plugin '{plugin}' registered the same {type(callback).__name__} object twice; Keras would call it "
            f"twice per step. Register it once (or two separate instances)."
        )


def final_metrics(model: keras.Model, pieces: Pieces, datasets: dict, context: Any) -> dict[str, dict[str, float]]:
    """Metrics on validation and test (on train when neither has rows), with the task's report files."""
    validated = getattr(context, "validation", None)  # `EpochValidation`: the last epoch's outputs, if current
    kept = validated.kept_outputs() if validated is not None else None
    results, traced = {}, {}  # the model traced once for both splits
    for split in ("validation", "test"):
        if split in datasets:
            reused = kept if split == "validation" else None
            results[split] = split_metrics(model, pieces.task, datasets[split], context.run.path, split, traced, reused)
    if not results:
        results["train"] = split_metrics(model, pieces.task, datasets["train"], context.run.path, "train")
    return results
