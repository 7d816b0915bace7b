"""The `kit` command line. Thin: commands call the core and turn `KitError` into clean exits.

TensorFlow is imported only inside the commands that need it, so `kit --help`,
`kit tasks`, `kit plugins` and `kit new` start fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from kit.commands import handle_errors, quiet_tensorflow


class KitGroup(click.Group):
    """Adds commands registered by plugins (loaded only when the name is not built in)."""

    def _plugin_commands(self) -> None:
        from kit.plugins import get_plugins

        plugins = get_plugins()
        if getattr(self, "_commands_from", None) is plugins:  # once per set of loaded plugins
            return
        self._commands_from = plugins
        for plugin, exc in plugins.add_commands(self).items():  # a broken plugin must not break the CLI
            click.echo(f"kit: warning: plugin '{plugin}' failed in register_commands: {exc}", err=True)

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
    import atexit

    atexit.register(skip_final_collection)  # at the interpreter's exit only, after the other exit handlers
    cli(prog_name="kit")


def skip_final_collection() -> None:
    """Let a process that loaded TensorFlow exit without a last garbage collection over everything it built.

    Python's shutdown collects once more over every object left (a trained model, TensorFlow's traced
    functions, keras-hub's modules): 1.7-1.9 s after MiniLM's `kit run` finished, for nothing, as the
    process ends anyway. Frozen objects are out of that collection. Shutdown is otherwise as usual: threads
    are joined, `atexit` handlers run (logging is flushed), files still open are flushed and closed; only
    unreachable cycles are not collected, whose finalizers Python never promises to run at exit. Every file
    kit writes is closed (and renamed into place) before its command returns.
    """
    import gc

    if "tensorflow" in sys.modules:
        gc.disable()
        gc.freeze()


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
        quiet_tensorflow()
        train(config, run_dir, argv=["kit", *sys.argv[1:]])


@cli.command()
@click.argument("project", default=".", type=click.Path(path_type=Path))
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key, e.g. tune.trials=40."
)
@click.option("--trials", type=int, help="Trials the study runs in all (sets tune.trials).")
@click.option("--timeout", type=int, metavar="SECONDS", help="Start no trial after this long (sets tune.timeout).")
@handle_errors
def tune(project: Path, overrides: tuple[str, ...], trials: int | None, timeout: int | None) -> None:
    """Search PROJECT's hyperparameters (the tune: section of kit.yaml); each trial is a kit run.

    Several `kit tune` on one study (on one machine or many, through tune.storage) share the work.
    Stopped, the same command carries on; the trial it stopped resumes from its saved state.
    """
    from kit.harness.run import STOPS

    extra = [f"tune.trials={trials}"] if trials is not None else []
    extra += [f"tune.timeout={timeout}"] if timeout is not None else []
    with STOPS.handled():
        quiet_tensorflow()
        from kit.tune.runner import tune as run_study

        run_study(project, [*overrides, *extra], argv=["kit", *sys.argv[1:]])


class RunsGroup(click.Group):
    """`kit runs [PROJECT]` lists; `kit runs compare RUN RUN...` compares: words other than a subcommand are
    the listing's arguments."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["list", *args]
        return super().parse_args(ctx, args)


@cli.group(cls=RunsGroup)
def runs() -> None:
    """A project's runs side by side: `kit runs [PROJECT] [--sort METRIC] [--json]`.

    \b
    One row per run folder (kit tune's trials included): status, task, the config
    keys that differ between runs, final metrics, wall time.
    `kit runs compare RUN RUN...` shows a few runs in detail.
    """


@runs.command("list", hidden=True)
@click.argument("project", default=".", type=click.Path(path_type=Path))
@click.option("--sort", "sort", metavar="METRIC", help="Best first by this metric (validation.rmse, or rmse).")
@click.option("--json", "as_json", is_flag=True, help="Output JSON (every metric of every run).")
@handle_errors
def runs_list(project: Path, sort: str | None, as_json: bool) -> None:
    """List the runs of PROJECT (a folder with kit.yaml, or a folder of runs)."""
    from kit.runs import as_json as runs_json
    from kit.runs import format_table, list_runs, table_rows

    found, sort = list_runs(project, sort)
    if as_json:
        click.echo(json.dumps(runs_json(found), indent=2))
    elif not found:
        click.echo(f"kit: no runs in {project} yet; `kit run {project}` trains one.")
    else:
        click.echo(format_table(*table_rows(found, sort)))


@runs.command("compare")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),
    default=Path("compare.png"),
    show_default=True,
    help="Where to write the overlaid curves (PNG).",
)
@click.option("--json", "as_json", is_flag=True, help="Output JSON (config, metrics, per-epoch history).")
@handle_errors
def runs_compare(run_dirs: tuple[Path, ...], output: Path, as_json: bool) -> None:
    """Compare runs: config keys that differ, metrics side by side, curves overlaid in one PNG."""
    from kit.runs import check_plot_destination, compare_text, plot_compare, read_for_compare

    target = check_plot_destination(output)
    found = read_for_compare(list(run_dirs))
    plot_compare(found, target)
    if as_json:
        rows = [{"run": r.name, "config": r.config, "metrics": r.metrics, "history": r.history} for r in found]
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(compare_text(found))
    click.echo(f"kit: curves of {len(found)} runs in {target}", err=True)


PLUGIN_HELP = (
    "A plugin file or module providing the run's task, input kind or backbone family, when it is not installed "
    "(a project's own plugin). kit never imports code named by a run folder."
)


@cli.command("eval")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--data", "source", help="Evaluate on this data (a file, folder or tfds:/keras: source) instead.")
@click.option("--unsafe", is_flag=True, help="Allow loading models that contain Python code.")
@click.option("--plugin", "plugin_files", multiple=True, metavar="FILE", help=PLUGIN_HELP)
@handle_errors
def eval_command(run_dir: Path, source: str | None, unsafe: bool, plugin_files: tuple[str, ...]) -> None:
    """Print the metrics of a trained run as JSON (re-computed with --data)."""
    quiet_tensorflow()
    from kit.inference import TrainedModel, check_input, read_metrics

    if source is None:
        metrics = read_metrics(run_dir)
    else:
        check_input(source)
        metrics = TrainedModel(run_dir, unsafe, plugin_files).evaluate(source)
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
    from kit.outputs import check_prediction_output

    # Checked before the model loads: a wrong -o costs nothing and never touches the input or a run.
    target = check_prediction_output(output, [Path(input_data)]) if output else None
    quiet_tensorflow()
    from kit.inference import TrainedModel, check_input, write_predictions

    check_input(input_data)
    trained = TrainedModel(run_dir, unsafe, plugin_files, predicting=True)
    count = write_predictions(trained.predict_rows(input_data), target)
    if output:
        click.echo(f"kit: wrote {count} predictions to {output}", err=True)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "formats",
    type=click.Choice(["keras", "saved_model", "preset", "tflite", "huggingface"]),
    multiple=True,
    default=["keras"],
    show_default=True,
    help="keras: model.keras answering with labels/units; saved_model: TensorFlow Serving, raw features in; "
    "preset: keras-hub from_preset; tflite: LiteRT; huggingface: a transformers folder (decoders). "
    "Repeat it to export several formats from one load of the run.",
)
@click.option(
    "--quantize",
    type=click.Choice(["none", "dynamic", "int8"]),
    default="none",
    show_default=True,
    help="tflite only: dynamic (int8 weights) or int8 (weights and activations, calibrated on training data).",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),
    help="Destination folder, with one --format (default: RUN_DIR/export/FORMAT).",
)
@click.option("--unsafe", is_flag=True, help="Allow loading models that contain Python code.")
@click.option("--plugin", "plugin_files", multiple=True, metavar="FILE", help=PLUGIN_HELP)
@handle_errors
def export(
    run_dir: Path,
    formats: tuple[str, ...],
    quantize: str,
    output: Path | None,
    unsafe: bool,
    plugin_files: tuple[str, ...],
) -> None:
    """Export a trained run; check it loads without kit, in a fresh process, and answers as kit does.

    \b
    Examples:
      kit export runs/run-1 --format saved_model
      kit export runs/run-1 --format keras --format saved_model --format preset
      kit export runs/run-1 --format tflite --quantize int8
      kit export runs/run-1 --format huggingface -o hf-model
    """
    from kit.errors import UsageError
    from kit.outputs import check_export_destination
    from kit.rundir import RunDir

    formats = tuple(dict.fromkeys(formats))  # a format named twice is exported once
    others = [fmt for fmt in formats if fmt != "tflite"]
    if quantize != "none" and others:
        raise UsageError(
            f"--quantize applies to --format tflite only (not {', '.join(others)}); "
            f"export {'that format' if len(others) == 1 else 'those formats'} in a command without --quantize."
        )
    if output is not None and len(formats) > 1:
        raise UsageError(
            f"--output names one export folder, and {len(formats)} formats were given ({', '.join(formats)}). "
            f"Give one --format with --output, or leave --output out (each goes to RUN_DIR/export/FORMAT)."
        )
    names = {fmt: fmt if quantize == "none" else f"{fmt}-{quantize}" for fmt in formats}
    destinations = {fmt: output or RunDir(run_dir).export_dir(names[fmt]) for fmt in formats}
    if run_dir.is_dir():  # otherwise loading the run says what is wrong with it
        for destination in destinations.values():
            check_export_destination(destination, run_dir)  # before the slow part
    quiet_tensorflow()
    from kit.exports import export as export_model
    from kit.exports import find_exporter
    from kit.inference import TrainedModel

    trained = TrainedModel(run_dir, unsafe, plugin_files)
    for fmt in formats:  # a format that cannot hold the run is refused before any is written
        find_exporter(trained, fmt).refuse_early(trained)
    for fmt, destination in destinations.items():
        export_model(trained, fmt, destination, quantize)
        click.echo(f"kit: exported {fmt} model to {destination} (reload check passed)")
        for line in _export_summary(destination):
            click.echo(line)


def _export_summary(destination: Path) -> list[str]:
    """Figures the export measured (TFLite size, latency, metric change) and its notes, one line each."""
    import json

    record = json.loads((destination / "export.json").read_text(encoding="utf-8"))
    return [f"kit: {note}" for note in record.get("notes", [])]


@cli.command()
@click.argument("target", metavar="RUN_DIR_OR_EXPORT", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", default=8000, show_default=True, help="Port to listen on.")
@click.option("--max-batch-size", default=32, show_default=True, help="Rows (or prompts) per model call.")
@click.option(
    "--max-wait-ms", default=5.0, show_default=True, help="Longest wait for a batch to fill, under concurrent load."
)
@click.option("--queue-size", default=256, show_default=True, help="Requests that may wait; more are answered 503.")
@click.option("--max-body-kb", default=1024, show_default=True, help="Largest request body; larger ones get 400.")
@click.option("--feedback-window", default=500, show_default=True, help="Feedback items the rolling accuracy covers.")
@click.option("--drift-window", default=1000, show_default=True, help="Recent rows drift is measured over.")
@click.option("--access-log", is_flag=True, help="Log every request (uvicorn's access log).")
@click.option("--unsafe", is_flag=True, help="Allow loading models that contain Python code.")
@click.option("--plugin", "plugin_files", multiple=True, metavar="FILE", help=PLUGIN_HELP)
@handle_errors
def serve(
    target: Path,
    host: str,
    port: int,
    max_body_kb: int,
    access_log: bool,
    unsafe: bool,
    plugin_files: tuple[str, ...],
    **batching: Any,
) -> None:
    """Serve a trained run (or a keras export) over HTTP, with dynamic batching and monitoring.

    \b
    POST /predict   rows as JSON objects -> what kit predict answers
    POST /generate  a prompt and sampler settings (generation runs; "stream": true for tokens as they come)
    POST /feedback  the true label or value of an earlier prediction (rolling accuracy)
    GET  /health    200 once warmed up;  GET /metrics  Prometheus;  GET /  a page to try it and watch it
    SIGTERM or Ctrl-C answers every request already taken, then exits.
    """
    from kit.serve.app import Options
    from kit.serve.server import check_options, check_port, require_stack

    require_stack()
    options = Options(max_body_bytes=max_body_kb * 1024, **batching)
    check_options(options, port)
    check_port(host, port)  # before the slow part
    quiet_tensorflow()
    from kit.serve.server import serve as run_server

    run_server(target, options, host, port, unsafe, plugin_files, access_log)


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


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
@handle_errors
def backbones(as_json: bool) -> None:
    """List backbone families: their built-in names, the input kinds they build, and their plugins."""
    from kit.plugins import get_plugins

    plugins = get_plugins()
    plugins.collect()
    rows = []
    for name in plugins.backbones.names():
        item = plugins.backbones.items[name]
        family = item.obj
        rows.append(
            {
                "family": name,
                "description": family.description,
                "names": sorted(family.sizes),
                "inputs": list(family.input_kinds),
                "pretrained": family.loads_pretrained(),
                "plugin": item.plugin,
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        names = ", ".join(row["names"]) or ("(pretrained models)" if row["pretrained"] else "")
        click.echo(f"{row['family']:<20} {names:<28} inputs: {', '.join(row['inputs'])}  [{row['plugin']}]")


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
