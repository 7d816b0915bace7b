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


def _plugin_template(root, mp, build) -> str:
    """A template a plugin registers, holding what `build(folder)` puts in it; returns its name."""
    from kit.templates import Template

    template = root / "tpl"
    template.mkdir()
    (template / "kit.yaml.jinja").write_text("task: regression\nname: {{ name }}\n")
    build(template)
    mp.setattr("kit.templates.all_templates", lambda: {"tpl": Template("tpl", template, "", "a plugin")})
    return "tpl"


# ---------------------------------------------------------------- the target folder


@case("templates", "is a symbolic link (to ../outside); kit new never writes through links")
def new_force_through_a_link(root, mp):
    """`kit new tgt --force` on a folder holding your README.md and a link `data -> ../outside`

    Everything is checked before anything is written, so the README stays as it was.
    """
    (root / "outside").mkdir()
    (root / "tgt").mkdir()
    (root / "tgt" / "README.md").write_text("my notes")
    (root / "tgt" / "data").symlink_to("../outside")
    return ["new", str(root / "tgt"), "--force"]


@case("templates", "kit new never overwrites your files, and the template has other content for")
def new_force_would_overwrite(root, mp):
    """`kit new tgt --force` on a folder holding a README.md of your own: --force adds files, never replaces them"""
    (root / "tgt").mkdir()
    (root / "tgt" / "README.md").write_text("my notes")
    return ["new", str(root / "tgt"), "--force"]


@case("templates", "exists, but the template has a folder there")
def new_force_file_where_a_folder_goes(root, mp):
    """`kit new tgt --force` where `tgt/data` is a file and the template has a `data/` folder"""
    (root / "tgt").mkdir()
    (root / "tgt" / "data").write_text("not a folder")
    return ["new", str(root / "tgt"), "--force"]


@case("templates", "is not a folder. Choose another place")
def new_under_a_file(root, mp):
    """`kit new /etc/hostname/p`: the parent is a file"""
    (root / "hostname").write_text("box")
    return ["new", str(root / "hostname" / "p")]


@case("templates", "is a symbolic link (to")
def new_into_a_link(root, mp):
    """`kit new link` where `link` is a symbolic link to a folder elsewhere"""
    (root / "elsewhere").mkdir()
    (root / "link").symlink_to(root / "elsewhere")
    return ["new", str(root / "link")]


# ---------------------------------------------------------------- the name


@case("templates", "it has 300 characters; at most 64", exit_code=2)
def new_name_too_long(root, mp):
    """A 300-character project name"""
    return ["new", str(root / ("a" * 300))]


@case("templates", "'class' is a Python keyword, so it cannot name a package. Try: kit new class-project", exit_code=2)
def new_keyword_name(root, mp):
    """`kit new class` (a Python keyword): the suggestion is a valid name"""
    return ["new", str(root / "class")]


@case("templates", "Windows reserves the name 'con' for a device", exit_code=2)
def new_windows_reserved_name(root, mp):
    """`kit new con` (a name Windows reserves: con, nul, aux, prn, com1, lpt1...)"""
    return ["new", str(root / "con")]


@case("templates", "'.' is not a valid project name: kit new NAME creates the new folder NAME", exit_code=2)
def new_dot(root, mp):
    """`kit new .`"""
    return ["new", "."]


@case("templates", "'' is not a valid project name", exit_code=2)
def new_empty_name(root, mp):
    """`kit new ""`"""
    return ["new", ""]


@case("templates", "'-x' is not a valid project name: use letters, digits, '-' and '_', starting with a letter", 2)
def new_dash_name(root, mp):
    """`kit new -- -x`"""
    return ["new", "--", "-x"]


@case("templates", "'kit' is not a valid project name: 'kit' is the name of kit's own package", exit_code=2)
def plugin_named_kit(root, mp):
    """`kit new kit --template plugin` (its `pip install -e` would replace kit; a `kit/` folder shadows it too)"""
    return ["new", str(root / "kit"), "--template", "plugin"]


@case("templates", "'json' is a module of Python's standard library, which it would shadow", exit_code=2)
def plugin_shadows_the_standard_library(root, mp):
    """`kit new json --template plugin`"""
    return ["new", str(root / "json"), "--template", "plugin"]


@case("templates", "a module 'numpy' is already installed", exit_code=2)
def plugin_shadows_an_installed_module(root, mp):
    """`kit new numpy --template plugin` (a module kit and the plugin depend on)"""
    return ["new", str(root / "numpy"), "--template", "plugin"]


@case("templates", "its task 'regression' is already provided by plugin", exit_code=2)
def plugin_task_clashes(root, mp):
    """`kit new regression --template plugin` (its task would clash with the built-in one)"""
    return ["new", str(root / "regression"), "--template", "plugin"]


@case("templates", "--template regression is for task 'regression', not --task classification", exit_code=2)
def template_and_task_disagree(root, mp):
    """`kit new x --template regression --task classification`"""
    return ["new", str(root / "x"), "--template", "regression", "--task", "classification"]


# ---------------------------------------------------------------- the template


@case("templates", "is a symbolic link (to /etc/ssl); templates must hold plain files and folders")
def template_links_outside(root, mp):
    """A template holding a symbolic link to `/etc/ssl` (it would have copied the folder into the project)"""
    name = _plugin_template(root, mp, lambda folder: (folder / "certs").symlink_to("/etc/ssl"))
    return ["new", str(root / "x"), "--template", name]


@case("templates", "is a symbolic link (to loop); templates must hold plain files and folders")
def template_symlink_loop(root, mp):
    """A template holding a symbolic link loop"""
    name = _plugin_template(root, mp, lambda folder: (folder / "loop").symlink_to("loop"))
    return ["new", str(root / "x"), "--template", name]


@case("templates", "is not a plain file or folder (a pipe, socket or device)")
def template_holds_a_fifo(root, mp):
    """A template holding a named pipe (reading it would wait forever)"""
    import os

    name = _plugin_template(root, mp, lambda folder: os.mkfifo(folder / "pipe"))
    return ["new", str(root / "x"), "--template", name]


@case("templates", "Template file notes.md.jinja is not UTF-8 text")
def template_not_utf8(root, mp):
    """A template file in Latin-1"""
    name = _plugin_template(root, mp, lambda folder: (folder / "notes.md.jinja").write_bytes(b"caf\xe9 {{ name }}"))
    return ["new", str(root / "x"), "--template", name]


@case("templates", "Template error in notes.md.jinja: ZeroDivisionError")
def template_expression_fails(root, mp):
    """A template whose expression fails (`{{ 1 / 0 }}`)"""
    name = _plugin_template(root, mp, lambda folder: (folder / "notes.md.jinja").write_text("{{ 1 / 0 }}"))
    return ["new", str(root / "x"), "--template", name]


@case("templates", "Template entries 'kit.yaml' and 'kit.yaml.jinja' both render to 'kit.yaml'")
def template_names_collide(root, mp):
    """A template with two entries that render to the same file (`kit.yaml` and `kit.yaml.jinja`)"""
    name = _plugin_template(root, mp, lambda folder: (folder / "kit.yaml").write_text("task: x\n"))
    return ["new", str(root / "x"), "--template", name]


@case("templates", "is missing:")
def template_folder_missing(root, mp):
    """A plugin template whose folder does not exist"""
    from kit.templates import Template

    mp.setattr("kit.templates.all_templates", lambda: {"gone": Template("gone", root / "gone", "", "a plugin")})
    return ["new", str(root / "x"), "--template", "gone"]


@case("templates", "a distribution 'pyyaml' is already installed, which `pip install -e` would replace", 2)
def plugin_replaces_an_installed_distribution(root, mp):
    """`kit new PyYAML --template plugin` (no module is called `pyyaml`, but the installed distribution is)"""
    return ["new", str(root / "PyYAML"), "--template", "plugin"]


@case("templates", "ending with a letter or digit. Try: kit new demo", exit_code=2)
def new_name_ends_with_a_dash(root, mp):
    """`kit new demo-` (pip refuses a distribution name that ends with '-' or '_')"""
    return ["new", str(root / "demo-")]


@case("templates", "registers a template named '../evil'; a template name is letters, digits")
def plugin_template_with_a_path_as_name(root, mp):
    """A plugin registering a template whose name is a path (`../evil`)"""
    import kit
    from kit.plugins import get_plugins

    class Plugin:
        @kit.hookimpl
        def register_templates(self, register):
            register("../evil", root)

    get_plugins().pm.register(Plugin(), name="bad_templates")
    return ["new", str(root / "x"), "--template", "../evil"]


@case("templates", "renders to the name 'notes\\nold.txt', with control characters")
def template_name_with_a_line_break(root, mp):
    """A template file whose name holds a line break"""
    name = _plugin_template(root, mp, lambda folder: (folder / "notes\nold.txt").write_text("x"))
    return ["new", str(root / "x"), "--template", name]
