"""Exact resume: the training state kit saves while training, and restores when a run starts again.

A state is everything an uninterrupted run would carry forward: the model's
weights and the optimizer's slots and step count (one Keras `.weights.h5`),
the random-number state of every dropout (Keras keeps it in seed-generator
variables that weights files leave out), the variables of LoRA layers as
they are (a weights file holds their kernels with the adapters merged in),
the running means of the epoch's training metrics (so a resumed epoch logs
what it would have), the global step, which fixes the data position (see
`kit.data.pipeline.training_stream`) and the learning-rate schedule's
position, and the state of every callback that has one: early stopping's best value, wait count and best weights, the best
checkpoint's best value, and what plugin callbacks return from `get_state()`
(see `kit.harness.callbacks.callback_state`). Callback states are JSON
(`callbacks.json`); their arrays, such as early stopping's best weights, go
into `callbacks.h5`, except weights equal to the model's own, which are
recorded as such rather than written twice.

The state saved when training is over (the last epoch's end, or early
stopping) holds the weights without the optimizer's slots: nothing trains
from it again (a run resumes only with the same config, and a final state
ends training whatever its step), it only lets a run killed while saving or
evaluating finish without training again. Ending training then builds no
image of Adam's slots in memory and writes none (MiniLM: 180 MB).

States are written atomically: into a hidden temporary folder, flushed, then
renamed to `backup/step-000001234/`. The newest `keep` are kept. A state that
fails to load (a truncated file, a missing part, one saved by a different
model) is reported, set aside as `damaged-step-...`, and the previous one is
used.

HDF5 is never the one to meet a full disk. Writing straight to a file, a
failed write surfaces only when h5py closes a dataset (an "Exception ignored"
traceback per object), HDF5 carries on with a half-flushed cache, and the
process dies with a segfault (exit 139). So a weights file's space is reserved
first (`posix_fallocate` of what a dry run of Keras's writer counts, with room
for HDF5's bookkeeping), where a full disk or a quota is an ordinary `OSError`
and the CLI says "the disk is full"; HDF5 then writes into the reserved
blocks, and the file is cut to its size. Where a file system cannot reserve
space (or, as ZFS, only checks free space when asked), the file is built in
memory (`weights_image`) and written out by Python, at the cost of its bytes
in memory while it is written (a MiniLM training state with Adam's slots:
260 MB). Small files (`callbacks.h5`) are always built in memory.

kit replaces Keras's `BackupAndRestore` with this because that callback
restarts an interrupted epoch from its first batch with mid-epoch weights, does
not save dropout's random state or callbacks' state, and writes its file in place.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import keras
import numpy as np
import tensorflow as tf
from keras.src.saving import saving_lib

from kit.compat import fix_keras_saving
from kit.console import say
from kit.errors import Interrupted
from kit.scratch import written_atomically

STATE_PREFIX = "step-"
DAMAGED_PREFIX = "damaged-"
WEIGHTS = "state.weights.h5"
RANDOM = "random.npz"
METRICS = "metrics.npz"
LORA = "lora.npz"
META = "state.json"
CALLBACKS = "callbacks.json"
CALLBACK_ARRAYS = "callbacks.h5"
ARRAY = "__array__"  # a JSON placeholder for an array stored in callbacks.h5
MODEL_WEIGHTS = "__model_weights__"  # a JSON placeholder for weights equal to the model's own


@dataclass
class Restored:
    """What a saved state gave back: the global step, callback states, and whether training had ended."""

    step: int = 0
    callbacks: dict[str, Any] = field(default_factory=dict)
    stopped: bool = False  # early stopping (or a callback) ended training at this state
    metrics: list[np.ndarray] | None = None  # the running means of a cut-short epoch's training metrics
    final: bool = False  # saved when training ended, without the optimizer's slots: nothing trains from it


def seed_states(model: keras.Model) -> list[Any]:
    """The state variables of the model's seed generators (dropout's random streams), in a fixed order."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def lora_variables(model: keras.Model) -> list[Any]:
    """The variables of the model's LoRA layers, in a fixed order: a weights file cannot carry them exactly.

    Keras writes a LoRA layer's kernel with its adapters merged in and, loading it, sets the adapters to
    zero, where their gradients stay: a run resumed from such a file would never train its adapters again.
    """
    return [v for layer in model._flatten_layers() if getattr(layer, "lora_enabled", False) for v in layer.variables]


def metric_variables(model: keras.Model) -> list[Any]:
    """The variables of the model's metrics (the loss tracker's total and count...): mid-epoch, they hold the
    running means that Keras logs at every step and at the epoch's end."""
    return [v for metric in model.metrics for v in metric.variables]


def global_step(model: keras.Model) -> int:
    return int(model.optimizer.iterations.numpy())


def model_signature(model: keras.Model) -> str:
    """A short hash of the model's weight shapes and types: states of another model do not match it."""
    shapes = ";".join(f"{tuple(w.shape)}:{w.dtype}" for w in model.weights)
    return hashlib.sha256(shapes.encode()).hexdigest()[:16]


def saved_states(folder: Path) -> list[Path]:
    """Complete states in `folder`, newest first (temporary folders of interrupted writes are ignored)."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.name.startswith(STATE_PREFIX)), reverse=True)


# ------------------------------------------------------------------ saving


def save_state(
    model: keras.Model,
    folder: Path,
    epoch: int,
    keep: int = 2,
    callbacks: dict[str, Any] | None = None,
    stopped: bool = False,
    final: bool = False,
) -> Path:
    """Write the training state at the model's current step; return its folder.

    `callbacks` maps each stateful callback's key to its state (JSON values and NumPy arrays).
    `final`: training is over, so the optimizer's slots are left out (see the module doc).
    `folder` is created, but not its parent: a run folder deleted meanwhile is not brought back.
    """
    folder.mkdir(exist_ok=True)
    step = global_step(model)
    target = folder / f"{STATE_PREFIX}{step:09d}"
    scratch = Path(tempfile.mkdtemp(prefix=".writing-", dir=folder))
    try:
        meta = {"step": step, "epoch": epoch, "stopped": stopped, "final": final}
        _write_state(model, scratch, meta, callbacks or {})
        if target.exists():  # the same step saved twice (an epoch end that is also a step save)
            shutil.rmtree(target)
        scratch.rename(target)
        _fsync_folder(folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for old in saved_states(folder)[max(keep, 1) :]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _write_state(model: keras.Model, scratch: Path, meta: dict[str, Any], callbacks: dict[str, Any]) -> None:
    # Written, not linked to this step's checkpoint: a plugin callback may have changed the weights since.
    write_weights(scratch / WEIGHTS, model, with_optimizer=not meta["final"])
    np.savez(scratch / RANDOM, *[np.asarray(v.numpy()) for v in seed_states(model)])
    lora = lora_variables(model)
    if lora:
        np.savez(scratch / LORA, *[np.asarray(v.numpy()) for v in lora])
    np.savez(scratch / METRICS, *[np.asarray(v.numpy()) for v in metric_variables(model)])
    arrays: dict[str, np.ndarray] = {}
    encoded = _encode(callbacks, arrays, _lazy(model.get_weights))
    if arrays:
        _write(scratch / CALLBACK_ARRAYS, _arrays_image(arrays))
    (scratch / CALLBACKS).write_text(json.dumps(encoded), encoding="utf-8")
    (scratch / META).write_text(json.dumps({**meta, "model": model_signature(model)}), encoding="utf-8")
    for path in scratch.iterdir():
        _fsync(path)


def _lazy(compute: Callable[[], Any]) -> Callable[[], Any]:
    """`compute()` at most once, when first asked for."""
    cache: list[Any] = []
    return lambda: cache[0] if cache else (cache.append(compute()) or cache[0])


def _encode(value: Any, arrays: dict[str, np.ndarray], model_weights: Callable[[], list]) -> Any:
    """JSON for a callback state; arrays go to `arrays` (by key), weights equal to the model's become a marker."""
    if isinstance(value, dict):
        return {str(k): _encode(v, arrays, model_weights) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, np.ndarray) for v in value) and _same_arrays(value, model_weights()):
            return {MODEL_WEIGHTS: True}
        return [_encode(v, arrays, model_weights) for v in value]
    if isinstance(value, np.ndarray):
        key = str(len(arrays))
        arrays[key] = value
        return {ARRAY: key}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _same_arrays(left: list, right: list) -> bool:
    return len(left) == len(right) and all(
        a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(left, right)
    )


def _arrays_image(arrays: dict[str, np.ndarray]) -> io.BytesIO:
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        for key, array in arrays.items():
            handle.create_dataset(key, data=array)
    return buffer


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (a power cut after it keeps the new name)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass  # some file systems cannot sync a folder; the rename itself is still atomic
    finally:
        os.close(handle)


def weights_image(model: keras.Model, with_optimizer: bool = True) -> io.BytesIO:
    """The model's `.weights.h5` file, built in memory (see the module doc): its weights, and the optimizer's
    state unless `with_optimizer` is False (checkpoints: Adam's two slots per weight would triple them).

    Through Keras's own writer: the same file `model.save_weights` makes, which `model.load_weights` reads.
    """
    buffer = io.BytesIO()
    _save_weights_into(buffer, model, with_optimizer)
    return buffer


def _save_weights_into(buffer: io.BytesIO, model: keras.Model, with_optimizer: bool) -> None:
    store = saving_lib.H5IOStore(buffer, mode="w")
    try:
        with lean_weights_files():
            _keras_save(model, store, with_optimizer)
    finally:
        store.close()


def _keras_save(model: keras.Model, store: Any, with_optimizer: bool) -> None:
    """Keras's writer of a weights file, into `store`: the model's weights, and its optimizer's state
    unless `with_optimizer` is False."""
    optimizer = getattr(model, "optimizer", None)
    skipped = {id(optimizer)} if optimizer is not None and not with_optimizer else set()
    saving_lib._save_state(model, weights_store=store, assets_store=None, inner_path="", visited_saveables=skipped)


def write_weights(path: Path, model: keras.Model, with_optimizer: bool = True) -> None:
    """The model's `.weights.h5` file (as `weights_image`) written to `path` and flushed to disk, HDF5 writing
    into space reserved beforehand (see the module doc); built in memory where space cannot be reserved."""
    if _can_reserve(path):
        with open(path, "w+b") as handle:
            bound = _size_bound(model, with_optimizer)
            if _reserve(handle, path, bound):
                reserved = _ReservedFile(handle, bound)
                _save_weights_into(reserved, model, with_optimizer)
                handle.truncate(reserved.end)
                handle.flush()
                os.fsync(handle.fileno())
                return
    _write(path, weights_image(model, with_optimizer))


def _size_bound(model: keras.Model, with_optimizer: bool) -> int:
    """More bytes than the weights file can take: what Keras writes, counted by a dry run of its writer
    (shared variables once per layer that saves them, layers without variables as the groups Keras makes
    for them), plus 16 KB of HDF5's bookkeeping for each group and array (it takes under 2 KB) and 64 KB.

    Kept per model while its variables stay the same ones, of the same shapes: the dry run walks every
    object Keras saves (a MiniLM classifier's 28-31 ms, twice an epoch), and a run's files keep one layout.
    A file that outgrows its bound still gets the space (`_ReservedFile.write`)."""
    layout = _variables_layout(model, with_optimizer)
    kept = _SIZE_BOUNDS.get(model, {}).get(with_optimizer)
    if kept is not None and kept[0] == layout:
        return kept[1]
    count = _SizeCount()
    _keras_save(model, count, with_optimizer)
    bound = count.bytes + 16384 * count.entries + 65536
    _SIZE_BOUNDS.setdefault(model, {})[with_optimizer] = (layout, bound)
    return bound


# Per model (dropped with it): {with_optimizer: (its variables' layout, the bound counted for it)}.
_SIZE_BOUNDS: weakref.WeakKeyDictionary[Any, dict[bool, tuple[tuple, int]]] = weakref.WeakKeyDictionary()


def _variables_layout(model: keras.Model, with_optimizer: bool) -> tuple:
    """Which variables a weights file of `model` holds, with their shapes and dtypes."""
    optimizer = getattr(model, "optimizer", None)
    variables = list(model.weights)
    if with_optimizer and optimizer is not None:
        variables += list(optimizer.variables)
    return tuple((id(v), tuple(v.shape), str(v.dtype)) for v in variables)


# Whether weights files written in this thread (or task) hand HDF5 each variable's own buffer: see below.
_LEAN_WRITES: contextvars.ContextVar[bool] = contextvars.ContextVar("kit_lean_weights_files", default=False)
_keras_setitem = getattr(saving_lib.H5IOStore.__setitem__, "__wrapped__", saving_lib.H5IOStore.__setitem__)


@contextlib.contextmanager
def lean_weights_files() -> Iterator[None]:
    """Within the block, weights files Keras writes in this thread (`save_weights`, keras-hub's
    `save_to_preset`, kit's own) hand HDF5 each variable's own buffer instead of two copies of it.

    Keras's HDF5 store converts a variable with `np.array`: the variable's value as numpy, then a copy of
    that (MiniLM's 47 MB embedding: 94 MB more memory while a checkpoint was written). A TensorFlow tensor
    read from a variable shares the variable's buffer (and keeps it if the variable changes meanwhile), and
    numpy views it without copying. Keras's store class stays what it is (its type checks see no other);
    its `__setitem__` takes the view only within such a block, and writes what Keras writes. Sharded files
    (keras-hub shards backbones over 10 GB) go through Keras's sharded store, with its copies.
    """
    token = _LEAN_WRITES.set(True)
    try:
        yield
    finally:
        _LEAN_WRITES.reset(token)


def _lean_setitem(self: Any, key: str, value: Any) -> None:
    array = _shared_array(value) if _LEAN_WRITES.get() and self.mode == "w" else None
    if array is None:  # outside a block, and strings or other values: Keras's way
        _keras_setitem(self, key, value)
        return
    if not self._h5_entry_initialized:
        self._create_h5_group(self._h5_entry_path)
    if array.dtype.name == "bfloat16":  # marked as Keras marks it: HDF5 has no bfloat16
        self._h5_entry_group.create_dataset(key, data=array).attrs["dtype"] = "bfloat16"
    else:
        self._h5_entry_group[key] = array


# Outside a `lean_weights_files` block (every thread but the one in it) Keras's own method runs unchanged.
_lean_setitem.__wrapped__ = _keras_setitem  # type: ignore[attr-defined]
saving_lib.H5IOStore.__setitem__ = _lean_setitem
fix_keras_saving()  # every weights file kit writes or reads is walked by Keras's saving (kit.compat)


def _shared_array(value: Any) -> np.ndarray | None:
    """A numpy view of a numeric variable's or dense tensor's values (no copy), a numeric numpy array or
    scalar as an array, or None (strings, sparse and ragged tensors, other values)."""
    if not isinstance(value, (np.ndarray, np.generic, keras.Variable, tf.Variable, tf.Tensor)):
        return None
    try:
        dtype = tf.as_dtype(value.dtype)
    except (TypeError, ValueError):  # a dtype TensorFlow has no name for
        return None
    if not (dtype.is_floating or dtype.is_integer or dtype.is_bool):
        return None
    if isinstance(value, (np.ndarray, np.generic)):  # an optimizer's step count and learning rate: scalars
        return np.asarray(value)
    return np.asarray(tf.convert_to_tensor(value))


class _SizeCount(saving_lib.H5IOStore):
    """Keras's HDF5 writer's interface, counting what it would write and writing nothing."""

    def __init__(self) -> None:  # no file opened
        self.mode = "w"
        self.bytes = 0
        self.entries = 0

    def make(self, path: str, metadata: dict | None = None) -> _SizeCount:
        self.entries += 1
        return self

    def __setitem__(self, key: str, value: Any) -> None:
        self.entries += 1
        self.bytes += _nbytes(value)

    def __bool__(self) -> bool:  # Keras asks whether the store is open
        return True

    def close(self) -> None:
        pass


def _nbytes(value: Any) -> int:
    """Bytes HDF5 stores for one array: its values, or for text the strings and 16 bytes each."""
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is not None and dtype is not None and "string" not in str(dtype):
        try:  # numpy's, TensorFlow's (a merged LoRA kernel is a tensor) and Keras's names alike, bfloat16 too
            itemsize = tf.as_dtype(dtype).size
        except TypeError:  # a dtype TensorFlow does not name: no wider than 8 bytes
            itemsize = 8
        return int(np.prod(tuple(shape))) * itemsize
    array = np.asarray(value)
    if array.dtype.kind in "OSU":
        return sum(len(str(item).encode()) + 16 for item in array.ravel()) + 16
    return int(array.nbytes)


def _can_reserve(path: Path) -> bool:
    """Whether space reserved for `path` holds: `posix_fallocate` exists and the file system is not copy-on-write."""
    return hasattr(os, "posix_fallocate") and _file_system(path) not in COPY_ON_WRITE


def _reserve(handle: Any, path: Path, size: int) -> bool:
    """Reserve `size` bytes on disk for the open file `handle`; False where the file system cannot."""
    try:
        os.posix_fallocate(handle.fileno(), 0, size)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS, errno.ENODEV, errno.ESPIPE):
            return False
        raise OSError(exc.errno, exc.strerror, str(path)) from None  # a full disk or quota: said with the file
    return True


# File systems where posix_fallocate succeeds without promising later writes room (ZFS only checks free space).
COPY_ON_WRITE = {"zfs"}


def _file_system(path: Path) -> str | None:
    """The type of the file system holding `path` (Linux's mount table), or None where it cannot be read."""
    try:
        mounts = Path("/proc/self/mountinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    folder, best, kind = str(Path(path).resolve().parent), "", None
    for line in mounts:
        fields = line.split(" - ")
        if len(fields) < 2 or len(fields[0].split()) < 5 or not fields[1].split():
            continue
        mount = fields[0].split()[4].replace("\\040", " ")
        inside = folder == mount or folder.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, fields[1].split()[0]
    return kind


class _ReservedFile(io.BytesIO):
    """A disk file handed to Keras's HDF5 writer, which takes paths and `io.BytesIO` objects only.

    Every call goes to the file; its end is where HDF5 has written up to, not the reserved size, so HDF5
    creates its file as in an empty one.
    """

    def __init__(self, handle: Any, reserved: int):
        super().__init__()
        self.handle = handle
        self.reserved = reserved
        self.end = 0

    def write(self, data: Any) -> int:
        end = self.handle.tell() + memoryview(data).nbytes
        if end > self.reserved:  # not expected (see `_size_bound`): claim the space before HDF5's bytes go out
            os.posix_fallocate(self.handle.fileno(), 0, end + (1 << 20))
            self.reserved = end + (1 << 20)
        written = self.handle.write(data)
        self.end = max(self.end, self.handle.tell())
        return written

    def read(self, size: int | None = -1) -> bytes:
        left = max(0, self.end - self.handle.tell())
        return self.handle.read(left if size is None or size < 0 else min(size, left))

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            return self.handle.seek(self.end + offset)
        return self.handle.seek(offset, whence)

    def tell(self) -> int:
        return self.handle.tell()

    def truncate(self, size: int | None = None) -> int:
        self.end = self.handle.tell() if size is None else size
        return self.handle.truncate(self.end)

    def flush(self) -> None:
        self.handle.flush()


def load_weights_image(model: keras.Model, buffer: io.BytesIO | Path) -> None:
    """Load a `weights_image` (or a weights file) into `model` (its optimizer, if any, is left as it is)."""
    optimizer = getattr(model, "optimizer", None)
    store = saving_lib.H5IOStore(buffer, mode="r")
    failed: set = set()
    errors: dict = {}
    try:
        saving_lib._load_state(model, weights_store=store, assets_store=None, inner_path="",
                               visited_saveables={id(optimizer)} if optimizer is not None else set(),
                               failed_saveables=failed, error_msgs=errors)  # fmt: skip
    finally:
        store.close()
    if failed:
        saving_lib._raise_loading_failure(errors)


# The last weights file written, by (model, global step): a second file of the same weights at the same step
# (the best checkpoint, when the epoch just saved is the best) is a hard link to it, not a second write.
_last_written: dict[tuple[int, int], Path] = {}


def save_weights_file(model: keras.Model, path: Path) -> None:
    """The model's weights (not the optimizer's state) as a `.weights.h5` file, safe from a kill (a temporary
    name, renamed) and a full disk (see above); `model.load_weights` reads it.

    Weights already written at this step (MiniLM: 90 MB) are linked rather than written again.
    """
    path = Path(path)
    key = (id(model), global_step(model) if getattr(model, "optimizer", None) is not None else -1)
    earlier = _last_written.get(key)
    if earlier is not None and earlier != path and earlier.is_file() and _link_atomically(earlier, path):
        return
    with written_atomically(path) as scratch:  # a full disk or a signal leaves no partial file behind
        write_weights(scratch, model, with_optimizer=False)
    _last_written.clear()  # one entry: only the newest weights are ever linked
    _last_written[key] = path


def _link_atomically(source: Path, path: Path) -> bool:
    """Hard-link `source` as `path` (through a temporary name); False where links are not possible."""
    try:
        with written_atomically(path) as scratch:
            os.link(source, scratch)
    except OSError:  # another file system, or one without hard links: write the file instead
        return False
    return True


def _write(path: Path, buffer: io.BytesIO) -> None:
    with open(path, "wb") as handle:
        handle.write(buffer.getbuffer())
        handle.flush()
        os.fsync(handle.fileno())


def close_h5_files() -> int:
    """Close HDF5 files still open for writing: a plugin's or keras-hub's write cut short by an error.

    Closed now, they are not flushed when Python finalises them at exit (a
    traceback per object, and on a full disk a crash). Returns how many.
    """
    import h5py

    closed = 0
    for file_id in h5py.h5f.get_obj_ids(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE):
        if not file_id.get_intent() & h5py.h5f.ACC_RDWR:
            continue  # opened for reading: nothing to flush
        kinds = h5py.h5f.OBJ_DATASET | h5py.h5f.OBJ_GROUP | h5py.h5f.OBJ_ATTR
        for item in [*h5py.h5f.get_obj_ids(file_id, kinds), file_id]:
            _release(item)
        closed += 1
    return closed


def _release(item: Any) -> None:
    import h5py

    for _ in range(3):  # a flush that fails once usually lets the second try release it
        if not item.valid:
            return
        try:
            h5py.h5i.dec_ref(item)
        except Exception:  # noqa: BLE001 - the file is being abandoned; its errors are moot
            pass


# ---------------------------------------------------------------- restoring


def restore_state(model: keras.Model, folder: Path) -> Restored:
    """Load the newest state that loads cleanly (the global step 0 when there is none).

    A state that does not load is set aside as `damaged-step-...` (kept, but never tried again), so the
    states saved from here on are the newest; the model is put back as it was before each failed try.
    """
    for leftover in folder.glob(".writing-*") if folder.is_dir() else []:
        shutil.rmtree(leftover, ignore_errors=True)  # a write a kill cut short (the run's lock: no one else writes)
    states = saved_states(folder)
    if not states:
        return Restored()
    fresh = _snapshot(model)
    for state in states:
        try:
            restored = _load(model, state)
        except Exception as exc:  # noqa: BLE001 - any failure means this state is unusable
            _put_back(model, fresh)
            _set_aside(state, exc)
            continue
        say(f"kit: resuming from step {restored.step} ({state.name})")
        return restored
    return Restored()


def _snapshot(model: keras.Model) -> list[tuple[Any, np.ndarray]]:
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    return [(v, np.array(v.numpy())) for v in [*model.variables, *model.optimizer.variables]]


def _put_back(model: keras.Model, snapshot: list[tuple[Any, np.ndarray]]) -> None:
    for variable, value in snapshot:
        variable.assign(value)


def _set_aside(state: Path, exc: Exception) -> None:
    reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
    aside = state.with_name(DAMAGED_PREFIX + state.name)
    try:
        shutil.rmtree(aside, ignore_errors=True)
        state.rename(aside)
        where = f"kept as {aside.name}"
    except OSError:
        where = "left in place"
    say(f"kit: the saved state {state} is damaged ({reason}); {where}, trying an older one.")


def _load(model: keras.Model, state: Path) -> Restored:
    meta = json.loads((state / META).read_text(encoding="utf-8"))
    if meta.get("model") != model_signature(model):
        raise ValueError("it was saved by a different model (its weights differ in number or shape)")
    final = bool(meta.get("final", False))
    if final:
        load_weights_image(model, state / WEIGHTS)  # no slots: nothing trains from here
        model.optimizer.iterations.assign(meta["step"])
    else:
        model.load_weights(str(state / WEIGHTS))
    _load_lora(model, state)
    _load_random_states(model, state)
    if global_step(model) != meta["step"]:
        raise ValueError(f"its optimizer is at step {global_step(model)}, its record says {meta['step']}")
    stopped = bool(meta.get("stopped", False))
    return Restored(int(meta["step"]), _callback_states(model, state), stopped, _arrays(state / METRICS), final)


def _load_lora(model: keras.Model, state: Path) -> None:
    variables = lora_variables(model)
    if not variables:
        return
    if not (state / LORA).exists():
        return  # saved by an earlier kit: LoRA only as Keras writes it (adapters merged), loaded as before
    values = _arrays(state / LORA)
    if len(values) != len(variables):
        raise ValueError(f"it holds {len(values)} LoRA variables, the model has {len(variables)}")
    for variable, value in zip(variables, values):
        variable.assign(value)


def _load_random_states(model: keras.Model, state: Path) -> None:
    values, variables = _arrays(state / RANDOM), seed_states(model)
    if len(values) != len(variables):
        raise ValueError(f"it holds {len(values)} random states, the model has {len(variables)}")
    for variable, value in zip(variables, values):
        variable.assign(value)


def _arrays(path: Path) -> list[np.ndarray]:
    """The arrays of an `.npz` written by `np.savez(path, *arrays)`, in order."""
    with np.load(path) as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


def _callback_states(model: keras.Model, state: Path) -> dict[str, Any]:
    callbacks = json.loads((state / CALLBACKS).read_text(encoding="utf-8"))
    if not isinstance(callbacks, dict):
        raise ValueError(f"{CALLBACKS} holds {type(callbacks).__name__}, not an object")
    return _decode(callbacks, _read_arrays(state / CALLBACK_ARRAYS), _lazy(model.get_weights))


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        return {}
    import h5py

    with h5py.File(path, "r") as handle:
        return {key: handle[key][()] for key in handle}


def _decode(value: Any, arrays: dict[str, np.ndarray], model_weights: Callable[[], list]) -> Any:
    if isinstance(value, dict):
        if value.get(MODEL_WEIGHTS) is True and len(value) == 1:
            return model_weights()
        if set(value) == {ARRAY}:
            return arrays[value[ARRAY]]  # a KeyError: the arrays file lacks it, so the state is damaged
        return {k: _decode(v, arrays, model_weights) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, arrays, model_weights) for v in value]
    return value


# ------------------------------------------------------------------ the callback


class SaveTrainingState(keras.callbacks.Callback):
    """Saves the training state at every epoch end, every `every_steps` steps, and when asked to stop.

    kit puts it last among the run's callbacks, so a state holds every other
    callback's state after its epoch end (`callbacks`, a
    `kit.harness.callbacks.TrainingCallbacks`). `stops` tells it when SIGINT,
    SIGTERM or SIGHUP arrived (`kit.harness.run.Stops`): the next batch end (or
    the end of the epoch being validated) saves the state and raises
    `Interrupted`, so the run resumes from that exact step.
    """

    def __init__(
        self, folder: Path, every_steps: int | None = None, keep: int = 2, stops: Any = None, epochs: int | None = None
    ):
        super().__init__()
        self.folder = Path(folder)
        self.epochs = epochs  # the run's last epoch: its state is final (no optimizer slots)
        self.every_steps = every_steps
        self.keep = keep
        self.stops = stops
        self.callbacks: Any = None
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if not _finite(logs):
            return  # the NaN guard stops the run; the last good state stays the newest
        if batch + 1 == (self.params or {}).get("steps"):
            # The epoch's last step: its state is saved at the epoch's end, after validation and every callback's
            # on_epoch_end. Saved now, a kill before then would resume at the next epoch, skipping this one's end.
            return
        if self.stop_requested:
            self.save(self.epoch)
            self.stop()
        elif self.every_steps and global_step(self.model) % self.every_steps == 0:
            self.save(self.epoch)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if _finite(logs):
            self.save(epoch + 1, final=epoch + 1 == self.epochs or bool(self.model.stop_training))
        if self.stop_requested:
            self.stop()

    @property
    def stop_requested(self) -> str | None:
        return getattr(self.stops, "received", None)

    def save(self, epoch: int, final: bool = False) -> Path:
        states = self.callbacks.states() if self.callbacks is not None else {}
        return save_state(self.model, self.folder, epoch, self.keep, states, bool(self.model.stop_training), final)

    def stop(self) -> None:
        """End training now (not after validating a cut-short epoch): the state is saved."""
        raise Interrupted(
            f"Training stopped by {self.stop_requested} at step {global_step(self.model)}; its state is saved in "
            f"{self.folder}. Run the same command again to continue exactly where it stopped."
        )


def _finite(logs: Any) -> bool:
    loss = (logs or {}).get("loss")
    return loss is None or math.isfinite(float(loss))
