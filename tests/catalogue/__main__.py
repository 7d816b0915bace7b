"""`python -m tests.catalogue` rewrites docs/errors.md from the catalogue's cases."""

from tests.catalogue import DOC, markdown

DOC.write_text(markdown(), encoding="utf-8")
print(f"wrote {DOC}")
