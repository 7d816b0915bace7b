"""kit.scratch: every file kit writes appears whole or not at all, with concurrent writers too."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kit.rundir import write_text_atomic
from kit.scratch import WRITING, scratch_beside, written_atomically

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


def test_what_a_killed_writer_left_is_removed_and_a_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    abandoned = tmp_path / f".m.json{WRITING}{dead.stdout.strip()}"
    abandoned.write_text("half")
    running = tmp_path / f".m.json{WRITING}{os.getppid()}"  # a live process writing the same file
    running.write_text("in progress")
    write_text_atomic(tmp_path / "m.json", "{}")
    assert not abandoned.exists()
    assert running.read_text() == "in progress"
    assert (tmp_path / "m.json").read_text() == "{}"


def test_a_link_planted_at_the_scratch_name_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    scratch = scratch_beside(tmp_path / "out.txt")
    scratch.symlink_to(victim)
    write_text_atomic(tmp_path / "out.txt", "new")
    assert victim.read_text() == "precious"
    assert (tmp_path / "out.txt").read_text() == "new"
    assert not Path(scratch).is_symlink()
