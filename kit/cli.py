"""The `kit` command line. Thin: commands call the core and turn `KitError` into clean exits.

TensorFlow is imported only inside the commands that need it, so `kit --help`,
`kit tasks`, `kit plugins` and `kit new` start fast.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import click

from kit.errors import KitError


def _quiet_tensorflow() -> None:
    """Import TensorFlow without its start-up log lines (CUDA probing, oneDNN notices).

    Its C++ logging ignores some environment settings, so the import runs with
    file descriptor 2 pointed at a temporary file, which is replayed if the
    import fails. KIT_TF_LOGS=1 shows everything.
    """
    if os.environ.get("KIT_TF_LOGS"):
        return
    # Level 3 also hides C++ "errors" such as tensorflow-text's op-definition
    # notices; real failures still surface as Python exceptions.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import tensorflow

            tensorflow.config.list_physical_devices()  # device probing logs too
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Show a `KitError` as a one-line message with its exit status, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except KitError as exc:
            if exc.exit_code == 2:
                raise click.UsageError(str(exc)) from None
            if exc.exit_code != 1:
                click.echo(f"Error: {exc}", err=True)
                sys.exit(exc.exit_code)
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo(f"\nkit: interrupted{_after_interrupt()}", err=True)
            sys.exit(130)
        except OSError as exc:
            message = _storage_problem(exc)
            if message is None:
                raise
            raise click.ClickException(message) from None

    return wrapper


def _after_interrupt() -> str:
    """What an interrupted command leaves: training resumes; outputs are written whole or not at all."""
    command = getattr(click.get_current_context(silent=True), "info_name", None)
    if command == "run":
        return "; run the same command again to resume."
    if command in ("predict", "export"):
        return "; no partial output was saved."
    return "."


def _storage_problem(exc: OSError) -> str | None:
    """A message for a full, read-only or forbidden disk; None for other OS errors (real bugs)."""
    where = f" writing {exc.filename}" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"The disk is full{where}. Free some space and run the same command again: what was saved before "
            f"(a run's training state in backup/, earlier runs) is kept, and `kit run` resumes from it."
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"Permission denied{where} ({exc.strerror}). Make the folder writable or choose another one."
    return None


class KitGroup(click.Group):
    """Adds commands registered by plugins (loaded only when the name is not built in)."""

    def _plugin_commands(self) -> None:
        if getattr(self, "_plugins_added", False):
            return
        self._plugins_added = True
        from kit.plugins import get_plugins

        try:
            get_plugins().pm.hook.register_commands(cli=self)
        except Exception as exc:  # a broken plugin must not break the CLI
            click.echo(f"kit: warning: a plugin failed in register_commands: {exc}", err=True)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None:
            self._plugin_commands()
            command = super().get_command(ctx, cmd_name)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._plugin_commands()
        return super().list_commands(ctx)


@click.group(cls=KitGroup)
@click.version_option(package_name="kit", prog_name="kit")
def cli() -> None:
    """kit: train, evaluate and ship Keras models from a project folder.

    \b
    Quick start:
      kit new demo            # scaffold a project with sample data
      kit run demo            # train it; writes demo/runs/run-1
      kit eval demo/runs/run-1
    """


def main() -> None:
    cli(prog_name="kit")


@cli.command()
@click.argument("project", default=".", type=click.Path(path_type=Path))
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key, e.g. train.epochs=3."
)
@click.option("--run-dir", type=click.Path(path_type=Path), help="Write the run here (default: PROJECT/runs/run-N).")
@handle_errors
def run(project: Path, overrides: tuple[str, ...], run_dir: Path | None) -> None:
    """Train PROJECT (a folder with kit.yaml, or a YAML file).

    Running the same command again resumes an unfinished run.
    """
    from kit.config import load_config
    from kit.harness.run import STOPS, train  # no TensorFlow yet: that comes with _quiet_tensorflow

    with STOPS.handled():  # from the start: a signal during start-up also stops with status 130
        config = load_config(project, overrides)
        _quiet_tensorflow()
        train(config, run_dir, argv=["kit", *sys.argv[1:]])


PLUGIN_HELP = (
    "A plugin file or module providing the run's task, when it is not installed (a project's own plugin). "
    "kit never imports code named by a run folder."
)


@cli.command("eval")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--data", "source", help="Evaluate on this data (a file, folder or tfds:/keras: source) instead.")
@click.option("--unsafe", is_flag=True, help="Allow loading models that contain Python code.")
@click.option("--plugin", "plugin_files", multiple=True, metavar="FILE", help=PLUGIN_HELP)
@handle_errors
def eval_command(run_dir: Path, source: str | None, unsafe: bool, plugin_files: tuple[str, ...]) -> None:
    """Print the metrics of a trained run as JSON (re-computed with --data)."""
    _quiet_tensorflow()
    from kit.harness.saved import TrainedModel, check_input, read_metrics

    if source is None:
        metrics = read_metrics(run_dir)
    else:
        check_input(source)
        metrics = TrainedModel(run_dir, unsafe, plugin_files, rows=True).evaluate(source)
    click.echo(json.dumps(metrics, indent=2))


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("input_data", metavar="INPUT")
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),
    help="Write to a .jsonl or .csv file (default: JSON lines on stdout).",
)
@click.option("--unsafe", is_flag=True, help="Allow loading models that contain Python code.")
@click.option("--plugin", "plugin_files", multiple=True, metavar="FILE", help=PLUGIN_HELP)
@handle_errors
def predict(run_dir: Path, input_data: str, output: Path | None, unsafe: bool, plugin_files: tuple[str, ...]) -> None:
    """Predict every row of INPUT (CSV, JSONL, folder) with a trained run."""
    from kit.harness.outputs import check_prediction_output

    # Checked before the model loads: a wrong -o costs nothing and never touches the input or a run.
    target = check_prediction_output(output, [Path(input_data)]) if output else None
    _quiet_tensorflow()
    from kit.harness.saved import TrainedModel, check_input, write_predictions

    check_input(input_data)
    trained = TrainedModel(run_dir, unsafe, plugin_files, rows=True)
    count = write_predictions(trained.predict_rows(input_data), target)
    if output:
        click.echo(f"kit: wrote {count} predictions to {output}", err=True)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("prompt", required=False)
@click.option(
    "--prompts", "prompts_file", type=click.Path(path_type=Path), help="A file of prompts, one per line (JSONL out)."
)
@click.option(
    "--sampler",
    type=click.Choice(["greedy", "top_k", "top_p", "random", "beam"]),
    default="top_k",
    show_default=True,
    help="How the next token is picked.",
)
@click.option("--max-new-tokens", "-n", type=int, default=64, show_default=True, help="Tokens to add to each prompt.")
@click.option("--temperature", "-t", type=float, default=1.0, show_default=True, help="Below 1: safer; above: bolder.")
@click.option("--top-k", type=int, default=50, show_default=True, help="Candidates kept by top_k.")
@click.option("--top-p", type=float, default=0.9, show_default=True, help="Probability mass kept by top_p.")
@click.option("--beams", type=int, default=4, show_default=True, help="Beam width for beam.")
@click.option("--seed", type=int, default=None, help="Make random samplers repeatable.")
@click.option("--stream", is_flag=True, help="Print tokens as they are generated (one prompt).")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Prompts generated together (--prompts).")
@click.option("--unsafe", is_flag=True, help="Allow loading models that contain Python code.")
@handle_errors
def generate(
    run_dir: Path,
    prompt: str | None,
    prompts_file: Path | None,
    stream: bool,
    batch_size: int,
    unsafe: bool,
    **sampling: Any,
) -> None:
    """Continue PROMPT (or every line of --prompts) with a trained generation run.

    \b
    Examples:
      kit generate runs/run-1 "It is a truth universally acknowledged"
      kit generate runs/run-1 "Emma" --sampler greedy -n 40
      kit generate runs/run-1 --prompts prompts.txt --sampler top_p --top-p 0.95 --seed 1
    """
    from kit.errors import UsageError

    if (prompt is None) == (prompts_file is None):
        raise UsageError("Give a PROMPT or --prompts FILE (one of them).")
    if stream and prompts_file is not None:
        raise UsageError("--stream prints one prompt's tokens as they come; use it with a PROMPT, not --prompts.")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}.")
    from kit.harness.generate import Sampling, read_prompts

    settings = Sampling(**sampling)
    settings.check()
    prompts = read_prompts(prompts_file) if prompts_file is not None else [(0, prompt or "")]
    _quiet_tensorflow()
    from kit.harness.generate import Generator

    generator = Generator(run_dir, unsafe)
    if prompts_file is None:
        pieces = generator.stream(prompts[0][1], settings) if stream else generator.generate([prompts[0][1]], settings)
        click.echo(prompts[0][1], nl=False)
        for piece in pieces:
            click.echo(piece, nl=False)
        click.echo()
        return
    for start in range(0, len(prompts), batch_size):
        group = prompts[start : start + batch_size]
        completions = generator.generate([text for _, text in group], settings)
        for (line, text), completion in zip(group, completions):
            click.echo(json.dumps({"line": line, "prompt": text, "completion": completion}, ensure_ascii=False))


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["keras", "saved_model", "preset"]),
    default="keras",
    show_default=True,
    help="keras: model.keras + kit metadata; saved_model: TF Serving, raw features in; "
    "preset: keras-hub preset (from_preset loads it).",
)
@click.option(
    "--output", "-o", type=click.Path(path_type=Path), help="Destination folder (default: RUN_DIR/export/FORMAT)."
)
@click.option("--unsafe", is_flag=True, help="Allow loading models that contain Python code.")
@click.option("--plugin", "plugin_files", multiple=True, metavar="FILE", help=PLUGIN_HELP)
@handle_errors
def export(run_dir: Path, fmt: str, output: Path | None, unsafe: bool, plugin_files: tuple[str, ...]) -> None:
    """Export a trained run and check that the reloaded export predicts the same."""
    from kit.harness.outputs import check_export_destination

    destination = output or run_dir / "export" / fmt
    if run_dir.is_dir():  # otherwise loading the run says what is wrong with it
        check_export_destination(destination, run_dir)  # before the slow part
    _quiet_tensorflow()
    from kit.harness.saved import TrainedModel
    from kit.harness.saved import export as export_model

    export_model(TrainedModel(run_dir, unsafe, plugin_files), fmt, destination)
    click.echo(f"kit: exported {fmt} model to {destination} (reload check passed)")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
@handle_errors
def tasks(as_json: bool) -> None:
    """List the task types that plugins provide."""
    from kit.plugins import get_plugins

    plugins = get_plugins()
    plugins.collect()
    rows = []
    for name in plugins.tasks.names():
        item = plugins.tasks.items[name]
        info = plugins.info.get(item.plugin)
        rows.append(
            {
                "name": name,
                "description": item.obj.description,
                "inputs": list(item.obj.input_kinds),
                "plugin": item.plugin,
                "package": info.package if info else None,
                "version": info.version if info else None,
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        for row in rows:
            click.echo(
                f"{row['name']:<16} {row['description']}  [{row['package'] or row['plugin']} {row['version'] or ''}]".rstrip()
            )
    for name, plugins_named in plugins.tasks.conflicts.items():
        click.echo(f"kit: warning: task '{name}' is registered by {' and '.join(plugins_named)}", err=True)


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
@handle_errors
def plugins_command(as_json: bool) -> None:
    """List loaded plugins, their hooks, and any that failed to load."""
    from kit.plugins import get_plugins

    plugins = get_plugins()
    plugins.collect()
    rows = [info.as_dict() for info in plugins.info.values()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        status = f"ERROR: {row['error']}" if row.get("error") else ", ".join(row.get("hooks", []))
        click.echo(f"{row['name']:<32} {row['origin']:<12} {status}")


@cli.command()
@click.argument("name")
@click.option("--template", "-t", help="Template to render (see `kit templates`); default: classification.")
@click.option("--task", help="Pick the template made for this task.")
@click.option(
    "--force", is_flag=True, help="Add the template's files to an existing folder (never replacing a file of yours)."
)
@handle_errors
def new(name: str, template: str | None, task: str | None, force: bool) -> None:
    """Create project NAME in a new folder from a template, with sample data."""
    from kit.templates import check_name, choose_template, new_project

    target = Path(name).expanduser()
    check_name(target.name if name not in (".", "..") else name)
    chosen = choose_template(template, task)
    written = new_project(target.name, target, chosen, force)
    click.echo(f"kit: created {target}/ from template '{chosen.name}' ({len(written)} files)")
    if chosen.kind == "plugin":
        click.echo(f"Next: pip install -e {target} && kit tasks   (then: cd {target} && pytest)")
    else:
        click.echo(f"Next: kit run {target}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
@handle_errors
def templates(as_json: bool) -> None:
    """List the templates `kit new` can render, and where each comes from."""
    from kit.templates import all_templates

    rows = [
        {"name": t.name, "description": t.description, "task": t.task, "origin": t.origin}
        for t in all_templates().values()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['name']:<16} {row['description']}  [{row['origin']}]")
