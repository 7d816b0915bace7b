"""`kit serve` is light to ask about, and the serving code reads runs the way inference does."""

from __future__ import annotations

import subprocess
import sys

from tests.test_architecture import import_graph


def test_serve_help_does_not_import_tensorflow_or_the_web_stack(tmp_path):
    code = (
        "import sys; from kit.cli import cli\n"
        "try:\n    cli(['serve', '--help'], prog_name='kit')\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('tensorflow', 'starlette', 'uvicorn') if m in sys.modules), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert "RUN_DIR_OR_EXPORT" in result.stdout
    assert result.stderr.strip().endswith("[]"), result.stderr


def test_serving_never_imports_training_code():
    graph = import_graph()
    seen, pending = set(), [name for name in graph if name.startswith("kit.serve")]
    while pending:
        current = pending.pop()
        for target in graph.get(current, ()):
            assert not target.startswith("kit.harness"), f"{current} -> {target}"
            if target not in seen:
                seen.add(target)
                pending.append(target)
