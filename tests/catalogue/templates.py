"""Catalogue: `kit new` and templates."""

from __future__ import annotations

from tests.catalogue import case


@case("templates", "already exists")
def new_into_existing_directory(root, mp):
    """`kit new` into a folder that has files"""
    (root / "taken").mkdir()
    (root / "taken" / "notes.txt").write_text("mine")
    return ["new", str(root / "taken")]


@case("templates", "is not a valid project name", exit_code=2)
def new_invalid_name(root, mp):
    """`kit new 'my task!'`"""
    return ["new", str(root / "my task!")]


@case("templates", "Unknown template", exit_code=2)
def new_unknown_template(root, mp):
    """`kit new x --template clasification`"""
    return ["new", str(root / "x"), "--template", "clasification"]


@case("templates", "would write outside")
def template_escapes_its_target(root, mp):
    """A (plugin) template whose paths lead outside the new project"""
    from kit.templates import Template

    template = root / "evil"  # a plugin's template with a folder whose name renders to ".."
    (template / "{{ '..' }}").mkdir(parents=True)
    (template / "{{ '..' }}" / "escaped.txt").write_text("x")
    mp.setattr("kit.templates.all_templates", lambda: {"evil": Template("evil", template, "", "a plugin")})
    return ["new", str(root / "victim"), "--template", "evil"]
