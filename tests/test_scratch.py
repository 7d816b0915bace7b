"""kit.scratch: every file kit writes appears whole or not at all, with concurrent writers too."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from kit.rundir import write_text_atomic
from kit.scratch import HOST, WRITING, scratch_beside, written_atomically

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from kit.rundir import write_text_atomic

    path, mark = Path(sys.argv[1]), sys.argv[2]
    for _ in range(150):
        write_text_atomic(path, mark * 200_000)
    """
)


def test_two_processes_writing_one_file_each_finish_and_leave_a_whole_file(tmp_path):
    """Two `kit tune` workers write one study's report at once: neither fails, the file is one writer's copy."""
    path = tmp_path / "summary.md"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), mark]) for mark in "ab"]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    assert path.read_text() in ("a" * 200_000, "b" * 200_000)
    assert [p.name for p in tmp_path.iterdir()] == ["summary.md"]


def test_two_processes_saving_one_plot_both_succeed(tmp_path):
    pytest.importorskip("matplotlib")
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from kit.plots import plot_curves

        history = [{"epoch": e, "loss": 1.0 / e, "val_loss": 1.2 / e} for e in range(1, 4)]
        for _ in range(10):
            plot_curves(history, Path(sys.argv[1]))
        """
    )
    path = tmp_path / "curves.png"
    writers = [subprocess.Popen([sys.executable, "-c", script, str(path)]) for _ in range(2)]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    assert path.read_bytes().startswith(b"\x89PNG")
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


def test_a_failed_write_leaves_the_old_file_and_no_scratch(tmp_path):
    path = tmp_path / "run.json"
    path.write_text("old")
    with pytest.raises(RuntimeError), written_atomically(path) as scratch:
        scratch.write_text("half")
        raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_what_a_killed_writer_left_is_removed_and_a_live_or_foreign_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = dead.stdout.strip()
    abandoned = tmp_path / f".m.json{WRITING}{dead_pid}.{HOST}.0a1b2c3d"
    older = tmp_path / f".m.json{WRITING}{dead_pid}"  # as kit named them before: this machine's
    running = tmp_path / f".m.json{WRITING}{os.getppid()}.{HOST}.00000000"  # a live process writing the same file
    elsewhere = tmp_path / f".m.json{WRITING}{dead_pid}.ffffffff.00000000"  # a worker on another machine
    huge = tmp_path / f".m.json{WRITING}{'9' * 40}.{HOST}.00000000"  # not a process id at all
    for path in (abandoned, older, running, elsewhere, huge):
        path.write_text("half")
    write_text_atomic(tmp_path / "m.json", "{}")
    assert not abandoned.exists() and not older.exists()
    assert running.exists() and elsewhere.exists() and huge.exists()
    assert (tmp_path / "m.json").read_text() == "{}"


def test_every_write_takes_a_new_unpredictable_name(tmp_path):
    """Two writers never share a temporary name (processes with one id in two containers, or two threads),
    and nobody can plant a link where kit will write."""
    names = {scratch_beside(tmp_path / "out.txt").name for _ in range(20)}
    assert len(names) == 20
    assert all(name.startswith(f".out.txt{WRITING}{os.getpid()}.{HOST}.") for name in names)


def test_an_error_names_the_destination_not_the_temporary_file(tmp_path):
    with pytest.raises(OSError) as caught, written_atomically(tmp_path / "out.txt") as scratch:
        raise OSError(28, "No space left on device", str(scratch))
    assert caught.value.filename == str(tmp_path / "out.txt")
