"""Catalogue: faults during `kit run` - run folders in use or damaged, plugin code misbehaving while training.

Faults that need real processes and signals (kill -9, SIGTERM, two runs at
once, a full disk) are in tests/harness/test_resume.py.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
from pathlib import Path

from tests.catalogue import case, tabular_project

HELD = []  # locks held "by another kit run" while a case runs


def plugin_project(root: Path, source: str) -> Path:
    folder = tabular_project(root, "plugins: [local_plugin.py]\n")
    (folder / "local_plugin.py").write_text("import sys\n\nimport keras\n\nimport kit\n\n" + source)
    return folder


def callback_plugin(root: Path, body: str, name: str = "Boom") -> Path:
    """A project whose plugin registers one callback class with `body` as its methods."""
    source = (
        f"class {name}(keras.callbacks.Callback):\n{body}\n\n"
        f"@kit.hookimpl\ndef register_callbacks(register, run):\n    register({name}())\n"
    )
    return plugin_project(root, source)


def unfinished_run(root: Path, project: Path, config: str | None = None, record: dict | None = None) -> Path:
    """A run folder as a killed `kit run` of `project` leaves it (its resolved config unless `config`)."""
    from kit.config import dump_yaml, load_config, resolved_dict

    run_dir = root / "runs" / "run-1"
    run_dir.mkdir(parents=True)
    text = config if config is not None else dump_yaml(resolved_dict(load_config(project)))
    (run_dir / "config.yaml").write_text(text)
    (run_dir / "run.json").write_text(json.dumps(record or {"status": "running"}))
    return run_dir


# ------------------------------------------------------------- run folders


@case("training", "is a file, not a folder")
def run_dir_is_a_file(root, mp):
    """`--run-dir` naming a file (`--run-dir /etc/hostname`)"""
    (root / "hostname").write_text("box\n")
    return ["run", str(tabular_project(root)), "--run-dir", str(root / "hostname")]


@case("training", "is a special file (a pipe, a socket or a device), not a folder")
def run_dir_is_a_pipe(root, mp):
    """`--run-dir` naming a named pipe"""
    os.mkfifo(root / "pipe")
    return ["run", str(tabular_project(root)), "--run-dir", str(root / "pipe")]


@case("training", "is being written by another kit run (pid")
def run_dir_in_use(root, mp):
    """`--run-dir` at an unfinished run that another `kit run` is training right now"""
    from kit.harness.rundir import RunLock

    folder = tabular_project(root)
    run_dir = unfinished_run(root, folder)
    lock = RunLock(run_dir)
    assert lock.acquire()
    HELD.append(lock)  # held for the rest of the session, as the other process would
    return ["run", str(folder), "--run-dir", str(run_dir)]


@case("training", "holds an unfinished run whose data changed since it started (data.train)")
def run_dir_on_changed_data(root, mp):
    """`--run-dir` at an unfinished run whose data file was edited since it was killed"""
    folder = tabular_project(root)
    record = {"status": "running", "data": {"fingerprint": {"train": "0123456789abcdef"}}}
    return ["run", str(folder), "--run-dir", str(unfinished_run(root, folder, record=record))]


@case("training", "holds an unfinished run of a different config (changed: train.epochs)")
def run_dir_of_another_config(root, mp):
    """`--run-dir` at an unfinished run after changing `kit.yaml`"""
    from kit.config import dump_yaml, load_config, resolved_dict

    folder = tabular_project(root)
    config = dump_yaml(resolved_dict(load_config(folder, ["train.epochs=5"])))
    return ["run", str(folder), "--run-dir", str(unfinished_run(root, folder, config=config))]


@case("training", "whose config.yaml is missing or damaged")
def run_dir_with_damaged_config(root, mp):
    """`--run-dir` at an unfinished run whose `config.yaml` was damaged"""
    folder = tabular_project(root)
    return ["run", str(folder), "--run-dir", str(unfinished_run(root, folder, config="task: [unclosed\n"))]


@case("training", "is not a kit run directory (its run.json is damaged)")
def run_dir_with_damaged_record(root, mp):
    """`--run-dir` at a run folder whose `run.json` is cut short"""
    folder = tabular_project(root)
    run_dir = unfinished_run(root, folder)
    (run_dir / "run.json").write_text('{"status": "runn')
    return ["run", str(folder), "--run-dir", str(run_dir)]


@case("training", "Cannot lock the run folder")
def lock_file_is_a_folder(root, mp):
    """An unfinished run whose `.lock` file was replaced by a folder"""
    folder = tabular_project(root)
    run_dir = unfinished_run(folder, folder)
    (run_dir / ".lock").mkdir()
    (run_dir / ".lock" / "x").write_text("")
    return ["run", str(folder)]


@case("training", "Read-only file system")
def runs_dir_read_only(root, mp):
    """`runs_dir` on a read-only file system (simulated `EROFS`)"""
    mkdir = pathlib.Path.mkdir
    readonly = root / "readonly"

    def refused(self, *args, **kwargs):
        if str(self).startswith(str(readonly)):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return mkdir(self, *args, **kwargs)

    mp.setattr(pathlib.Path, "mkdir", refused)
    return ["run", str(tabular_project(root, f"runs_dir: {readonly / 'runs'}\n"))]


@case("training", "The disk is full writing")
def disk_full_before_saving_the_model(root, mp):
    """The disk fills up just before the trained model is saved (simulated: no free space)"""
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    mp.setattr("kit.harness.run.shutil.disk_usage", lambda path: usage(10, 10, 0))
    return ["run", str(tabular_project(root))]


@case("training", "was deleted or replaced while this run was training in it")
def run_folder_deleted_while_training(root, mp):
    """The run folder is deleted while the run trains (here by a plugin callback, as `rm -r` would)"""
    body = (
        "    def on_train_batch_end(self, batch, logs=None):\n"
        "        import shutil\n"
        "        if batch == 1:\n"
        "            shutil.rmtree(self.run_dir)\n"
    )
    folder = plugin_project(
        root,
        f"class Remove(keras.callbacks.Callback):\n{body}\n\n"
        "@kit.hookimpl\ndef register_callbacks(register, run):\n"
        "    callback = Remove()\n    callback.run_dir = run.run_dir\n    register(callback)\n",
    )
    return ["run", str(folder)]


@case("training", "was deleted or replaced while this run was training in it")
def run_folder_replaced_while_training(root, mp):
    """The run folder is deleted and made again (another `kit run` took its name) while the run trains"""
    body = (
        "    def on_train_batch_end(self, batch, logs=None):\n"
        "        import shutil\n"
        "        if batch == 1:\n"
        "            shutil.rmtree(self.run_dir)\n"
        "            self.run_dir.mkdir()\n"
        "            (self.run_dir / '.lock').write_text('1 elsewhere')\n"
    )
    folder = plugin_project(
        root,
        f"class Replace(keras.callbacks.Callback):\n{body}\n\n"
        "@kit.hookimpl\ndef register_callbacks(register, run):\n"
        "    callback = Replace()\n    callback.run_dir = run.run_dir\n    register(callback)\n",
    )
    return ["run", str(folder)]


@case("training", "the loss became nan at epoch 1, batch 3")
def loss_becomes_nan(root, mp):
    """The loss becomes NaN (here a plugin's callback breaks a weight); rerunning the same config would too"""
    body = (
        "    def on_train_batch_begin(self, batch, logs=None):\n"
        "        if batch == 2:\n"
        "            weight = self.model.trainable_weights[-1]\n"
        "            weight.assign(weight * float('nan'))\n"
    )
    return ["run", str(callback_plugin(root, body, "Break"))]


# ------------------------------------------------------- plugin callbacks


@case("training", "Plugin 'local_plugin.py' failed in its callback Boom.on_train_batch_end: ValueError: boom")
def plugin_callback_raises(root, mp):
    """A plugin's callback raising an exception during training"""
    body = "    def on_train_batch_end(self, batch, logs=None):\n        raise ValueError('boom')\n"
    return ["run", str(callback_plugin(root, body))]


@case("training", "failed in its callback Quit.on_epoch_end: called sys.exit(0); a plugin must not end kit")
def plugin_callback_exits(root, mp):
    """A plugin's callback calling `sys.exit(0)` (kit would have ended "successfully" with nothing saved)"""
    body = "    def on_epoch_end(self, epoch, logs=None):\n        sys.exit(0)\n"
    return ["run", str(callback_plugin(root, body, "Quit"))]


@case("training", "failed in its callback Stop.on_train_batch_begin: KeyboardInterrupt")
def plugin_callback_raises_keyboard_interrupt(root, mp):
    """A plugin's callback raising `KeyboardInterrupt` itself (not a Ctrl-C)"""
    body = "    def on_train_batch_begin(self, batch, logs=None):\n        raise KeyboardInterrupt\n"
    return ["run", str(callback_plugin(root, body, "Stop"))]


@case("training", "failed in its callback Boom.on_train_end: RuntimeError: upload failed")
def plugin_callback_fails_at_the_end(root, mp):
    """A plugin's callback failing in `on_train_end`, after training (the next run finishes without training)"""
    body = "    def on_train_end(self, logs=None):\n        raise RuntimeError('upload failed')\n"
    return ["run", str(callback_plugin(root, body))]


@case("training", "failed in its callback Boom.on_test_batch_end: ZeroDivisionError")
def plugin_callback_fails_in_validation(root, mp):
    """A plugin's callback failing while the epoch is validated"""
    body = "    def on_test_batch_end(self, batch, logs=None):\n        1 / 0\n"
    return ["run", str(callback_plugin(root, body))]


@case("training", "failed in its callback Odd.get_state: TypeError: the state['seen'] is a set")
def plugin_callback_state_not_storable(root, mp):
    """A plugin's callback whose `get_state()` returns something that is not JSON or arrays (a set)"""
    body = (
        "    def get_state(self):\n        return {'seen': {1, 2}}\n\n    def set_state(self, state):\n        pass\n"
    )
    return ["run", str(callback_plugin(root, body, "Odd"))]


@case("training", "The disk is full")
def plugin_callback_fills_the_disk(root, mp):
    """A plugin's callback meeting a full disk (simulated `ENOSPC`): reported as the full disk it is"""
    body = (
        "    def on_epoch_end(self, epoch, logs=None):\n"
        "        raise OSError(28, 'No space left on device', 'log.csv')\n"
    )
    return ["run", str(callback_plugin(root, body))]


@case("training", "data drift: stop")
def plugin_callback_stops_with_a_kit_error(root, mp):
    """A plugin's callback stopping the run on purpose with a `kit.errors.TrainingError`: its message is shown"""
    body = "    def on_epoch_end(self, epoch, logs=None):\n        raise kit.errors.TrainingError('data drift: stop')\n"
    return ["run", str(callback_plugin(root, body))]


@case("training", "failed in register_callbacks: called sys.exit(3)")
def plugin_register_callbacks_exits(root, mp):
    """A plugin's `register_callbacks` calling `sys.exit(3)`"""
    return [
        "run",
        str(plugin_project(root, "@kit.hookimpl\ndef register_callbacks(register, run):\n    sys.exit(3)\n")),
    ]


@case("training", "registered keras.callbacks.BackupAndRestore")
def plugin_registers_backup_and_restore(root, mp):
    """A plugin registering Keras's `BackupAndRestore` (kit saves and restores the training state itself)"""
    source = (
        "@kit.hookimpl\ndef register_callbacks(register, run):\n"
        "    register(keras.callbacks.BackupAndRestore(str(run.run_dir / 'keras-backup')))\n"
    )
    return ["run", str(plugin_project(root, source))]


@case("training", "registered the same CSVLogger object twice")
def plugin_registers_a_callback_twice(root, mp):
    """A plugin registering one callback object twice (Keras would call it twice per step)"""
    source = (
        "@kit.hookimpl\ndef register_callbacks(register, run):\n"
        "    logger = keras.callbacks.CSVLogger(str(run.run_dir / 'log.csv'))\n"
        "    register(logger)\n    register(logger)\n"
    )
    return ["run", str(plugin_project(root, source))]


# ------------------------------------------------------ plugins at import


@case("training", "failed to import: called sys.exit(0), which a plugin must not do")
def plugin_exits_at_import(root, mp):
    """A project plugin calling `sys.exit(0)` when imported (`kit run` exited 0 having done nothing)"""
    return ["run", str(plugin_project(root, "sys.exit(0)\n"))]


@case("training", "failed to import: KeyboardInterrupt")
def plugin_raises_keyboard_interrupt_at_import(root, mp):
    """A project plugin raising `KeyboardInterrupt` when imported"""
    return ["run", str(plugin_project(root, "raise KeyboardInterrupt\n"))]


@case("training", "failed to import: Halt: stop everything")
def plugin_raises_base_exception_at_import(root, mp):
    """A project plugin raising its own `BaseException` subclass when imported"""
    return ["run", str(plugin_project(root, "class Halt(BaseException):\n    pass\n\nraise Halt('stop everything')\n"))]


@case("training", "failed to register: register_tasks called sys.exit(0)")
def plugin_exits_while_registering(root, mp):
    """A project plugin calling `sys.exit(0)` in `register_tasks`"""
    return ["run", str(plugin_project(root, "@kit.hookimpl\ndef register_tasks(register):\n    sys.exit(0)\n"))]
