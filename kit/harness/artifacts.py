"""What a finished run saves: model.keras, kit_model.json, the backbone preset, LoRA adapters."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import keras
from keras.src.saving import saving_lib

from kit.assembly import Pieces
from kit.config import Config
from kit.rundir import RunDir, write_json_atomic
from kit.scratch import remove, scratch_beside, written_atomically

BUNDLE_FORMAT = 2  # of kit_model.json: 2 names the input kind and the backbone family


def without_adapters(model: keras.Model) -> keras.Model:
    """The model as model.keras holds it: `model` itself, or, when it trains LoRA adapters, a plain copy.

    The copy (built from the config, 0.6 s and a second set of weights for MiniLM) is what Keras's own saving
    of LoRA layers describes: the adapters merged into the kernels of layers without them.
    """
    from kit.harness.resume import lora_variables

    return without_optimizer(model) if lora_variables(model) else model


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
    saved = pieces.task.model_to_save(without_adapters(model), pieces.backbone)
    write_model_file(saved, run.model_file)
    save_preset(pieces.backbone, built, run)
    if config.model.lora_rank is not None and built.backbone is not None:
        # Merged into model.keras and the preset already (Keras saves LoRA kernels merged); alone here.
        built.backbone.save_lora_weights(str(run.adapters_file))
    write_json_atomic(run.bundle_file, bundle(pieces, folder, resolved))


def write_model_file(model: keras.Model, path: Path) -> None:
    """`model.save(path)`: Keras's `.keras` file (a zip of metadata.json, config.json, model.weights.h5 and
    assets/), which `keras.saving.load_model` reads, written through a temporary name.

    The file describes an uncompiled model, as Keras saves one (a `compile_config` of `{}`, no optimizer state):
    resuming reads backup/, and Adam's two moments would triple the file. Its weights file is written as kit writes
    checkpoints (`kit.harness.resume.write_weights`: into disk space reserved first, each variable's own
    buffer handed to HDF5) and then copied into the zip from disk, so the disk briefly holds it twice.
    Keras's `save` builds that file in memory, copying each variable twice as it goes: MiniLM's model.keras
    took 90 MB more memory while it was written, at the end of a run, where its memory peaks. A process
    killed meanwhile leaves hidden temporary files (`kit.scratch`), which the next write beside `path` removes.
    """
    from kit.harness.resume import write_weights

    weights = scratch_beside(path.with_name(path.name + ".weights.h5"))
    try:
        config_json, metadata_json = saving_lib._serialize_model_as_json(model)
        config_json = _as_uncompiled(config_json)
        write_weights(weights, model, with_optimizer=False)
        with written_atomically(path) as scratch, zipfile.ZipFile(scratch, "w") as archive:
            archive.writestr(saving_lib._METADATA_FILENAME, metadata_json)
            archive.writestr(saving_lib._CONFIG_FILENAME, config_json)
            archive.write(weights, saving_lib._VARS_FNAME_H5)
            assets = saving_lib.DiskIOStore(saving_lib._ASSETS_DIRNAME, archive=archive, mode="w")
            try:
                optimizer = getattr(model, "optimizer", None)
                saving_lib._save_state(model, weights_store=None, assets_store=assets, inner_path="",
                                       visited_saveables={id(optimizer)} if optimizer is not None else set())  # fmt: skip
            finally:
                assets.close()
    finally:
        weights.unlink(missing_ok=True)


def _as_uncompiled(config_json: str) -> str:
    """A compiled model's config as Keras writes the same model uncompiled: nothing to compile on loading."""
    config = json.loads(config_json)
    config["compile_config"] = {}
    return json.dumps(config)


def save_preset(backbone: Any, built: Any, run: RunDir) -> None:
    """The trained keras-hub backbone (with its preprocessor) as a preset another project fine-tunes."""
    from kit.harness.resume import lean_weights_files

    tmp = scratch_beside(run.preset_dir)
    try:
        with lean_weights_files():  # keras-hub writes the weights with Keras's save_weights
            saved = backbone.save_preset(built, tmp)
        if saved:
            shutil.rmtree(run.preset_dir, ignore_errors=True)
            tmp.rename(run.preset_dir)
    finally:
        remove(tmp)  # gone after the rename; a failed save leaves nothing behind


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
