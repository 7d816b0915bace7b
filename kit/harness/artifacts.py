"""What a finished run saves: model.keras, kit_model.json, the backbone preset, LoRA adapters."""

from __future__ import annotations

import contextlib
import zipfile
from pathlib import Path
from typing import Any, Iterator

import keras
from keras.src.saving import saving_lib

from kit.assembly import Pieces
from kit.config import Config
from kit.rundir import RunDir, write_json_atomic
from kit.scratch import remove, scratch_beside, written_atomically

BUNDLE_FORMAT = 2  # of kit_model.json: 2 names the input kind and the backbone family


def model_for_file(model: keras.Model) -> keras.Model:
    """The model model.keras holds: the trained model itself when it is a plain functional or sequential
    model without LoRA adapters (the models of kit's own tasks), else an uncompiled copy.

    The copy (built from the config: about 0.5 s and a second set of weights for MiniLM) merges LoRA adapters
    into the kernels, as Keras's own saving of LoRA layers describes them, and gives a model class that
    compiles itself when built (keras-hub's tasks) the fresh optimizer Keras writes for it.
    """
    from keras.src.models.functional import Functional

    from kit.harness.resume import lora_variables

    plain = type(model) in (Functional, keras.Sequential) and not lora_variables(model)
    return model if plain else without_optimizer(model)


def without_optimizer(model: keras.Model) -> keras.Model:
    """An uncompiled copy with the same weights (LoRA adapters merged into the kernels).

    Adam's two moments would triple the file; resuming reads backup/, not model.keras.
    """
    from kit.harness.resume import load_weights_image, lora_variables, weights_image

    # Not keras.models.clone_model: since Keras 3.x it compiles the copy with the same optimizer.
    copy = type(model).from_config(model.get_config())
    pairs = list(zip(copy.weights, model.weights))
    if lora_variables(model) or len(copy.weights) != len(model.weights) or any(a.shape != b.shape for a, b in pairs):
        # Through a weights file (in memory): Keras writes LoRA layers with the adapters merged into their
        # kernels, which is exactly what the plain (LoRA-free) copy holds.
        load_weights_image(copy, weights_image(model, with_optimizer=False))
    else:
        # Variable to variable: no image of the weights in memory (MiniLM: 90 MB, half a second).
        for target, source in pairs:
            target.assign(source)
    return copy


def save_model(model: keras.Model, built: Any, pieces: Pieces, config: Config, resolved: dict, run: RunDir) -> None:
    """Write the trained model and what is needed to use it: model.keras, kit_model.json, the preset."""
    folder = run.model_dir
    folder.mkdir(parents=True, exist_ok=True)
    plain = model_for_file(model)
    saved = pieces.task.model_to_save(plain, pieces.backbone)
    write_model_file(saved, run.model_file, trained=saved is model)
    save_preset(pieces.backbone, built, run)
    if config.model.lora_rank is not None and built.backbone is not None:
        # Merged into model.keras and the preset already (Keras saves LoRA kernels merged); alone here.
        built.backbone.save_lora_weights(str(run.adapters_file))
    write_json_atomic(run.bundle_file, bundle(pieces, folder, resolved))


def write_model_file(model: keras.Model, path: Path, trained: bool = False) -> None:
    """`model.save(path)`: Keras's `.keras` file (a zip of metadata.json, config.json, model.weights.h5 and
    assets/), which `keras.saving.load_model` reads, written through a temporary name.

    `trained`: `model` is the compiled model training used, written as Keras writes the same model uncompiled
    (its compile settings are not even serialised, and its optimizer's state is left out: resuming reads
    backup/, and Adam's two moments would triple the file). Its weights file is written as kit writes
    checkpoints (`kit.harness.resume.write_weights`: into disk space reserved first, each variable's own
    buffer handed to HDF5) and then copied into the zip from disk, so the disk briefly holds it twice.
    Keras's `save` builds that file in memory, copying each variable twice as it goes: MiniLM's model.keras
    took 90 MB more memory while it was written, at the end of a run, where its memory peaks. A process
    killed meanwhile leaves hidden temporary files (`kit.scratch`), which the next write beside `path` removes.
    """
    from kit.harness.resume import write_weights

    weights = scratch_beside(path.with_name(path.name + ".weights.h5"))
    try:
        with _described_uncompiled(model) if trained else contextlib.nullcontext():
            config_json, metadata_json = saving_lib._serialize_model_as_json(model)
        write_weights(weights, model, with_optimizer=not trained)
        with written_atomically(path) as scratch, zipfile.ZipFile(scratch, "w") as archive:
            archive.writestr(saving_lib._METADATA_FILENAME, metadata_json)
            archive.writestr(saving_lib._CONFIG_FILENAME, config_json)
            archive.write(weights, saving_lib._VARS_FNAME_H5)
            assets = saving_lib.DiskIOStore(saving_lib._ASSETS_DIRNAME, archive=archive, mode="w")
            try:
                optimizer = getattr(model, "optimizer", None)
                skipped = {id(optimizer)} if trained and optimizer is not None else set()
                saving_lib._save_state(model, weights_store=None, assets_store=assets, inner_path="",
                                       visited_saveables=skipped)  # fmt: skip
            finally:
                assets.close()
    finally:
        weights.unlink(missing_ok=True)


@contextlib.contextmanager
def _described_uncompiled(model: keras.Model) -> Iterator[None]:
    """Within the block, `model.get_compile_config()` answers as for an uncompiled model (`{}`), so its
    optimizer, schedule, loss and metrics are not serialised (a plugin's loss without a config cannot fail
    the save)."""
    object.__setattr__(model, "get_compile_config", dict)
    try:
        yield
    finally:
        object.__delattr__(model, "get_compile_config")


def save_preset(backbone: Any, built: Any, run: RunDir) -> None:
    """The trained keras-hub backbone (with its preprocessor) as a preset another project fine-tunes."""
    from kit.harness.resume import lean_weights_files

    tmp = scratch_beside(run.preset_dir)
    try:
        with lean_weights_files():  # keras-hub writes the weights with Keras's save_weights
            saved = backbone.save_preset(built, tmp)
        if saved:
            _swap_in(tmp, run.preset_dir)
    finally:
        remove(tmp)  # gone after the swap; a failed save leaves nothing behind


def _swap_in(folder: Path, destination: Path) -> None:
    """Rename `folder` to `destination`; an earlier `destination` is moved aside first and removed only after."""
    old = scratch_beside(destination, marker=".kit-old-")
    if destination.exists() or destination.is_symlink():
        destination.rename(old)
    try:
        folder.rename(destination)
    except OSError:
        if old.exists() or old.is_symlink():
            old.rename(destination)  # the earlier preset back where it was
        raise
    remove(old)


def bundle(pieces: Pieces, folder: Any, resolved: dict) -> dict[str, Any]:
    """kit_model.json: what restores the task, the input kind and the backbone family for inference."""
    backbone = pieces.backbone
    return {
        "format": BUNDLE_FORMAT,
        "task": {"name": pieces.task.name, "plugin": pieces.plugin},
        "inputs": {"kind": pieces.kind.name, **pieces.kind.save()},
        "backbone": {
            "family": backbone.name,
            "plugin": pieces.backbone_plugin,
            "reference": str(backbone.reference),
            "form": backbone.reference.form,
            "name": backbone.reference.name,
            **backbone.save(folder),
        },
        "features": [{"column": f.column, "state": f.get_state()} for f in pieces.kind.fields],
        "targets": [{"column": f.column, "state": f.get_state()} for f in pieces.targets],
        "config": resolved,
    }
