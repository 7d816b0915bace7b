"""The plugin contract: every hook kit calls, in one file.

Plugins implement these with the `kit.hookimpl` marker::

    import kit

    @kit.hookimpl
    def register_tasks(register):
        register(MyTask)

Registration hooks receive a `register` callable instead of returning values,
so kit can validate each object as it arrives and remember which plugin
registered it (and name both plugins when two claim the same name).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:  # pragma: no cover - imports for type checkers only
    import click

    from kit.backbone import Backbone, InputKind
    from kit.task import Task

hookspec = pluggy.HookspecMarker("kit")
hookimpl = pluggy.HookimplMarker("kit")


@hookspec
def register_tasks(register: Callable[[type[Task]], None]) -> None:
    """Register task types.

    Call ``register(TaskClass)`` once per task type. ``TaskClass`` must be a
    subclass of `kit.Task` with a unique ``name``; that name is what projects
    put in ``task:`` in ``kit.yaml``.

    Example::

        @kit.hookimpl
        def register_tasks(register):
            register(SentimentTask)
    """


@hookspec
def register_input_kinds(register: Callable[[type[InputKind]], None]) -> None:
    """Register input kinds: what the features of one example are.

    Call ``register(KindClass)`` once per kind. ``KindClass`` must be a subclass
    of `kit.InputKind` with a unique ``name``; tasks list the kinds they take in
    ``input_kinds``, projects may pick one with ``data.inputs: NAME``. kit's own
    kinds (text, text_pair, tokens, tabular, image) are registered this way.

    Example::

        @kit.hookimpl
        def register_input_kinds(register):
            register(AudioClips)
    """


@hookspec
def register_backbones(register: Callable[[type[Backbone]], None]) -> None:
    """Register backbone families: how features become a representation.

    Call ``register(FamilyClass)`` once per family. ``FamilyClass`` must be a
    subclass of `kit.Backbone` with a unique ``name``; the built-in names in its
    ``sizes`` (``model.backbone: NAME``) must be unique across plugins too. A
    family that loads pretrained models says which references it takes in
    ``accepts()``. kit's own families (bert, roberta, pretrained-text, mlp, cnn,
    pretrained-image, and generation's gpt and pretrained-decoder) are
    registered this way.

    Example::

        @kit.hookimpl
        def register_backbones(register):
            register(SpectrogramCNN)
    """


@hookspec
def register_data_sources(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register data-source schemes.

    Call ``register(scheme, open_source)``. A source written ``SCHEME:REST``
    in ``kit.yaml`` (``data.train: hf:imdb``) is opened by calling
    ``open_source(rest, data_config, project_dir, role)``
    (``role`` is train, validation or test), which must return a
    `kit.data.Source`.

    Example::

        @kit.hookimpl
        def register_data_sources(register):
            register("parquet", open_parquet_source)
    """


@hookspec
def register_templates(register: Callable[..., None]) -> None:
    """Register project templates for `kit new`.

    Call ``register(name, path, description="", task=None)`` where ``path`` is
    a folder of template files (``*.jinja`` files are rendered with the
    variables ``name``, ``package`` and ``task``).

    Example::

        @kit.hookimpl
        def register_templates(register):
            register("sentiment", Path(__file__).parent / "template", "A sentiment project", task="sentiment")
    """


@hookspec
def register_callbacks(register: Callable[[Any], None], run: Any) -> None:
    """Add Keras callbacks to a training run.

    Call ``register(callback)`` with a ``keras.callbacks.Callback`` instance.
    ``run`` is the `kit.harness.RunContext` of the run being trained: it holds
    the resolved ``config``, the ``run_dir`` and the ``task``.

    Example::

        @kit.hookimpl
        def register_callbacks(register, run):
            register(keras.callbacks.CSVLogger(str(run.run_dir / "log.csv")))
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``kit`` command line.

    Example::

        @kit.hookimpl
        def register_commands(cli):
            @cli.command()
            def hello():
                "Say hello."
                click.echo("hello")
    """
