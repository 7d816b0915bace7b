"""The TensorFlow half of a run: datasets, model, `model.fit`, saving, final metrics."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import keras
import numpy as np
import tensorflow as tf

from kit.config import Config
from kit.data.fields import TextField
from kit.data.pipeline import TrainingStream, examples, finished, hold_in_memory, prepared, trimmable, trimmed
from kit.errors import Interrupted, KitError, PluginError, TrainingError
from kit.harness.callbacks import (
    BackboneSchedule,
    BestCheckpoint,
    EpochCheckpoints,
    JsonHistory,
    NanGuard,
    RunFolderGuard,
    TrainingCallbacks,
    plugin_failure,
    read_history,
)
from kit.harness.optim import make_optimizer
from kit.harness.plots import plot_curves
from kit.harness.resume import SaveTrainingState, restore_state
from kit.harness.rundir import write_json_atomic
from kit.harness.setup import Pieces, say
from kit.harness.strategy import make_strategy, set_precision
from kit.inputs import PRESET_DIR

MODEL_FILE = "model.keras"
BACKUP_DIR = "backup"  # training states for exact resume; removed once the model is saved
BUNDLE_FILE = "kit_model.json"
ADAPTERS_FILE = "adapters.lora.h5"


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


def make_datasets(
    config: Config, pieces: Pieces, reports: dict[str, Any], strategy: Any = None
) -> tuple[dict[str, tf.data.Dataset], dict[str, int], TrainingStream]:
    """Batched datasets in file order for every split that has rows (for evaluation), how many
    examples each holds, and the shuffled training stream `model.fit` reads."""
    data = config.data
    trim = trims_padding(config, strategy or tf.distribute.get_strategy())
    datasets, sizes, train_examples = {}, {}, None
    for split, report in reports.items():
        if report.rows == 0:
            continue
        examples, size = _examples(pieces, split, report.rows)
        held = hold_in_memory(examples, data.cache)
        if held is not None:
            examples, size, batches = held, held.count, held.batches(data.batch_size)
        else:
            if size is None:  # examples the task re-shaped: cache them, so counting is the only extra pass
                examples = examples.cache()
                size = count_examples(examples)
                examples = examples.apply(tf.data.experimental.assert_cardinality(size))
            batches = examples.batch(data.batch_size)
        if size == 0:
            continue
        datasets[split] = finished(trimmed(batches) if trim else batches)
        sizes[split] = size
        if split == "train":
            train_examples, train_spec = examples, batches.element_spec
    if train_examples is None:
        raise TrainingError(
            "The training data yields no examples (for generation: fewer tokens than one window of "
            "model.sequence_length + 1). Add text or lower model.sequence_length."
        )
    # A smaller last batch would retrace (and with XLA recompile) the train step: drop it, unless it is all.
    drop = sizes["train"] >= data.batch_size
    stream = TrainingStream(
        train_examples,
        batch_size=data.batch_size,
        batches_per_pass=steps_per_epoch(sizes["train"], data.batch_size, drop),
        seed=config.seed,
        shuffle_buffer=data.shuffle_buffer,
        drop_remainder=drop,
        trim_padding=trim,
        group_by_length=trimmable(train_spec) and (trim if data.group_by_length == "auto" else data.group_by_length),
    )
    return datasets, sizes, stream


def trims_padding(config: Config, strategy: Any) -> bool:
    """`data.trim_padding` settled: `auto` trims when training runs on CPU without XLA.

    XLA compiles once per input shape and TPUs need static shapes, so batches of
    varying length are for CPU, where Keras's `jit_compile: auto` means no XLA.
    """
    setting = config.data.trim_padding
    if setting != "auto":
        return bool(setting)
    accelerated = tf.config.list_physical_devices("GPU") or isinstance(strategy, tf.distribute.TPUStrategy)
    return config.train.jit_compile is not True and not accelerated


def _examples(pieces: Pieces, split: str, rows: int) -> tuple[tf.data.Dataset, int | None]:
    """One split's unbatched, preprocessed examples and their number (None when the task re-shapes rows
    into examples: known only once they are held or counted)."""
    stream = examples(pieces.plan, split, pieces.inputs.fields, pieces.targets, rows)
    reshaped = pieces.task.prepare(stream, pieces.inputs, split)
    if reshaped is not None:
        return reshaped, None
    if not pieces.inputs.has_preprocessing():
        return stream, rows
    inputs = pieces.inputs
    return prepared(stream, lambda x, y: (inputs.preprocess(x), y)), rows


def count_examples(dataset: tf.data.Dataset) -> int:
    """Elements of a finite dataset, counted in one pass (which also fills its cache)."""
    return int(dataset.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))


def _text_dataset(pieces: Pieces) -> Any:
    def texts(column: str) -> tf.data.Dataset:
        field = TextField(column)
        return examples(pieces.plan, "train", [field], []).map(lambda x: x[column])

    return texts


def adapt_inputs(pieces: Pieces) -> None:
    """Let the inputs learn from training data (a vocabulary) or load theirs (a pretrained tokenizer)."""
    pieces.inputs.adapt(_text_dataset(pieces))


def build_model(config: Config, pieces: Pieces, total_steps: int) -> keras.Model:
    model_inputs, representation = pieces.inputs.build()
    model = pieces.task.build_model(model_inputs, representation)
    _fine_tuning(config, model)
    backbone_variables, scale = _backbone_rate(config, model)
    model.compile(
        optimizer=make_optimizer(config.train, total_steps, backbone_variables, scale),
        loss=pieces.task.loss(),
        metrics=pieces.task.metrics(),
        jit_compile=config.train.jit_compile,
    )
    build_optimizer(model)
    return model


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


def keras_hub_backbone(model: keras.Model) -> Any:
    """The keras-hub backbone inside `model`, or None (tabular and image models)."""
    import keras_hub

    if isinstance(model, keras_hub.models.Task):
        return model.backbone
    found = [layer for layer in model.layers if isinstance(layer, keras_hub.models.Backbone)]
    return found[0] if found else None


def _fine_tuning_settings(config: Config) -> list[str]:
    """The fine-tuning settings a config uses, by name."""
    model, train = config.model, config.train
    used = {
        "model.freeze_backbone": model.freeze_backbone,
        "model.unfreeze_backbone_after": model.unfreeze_backbone_after is not None,
        "model.lora_rank": model.lora_rank is not None,
        "train.backbone_learning_rate": train.backbone_learning_rate is not None,
    }
    return [name for name, on in used.items() if on]


def _fine_tuning(config: Config, model: keras.Model) -> None:
    """Check the fine-tuning settings and apply freezing or LoRA, before compiling."""
    settings = _fine_tuning_settings(config)
    if not settings:
        return
    backbone = keras_hub_backbone(model)
    if backbone is None:
        raise TrainingError(f"{settings[0]} needs a keras-hub backbone (text or generation); this model has none.")
    if "model.lora_rank" in settings and len(settings) > 1:
        others = ", ".join(name for name in settings if name != "model.lora_rank")
        raise TrainingError(f"Set model.lora_rank or {others}, not both (LoRA trains only its adapters).")
    after = config.model.unfreeze_backbone_after
    if after is not None and after >= config.train.epochs:
        raise TrainingError(
            f"model.unfreeze_backbone_after is {after} but training has {config.train.epochs} epochs, so the "
            f"backbone would never train. Lower it, or use model.freeze_backbone: true."
        )
    if config.model.freeze_backbone and after is None:
        backbone.trainable = False
    elif config.model.lora_rank is not None:
        backbone.enable_lora(config.model.lora_rank)
        # keras-hub leaves the adapted layers' biases trainable, but its adapter file holds only the
        # low-rank kernels: freeze the biases so the adapters alone reproduce the fine-tuned backbone.
        for layer in backbone._flatten_layers(include_self=False):
            if getattr(layer, "lora_enabled", False) and getattr(layer, "bias", None) is not None:
                layer.bias.trainable = False
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    say(f"kit: fine-tuning {trainable:,} of {model.count_params():,} parameters")


def _backbone_rate(config: Config, model: keras.Model) -> tuple[list[Any], float]:
    """The backbone weights that learn at a rate of their own, and that rate's scale (else [], 1)."""
    train = config.train
    if train.backbone_learning_rate is None and config.model.unfreeze_backbone_after is None:
        return [], 1.0
    backbone_weights = keras_hub_backbone(model).trainable_weights
    owned = {id(w) for w in backbone_weights}
    if all(id(w) in owned for w in model.trainable_weights):
        raise TrainingError(
            "Every trainable weight of this model belongs to its backbone (a causal LM's output layer is its "
            "token embedding), so there is no head to train apart from it. Remove train.backbone_learning_rate "
            "and model.unfreeze_backbone_after; set train.learning_rate instead."
        )
    scale = 1.0 if train.backbone_learning_rate is None else train.backbone_learning_rate / train.learning_rate
    return backbone_weights, scale


def fit(
    config: Config,
    pieces: Pieces,
    reports: dict[str, Any],
    context: Any,
    strategy: Any = None,
    stops: Any = None,
    lock: Any = None,
) -> tuple[keras.Model, dict]:
    """Build the model and train it, resuming exactly from the run's saved training state if there is one.

    `stops` (`kit.harness.run.Stops`) says when a signal asks training to stop; `lock` is the run folder's
    `kit.harness.rundir.RunLock`, checked at every step so a deleted run folder stops the run.
    """
    seed_everything(config.seed, deterministic_ops=config.train.jit_compile is not True)
    set_precision(config.train.precision)
    strategy = strategy or make_strategy(config.train.strategy)
    datasets, sizes, stream = make_datasets(config, pieces, reports, strategy)
    steps = config.train.steps_per_epoch or stream.batches_per_pass
    epochs = config.train.epochs
    with strategy.scope():
        model = build_model(config, pieces, steps * epochs)
    restored = restore_state(model, context.run_dir / BACKUP_DIR)
    callbacks = _training_callbacks(config, context, model, "validation" in datasets, steps, stops, lock)
    # A state saved when early stopping (or a callback) ended training: nothing is left to train.
    phases = [] if restored.stopped else training_phases(restored.step, steps, epochs)
    say(f"kit: training {model.count_params():,} parameters for {epochs} epochs of {steps} steps")
    with preprocessing_detached(model):
        if phases and phases[0][3] % steps:  # resumed mid-epoch: carry on the epoch's running metrics
            _build_metrics(model, datasets["train"], restored.metrics)
            callbacks.metric_state = restored.metrics
        callbacks.start(restored.callbacks if restored.step else None)
        _train_phases(model, stream, datasets, callbacks, phases, steps, stops)
        callbacks.finish()  # early stopping puts the best weights back here
    return model, datasets


def _train_phases(
    model: keras.Model, stream: TrainingStream, datasets: dict, callbacks: Any, phases: list, steps: int, stops: Any
) -> None:
    """One `model.fit` per phase (see `training_phases`), all seen by the callbacks as one training."""
    with stops.during_training() if stops is not None else contextlib.nullcontext():
        for first_epoch, end_epoch, epoch_steps, from_step in phases:
            callbacks.first_batch = from_step - first_epoch * steps
            model.fit(
                stream.from_step(from_step),
                validation_data=datasets.get("validation"),
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


@contextlib.contextmanager
def preprocessing_detached(model: keras.Model) -> Iterator[None]:
    """Detach a keras-hub task's preprocessor while kit feeds it already-preprocessed batches.

    keras-hub models (e.g. `GPT2CausalLM`) map their preprocessor over any
    dataset given to fit/evaluate; kit's tf.data pipeline has already
    tokenised. The preprocessor stays part of the saved model for `generate()`.
    """
    preprocessor = getattr(model, "preprocessor", None)
    if preprocessor is None:
        yield
        return
    model.preprocessor = None
    try:
        yield
    finally:
        model.preprocessor = preprocessor


def steps_per_epoch(rows: int, batch_size: int, drop_remainder: bool) -> int:
    """Batches in one pass over `rows` examples (a partial last batch counts unless dropped)."""
    full, rest = divmod(rows, batch_size)
    return max(full + (1 if rest and not drop_remainder else 0), 1)


def _verbosity(setting: Any) -> Any:
    if setting != "auto":
        return setting
    return 1 if os.isatty(1) else 2


def _training_callbacks(
    config: Config, context: Any, model: keras.Model, has_validation: bool, steps: int, stops: Any, lock: Any
) -> TrainingCallbacks:
    """kit's callbacks, then the plugins', then the state saver."""
    backup = context.run_dir / BACKUP_DIR
    saver = SaveTrainingState(backup, config.train.checkpoint_every_steps, stops=stops)
    plugins = _plugin_callbacks(context)
    guards = [RunFolderGuard(lock)] if lock is not None else []
    # The saver comes last: a state then holds every callback's state after its epoch end, and a kill while
    # kit's or a plugin's epoch-end writers run leaves the previous state newest (the epoch is done again).
    callbacks = TrainingCallbacks(
        [*guards, NanGuard(backup), *_callbacks(config, context, has_validation), *(c for c, _ in plugins), saver],
        owners={id(callback): plugin for callback, plugin in plugins},
        model=model,
        verbose=_verbosity(config.train.verbose),
        epochs=config.train.epochs,
        steps=steps,
    )
    saver.callbacks = callbacks
    return callbacks


def _callbacks(config: Config, context: Any, has_validation: bool) -> list[keras.callbacks.Callback]:
    run_dir = context.run_dir
    checkpoints = run_dir / "checkpoints"
    checkpoints.mkdir(exist_ok=True)
    monitor = config.train.monitor if has_validation or not config.train.monitor.startswith("val_") else "loss"
    callbacks: list[keras.callbacks.Callback] = [
        EpochCheckpoints(checkpoints, keep=config.train.keep_checkpoints),
        BestCheckpoint(checkpoints / "best.weights.h5", monitor=monitor),
        keras.callbacks.TensorBoard(str(run_dir / "logs")),
        JsonHistory(run_dir / "history.jsonl"),
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
    """The callbacks plugins register, each with its plugin's name."""
    from kit.plugins import get_plugins

    found: list[tuple[keras.callbacks.Callback, str]] = []
    for impl in get_plugins().pm.hook.register_callbacks.get_hookimpls():

        def register(callback: Any, _plugin: str = impl.plugin_name) -> None:
            _check_callback(callback, _plugin, [c for c, _ in found])
            found.append((callback, _plugin))

        try:
            impl.function(register=register, run=context)
        except KitError:
            raise
        except BaseException as exc:  # sys.exit() and its own KeyboardInterrupt too: a plugin cannot end kit
            if getattr(exc, "signal", None) is not None:  # a real Ctrl-C or SIGTERM (kit.harness.run.SignalStop)
                raise
            raise PluginError(plugin_failure(impl.plugin_name, "register_callbacks", exc)) from None
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


# ------------------------------------------------------------------ saving


def without_optimizer(model: keras.Model) -> keras.Model:
    """An uncompiled copy with the same weights, so model.keras holds no optimizer state.

    Adam's two moments would triple the file; resuming reads backup/, not model.keras.
    """
    # Not keras.models.clone_model: since Keras 3.x it compiles the copy with the same optimizer.
    with preprocessing_detached(model):  # a keras-hub tokenizer's vocabulary is not in its config
        copy = type(model).from_config(model.get_config())
    # Through a weights file rather than set_weights: Keras writes LoRA layers with the adapters merged
    # into their kernels, which is exactly what the plain (LoRA-free) copy holds.
    with tempfile.TemporaryDirectory() as scratch:
        weights = os.path.join(scratch, "model.weights.h5")
        model.save_weights(weights)
        # keras-hub tasks compile themselves when built; their fresh optimizer takes no saved state.
        fresh_optimizer = [copy.optimizer] if getattr(copy, "optimizer", None) is not None else None
        copy.load_weights(weights, objects_to_skip=fresh_optimizer)
    if getattr(model, "preprocessor", None) is not None:
        copy.preprocessor = model.preprocessor
    return copy


def save_model(model: keras.Model, pieces: Pieces, config: Config, resolved: dict, folder: Path) -> Path:
    """Write the trained model and what is needed to use it: model.keras + kit_model.json."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (MODEL_FILE + ".tmp.keras")
    plain = without_optimizer(model)
    plain.save(tmp)
    tmp.replace(folder / MODEL_FILE)
    save_backbone_preset(plain, pieces.inputs, folder / PRESET_DIR)  # no optimizer state in the preset either
    backbone = keras_hub_backbone(model)
    if config.model.lora_rank is not None and backbone is not None:
        # Merged into model.keras and the preset already (Keras saves LoRA kernels merged); alone here.
        backbone.save_lora_weights(str(folder / ADAPTERS_FILE))
    meta = {
        "task": config.task,
        "inputs": {"kind": pieces.inputs.kind, **pieces.inputs.save(folder)},
        "features": [{"column": f.column, "state": f.get_state()} for f in pieces.inputs.fields],
        "targets": [{"column": f.column, "state": f.get_state()} for f in pieces.targets],
        "config": resolved,
    }
    write_json_atomic(folder / BUNDLE_FILE, meta)
    return folder


def save_backbone_preset(model: keras.Model, inputs: Any, folder: Path) -> Path | None:
    """Export the trained keras-hub backbone (with its tokenizer) as a preset folder.

    Another project fine-tunes it with `model.backbone: RUN_DIR`; keras-hub
    loads it with `Backbone.from_preset(folder)` (and a decoder run with
    `CausalLM.from_preset(folder)`). Models without a keras-hub backbone
    (tabular, image) have no preset.
    """
    import shutil

    import keras_hub

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if isinstance(model, keras_hub.models.Task):
        model.save_to_preset(str(tmp))
    else:
        backbone = keras_hub_backbone(model)
        if backbone is None:
            return None
        backbone.save_to_preset(str(tmp))
        inputs.preprocessor().save_to_preset(str(tmp))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


# ---------------------------------------------------------------- metrics


def outputs_and_targets(model: keras.Model, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Run the model over a batched (x, y) dataset once, keeping targets aligned.

    Through `model.predict`, which splits batches across a distribution strategy's
    replicas (`predict_on_batch` would give each replica the whole batch).
    """
    outputs = model.predict(dataset.map(lambda x, y: x), verbose=0)
    targets = np.concatenate([y.numpy() for _, y in dataset])
    return np.asarray(outputs), targets


def split_metrics(
    model: keras.Model, task: Any, dataset: tf.data.Dataset, run_dir: Path | None, split: str
) -> dict[str, float]:
    with preprocessing_detached(model):
        direct = task.evaluate_model(model, dataset)
    if direct is not None:
        return {k: float(v) for k, v in direct.items()}
    outputs, targets = outputs_and_targets(model, dataset)
    loss_fn = keras.losses.get(task.loss()) if isinstance(task.loss(), str) else task.loss()
    metrics = {"loss": float(loss_fn(targets, outputs))}
    metrics.update({k: float(v) for k, v in task.evaluate(targets, outputs).items()})
    metrics["examples"] = int(len(targets))
    if run_dir is not None:
        task.write_reports(run_dir, split, targets, outputs)
    return metrics


def final_metrics(model: keras.Model, pieces: Pieces, datasets: dict, run_dir: Path) -> dict[str, dict[str, float]]:
    results = {}
    for split in ("validation", "test"):
        if split in datasets:
            results[split] = split_metrics(model, pieces.task, datasets[split], run_dir, split)
    if not results:
        results["train"] = split_metrics(model, pieces.task, datasets["train"], run_dir, "train")
    return results


def write_outputs(run_dir: Path, metrics: dict[str, Any]) -> None:
    write_json_atomic(run_dir / "metrics.json", metrics)
    plot_curves(read_history(run_dir / "history.jsonl"), run_dir / "curves.png")
    for split, values in metrics.items():
        shown = ", ".join(f"{k}={v:.4g}" for k, v in values.items() if isinstance(v, float))
        say(f"kit: {split}: {shown}")
    say(f"kit: metrics in {run_dir / 'metrics.json'}")
