"""Project configuration: the `kit.yaml` schema, strict loading and overrides.

A project is a folder holding `kit.yaml`. Loading validates every key against
the dataclasses below: unknown keys (with a "did you mean"), wrong types and
missing required keys raise `ConfigError` naming the file, the key and the line.
`--set dotted.key=value` overrides are parsed as YAML scalars/lists and checked
against the same schema.
"""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import errno
import math
import os
import stat
import types
import typing
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Union

import yaml

from kit.data.sources import is_scheme
from kit.errors import ConfigError

CONFIG_FILE = "kit.yaml"


def _doc(text: str, **kwargs: Any) -> Any:
    """A dataclass field with help text (shown in the config reference)."""
    return field(metadata={"help": text}, **kwargs)


@dataclass
class DataConfig:
    """Where the examples come from and how they are batched."""

    train: str = _doc(
        "Training data: a CSV/JSONL file, a folder, `tfds:NAME[/CONFIG][@SPLIT]` or `keras:NAME[@SPLIT]`."
    )
    validation: str | None = _doc("Validation data; default: split off `train`.", default=None)
    test: str | None = _doc("Test data; default: split off `train`.", default=None)
    validation_fraction: float = _doc(
        "Fraction of `train` held out for validation when `validation` is unset.", default=0.1
    )
    test_fraction: float = _doc("Fraction of `train` held out for testing when `test` is unset.", default=0.1)
    format: Literal["auto", "csv", "jsonl", "corpus", "text_folder", "image_folder"] = _doc(
        "File format; `auto` picks from the extension or folder contents (`.txt`/`.md` files or a folder of "
        "them: `corpus`, plain text read in paragraph passages; a folder of label sub-folders: `text_folder`).",
        default="auto",
    )
    unwrap_lines: bool = _doc(
        "Corpus files: join lines broken inside a paragraph (hard-wrapped prose such as Project Gutenberg books).",
        default=False,
    )
    inputs: str = _doc(
        "The input kind (see `kit tasks --json`): `text`, `text_pair`, `tokens`, `tabular`, `image`, a plugin's "
        "own, or `auto`: the only kind the task takes, else detected from the data (an image folder or "
        "`data.image_column` -> image, two text columns -> text_pair, `data.tokens_column` -> tokens, "
        "`data.text_column` -> text, anything else -> tabular).",
        default="auto",
    )
    text_column: str | list[str] = _doc(
        "Column holding the text for text inputs; two columns (`[premise, hypothesis]`) for a pair of texts.",
        default="text",
    )
    tokens_column: str = _doc(
        "Column holding each example's words (a JSON list, or a text split at spaces) for the `tokens` kind.",
        default="tokens",
    )
    image_column: str = _doc("Column holding the image (path or array) for image inputs.", default="image")
    target: list[str] | None = _doc(
        "Target column(s); default: the task's own (`label` for classification).", default=None
    )
    features: list[str] | None = _doc(
        "Tabular feature columns; default: every column except the targets. An empty list and a target "
        "column are refused.",
        default=None,
    )
    categorical: list[str] | None = _doc(
        "Tabular columns to treat as categories even if they look numeric.", default=None
    )
    image_size: list[int] = _doc("Images are resized to [height, width].", default_factory=lambda: [28, 28])
    color_mode: Literal["grayscale", "rgb"] = _doc("Channels images are decoded to.", default="grayscale")
    batch_size: int = _doc("Examples per training step (global, across replicas).", default=32)
    shuffle_buffer: int = _doc("Examples held in the shuffle buffer.", default=10000)
    cache: bool | Literal["auto"] = _doc(
        "Hold the preprocessed examples in memory as tensors (fast: a batch is one gather) or read the file "
        "every epoch (`false`: memory stays flat however large the file); `auto` holds them when they take "
        "at most 1 GiB.",
        default="auto",
    )
    trim_padding: bool | Literal["auto"] = _doc(
        "Cut each batch of texts to its longest one instead of padding all to "
        "`model.sequence_length`; `auto`: on when training on CPU without XLA.",
        default="auto",
    )
    group_by_length: bool | Literal["auto"] = _doc(
        "Put texts of similar length in the same training batch (sorted within windows of 50 batches, batch "
        "order shuffled) so trimmed batches carry little padding; `auto`: with `trim_padding` when the "
        "examples are held in memory.",
        default="auto",
    )
    bad_rows: Literal["fail", "skip"] = _doc(
        "What to do with malformed rows: `fail` stops at the first one (with its line), `skip` counts and drops them.",
        default="fail",
    )
    tfds_data_dir: str | None = _doc("`data_dir` where TFDS data sets are prepared.", default=None)
    delimiter: str = _doc("CSV field delimiter: one character; `\\t` or `tab` for a tab.", default=",")
    encoding: str = _doc("Text encoding of CSV/JSONL/text files.", default="utf-8")


@dataclass
class ModelConfig:
    """The backbone and its size."""

    backbone: str = _doc(
        "`auto` (the input kind's default: bert-tiny for text, gpt-tiny for generation, mlp for tables, cnn for "
        "images), a built-in name (`kit backbones`), or a pretrained model: a keras-hub preset folder, a Hugging "
        "Face folder, a kit run directory (the backbone it saved), a .gguf file (generation), or a keras-hub "
        "preset name (online).",
        default="auto",
    )
    sequence_length: int = _doc("Tokens per text example (longer texts are truncated).", default=64)
    vocabulary_size: int = _doc(
        "Vocabulary learned from the training text (WordPiece for bert-*, byte-level BPE for gpt-*).", default=8000
    )
    lowercase: bool = _doc("Lower-case and strip accents before tokenising text.", default=True)
    freeze_backbone: bool = _doc(
        "Train only the task head: the keras-hub backbone's weights stay as loaded.", default=False
    )
    unfreeze_backbone_after: int | None = _doc(
        "Keep the keras-hub backbone frozen for this many epochs (the head learns first), then train it too.",
        default=None,
    )
    lora_rank: int | None = _doc(
        "Fine-tune a keras-hub backbone with LoRA adapters of this rank (its other weights frozen); "
        "the adapters are merged into model.keras and the preset, and also saved alone in model/adapters.lora.h5.",
        default=None,
    )
    hidden_units: list[int] = _doc(
        "Tabular MLP layer widths; `[]`: no hidden layer (a linear model).", default_factory=lambda: [256, 128]
    )
    dropout: float = _doc("Dropout rate in the backbone and head.", default=0.1)


@dataclass
class TrainConfig:
    """How the model is optimised and where it runs."""

    epochs: int | Literal["auto"] = _doc(
        "Passes over the training data; `auto`: 10 from scratch, 2 when fine-tuning a pretrained backbone.",
        default="auto",
    )
    steps_per_epoch: int | None = _doc("Steps per epoch; default: one pass over the data.", default=None)
    optimizer: Literal["adam", "adamw", "sgd"] = _doc("Optimizer.", default="adamw")
    learning_rate: float | Literal["auto"] = _doc(
        "Peak learning rate; `auto`: 1e-3 from scratch, 5e-5 when fine-tuning a pretrained backbone.",
        default="auto",
    )
    backbone_learning_rate: float | None = _doc(
        "Peak learning rate of the keras-hub backbone's weights (same schedule); default: `learning_rate`. "
        "A lower one fine-tunes the backbone gently while the new head learns fast.",
        default=None,
    )
    weight_decay: float = _doc("Decoupled weight decay (adamw); not applied to biases and norms.", default=0.01)
    schedule: Literal["constant", "cosine", "linear"] = _doc("Learning-rate decay after warm-up.", default="cosine")
    warmup_fraction: float | Literal["auto"] = _doc(
        "Fraction of all steps spent warming the learning rate up from 0; `auto`: 0 from scratch, "
        "0.1 when fine-tuning a pretrained backbone.",
        default="auto",
    )
    clip_norm: float | None = _doc("Clip gradients to this global norm; null disables.", default=1.0)
    early_stopping_patience: int | None = _doc(
        "Stop after this many epochs without improvement of `monitor`.", default=None
    )
    monitor: str = _doc(
        "Metric watched by early stopping and best-checkpoint selection: `loss` or a metric of the task, "
        "or its `val_` form (checked before training).",
        default="val_loss",
    )
    checkpoint_every_steps: int | None = _doc(
        "Also save the training state every N steps (it is always saved at epoch ends); a killed run resumes "
        "from the newest one.",
        default=None,
    )
    keep_checkpoints: int = _doc("Epoch checkpoints kept (oldest pruned first).", default=3)
    strategy: Literal["auto", "cpu", "mirrored", "multi_worker", "tpu"] = _doc(
        "tf.distribute strategy; `auto` picks TPU, several GPUs or TF_CONFIG workers when present.", default="auto"
    )
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = _doc(
        "Keras dtype policy; float32 is fastest on CPU, mixed precision is for GPU/TPU.", default="float32"
    )
    jit_compile: bool | Literal["auto"] = _doc(
        "XLA compilation: true, false or `auto` (Keras decides; with kit's deterministic ops that means off). "
        "`true` gives up bit-for-bit repeatable runs, which XLA does not support.",
        default="auto",
    )
    verbose: Literal["auto", 0, 1, 2] = _doc(
        "Keras progress output: 1 bar, 2 one line per epoch, 0 silent.", default="auto"
    )


@dataclass
class TuneConfig:
    """`kit tune`: the search space, the objective and the budget (not part of a run's config)."""

    space: dict[str, Any] = _doc(
        "Search space: config keys (dotted, e.g. `train.learning_rate`) mapped to `{low, high}` (with `log: true` "
        "or `step`), `{choices: [...]}` or a plain list of choices; `when: {KEY: VALUE}` samples a key only when "
        "another key of the space has that value. See docs/tune.md.",
        default_factory=dict,
    )
    objective: str = _doc(
        "What to optimise: a per-epoch metric (`val_loss`, `val_rmse`, `val_accuracy`...: the final model's "
        "value on the validation split, and prunable) or a final one from metrics.json (`validation.f1_macro`).",
        default="val_loss",
    )
    direction: Literal["auto", "minimize", "maximize"] = _doc(
        "Whether the objective is better low or high; `auto`: minimise losses and errors (loss, mae, rmse, "
        "perplexity), maximise scores (accuracy, f1, precision, recall, auc, r2).",
        default="auto",
    )
    trials: int | None = _doc(
        "Trials the study runs in all (finished, pruned and failed ones count; across every worker); null: until "
        "`timeout`.",
        default=20,
    )
    timeout: int | None = _doc("Seconds this worker keeps starting trials (null: no limit).", default=None)
    sampler: Literal["tpe", "random", "grid", "qmc"] = _doc(
        "How trials are chosen (Optuna's samplers): `tpe` (Bayesian, learns from earlier trials), `random`, "
        "`grid` (every combination; choices or stepped ranges only), `qmc` (quasi-random, even coverage).",
        default="tpe",
    )
    pruner: Literal["median", "hyperband", "successive_halving", "none"] = _doc(
        "When to stop an unpromising trial early, from its per-epoch metric (Optuna's pruners): `median` (worse "
        "than the median of earlier trials at the same epoch), `hyperband`, `successive_halving`, or `none`.",
        default="median",
    )
    prune_on: str | None = _doc(
        "Per-epoch metric the pruner watches; default: the objective's own (`val_X`), else `val_loss`.",
        default=None,
    )
    startup_trials: int = _doc(
        "Trials sampled at random and never pruned before the sampler and pruner use what they learned.",
        default=5,
    )
    warmup_epochs: int = _doc("Epochs every trial trains before it may be pruned (median pruner).", default=1)
    storage: str | None = _doc(
        "Where the study lives: a database URL shared by every worker (`postgresql://...`, `mysql://...`, "
        "`sqlite:///path.db`); default: `sqlite:///PROJECT/tune.db`.",
        default=None,
    )
    study: str | None = _doc("Study name in the storage; default: the project name.", default=None)
    seed: int | None = _doc(
        "Seed of the sampler (default: `seed`); each worker mixes in its host and slot, so no two sample alike "
        "and the first worker on a machine repeats its search.",
        default=None,
    )


@dataclass
class TrackingConfig:
    """Experiment tracking: where runs are logged besides their run folder (not part of a run's config)."""

    mlflow: bool = _doc(
        "Log every run (parameters, per-epoch and final metrics, plots, the model) to MLflow; needs "
        '`pip install "kit[mlflow]"`.',
        default=False,
    )
    uri: str | None = _doc(
        "MLflow tracking URI (`http://host:5000`, `sqlite:///path.db`, `databricks`...); default: "
        "MLFLOW_TRACKING_URI, else a local store in the project (`mlflow.db`, artifacts in `mlruns/`).",
        default=None,
    )
    experiment: str | None = _doc("MLflow experiment name; default: the project name.", default=None)


@dataclass
class Config:
    """A whole `kit.yaml`."""

    task: str = _doc("Task type, as listed by `kit tasks`.")
    data: DataConfig = _doc("Data section.")
    name: str | None = _doc("Project name (defaults to the folder name).", default=None)
    seed: int = _doc(
        "Seed for weights, shuffling and splits (0 to 4,294,967,295); the same seed gives the same run on CPU.",
        default=42,
    )
    plugins: list[str] = _doc("Project-local plugin modules (paths relative to the project).", default_factory=list)
    runs_dir: str | None = _doc(
        "Local folder that receives run directories (run-1, run-2...), outside the data folders; "
        "default: PROJECT/runs.",
        default=None,
    )
    model: ModelConfig = _doc("Model section.", default_factory=ModelConfig)
    train: TrainConfig = _doc("Training section.", default_factory=TrainConfig)
    options: dict[str, Any] = _doc("Options of the task type (see `kit tasks --json`).", default_factory=dict)
    tune: TuneConfig = _doc("Hyperparameter search for `kit tune` (ignored by `kit run`).", default_factory=TuneConfig)
    tracking: TrackingConfig = _doc("Experiment tracking (MLflow).", default_factory=TrackingConfig)

    # Where the config came from, and `model.backbone` parsed; not part of the YAML schema.
    source_file: Path | None = field(default=None, compare=False, repr=False, metadata={"internal": True})
    backbone_ref: Any = field(default=None, compare=False, repr=False, metadata={"internal": True})
    # Where each key came from (file and line, or a `--set`), so later checks can say so too.
    origin: Any = field(default=None, compare=False, repr=False, metadata={"internal": True})

    @property
    def project_dir(self) -> Path:
        return self.source_file.parent if self.source_file else Path.cwd()

    def resolve_path(self, value: str) -> str:
        """A data path relative to the project, made absolute; schemes pass through."""
        if is_scheme(value):
            return value
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else (self.project_dir / path).resolve())

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data, without `tune` and `tracking`: how to search and where runs are logged are
        not part of what a run trains (changing them must not stop a run from resuming)."""
        plain = _to_plain(self)
        del plain["tune"], plain["tracking"]
        return plain

    def hyperparameters(self) -> dict[str, Any]:
        """How this run trains, as dotted keys (`{"train.epochs": 3, ...}`): `to_dict()` flattened, without the
        keys that say where things are (data files, runs_dir, plugins). What trackers log as parameters."""
        return hyperparameters(self.to_dict())


# Keys that say where things are, not how the model was trained: not hyperparameters.
PATH_KEYS = frozenset({"data.train", "data.validation", "data.test", "data.tfds_data_dir", "runs_dir", "plugins"})


def hyperparameters(mapping: dict[str, Any]) -> dict[str, Any]:
    """A config mapping as dotted keys, without `PATH_KEYS`; an empty section has no keys."""
    return {key: value for key, value in dotted_keys(mapping).items() if key not in PATH_KEYS}


def dotted_keys(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys: {"a": {"b": 1}} -> {"a.b": 1}; an empty mapping has no keys."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(dotted_keys(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# ---------------------------------------------------------------- loading

# A kit.yaml is a few hundred bytes and a few dozen values. These bounds are far above any real config and far
# below what hurts: a "billion laughs" of nested aliases is refused before it is expanded.
MAX_CONFIG_BYTES = 1 << 20
MAX_VALUES = 10_000
MAX_DEPTH = 32


class _Where:
    """Says where a dotted key came from, for error messages: the file and line, or the `--set` that gave it."""

    def __init__(self, file: Path | None, lines: dict[str, int] | None = None, overrides: list[str] | None = None):
        self.file = file
        self.lines = lines or {}
        self.overrides = overrides or []
        # A user's config (kit.yaml, --set) gets every rule; a saved run's config only those it was trained under.
        self.strict = False
        self.values: dict[str, Any] = {}  # keys a `kit tune` trial set, with their values

    def __call__(self, key: str) -> str:
        given = next((k for k in self.values if key == k or key.startswith(k + ".")), None)
        if given is not None:
            return f"tune trial value {_shorten(given)}={_shorten(repr(self.values[given]))}, key '{_shorten(key)}'"
        item, shown = self.override_of(key), _shorten(key)
        if item is not None:
            return f"--set {_shorten(item)}, key '{shown}'"
        place = str(self.file) if self.file else "<config>"
        line = self.lines.get(key)
        return f"{place}, line {line}, key '{shown}'" if line else f"{place}, key '{shown}'"

    def override_of(self, key: str) -> str | None:
        """The last `--set` that set `key` or a section holding it (a later one replaces what it covers)."""
        found = None
        for item in self.overrides:
            name = _override_key(item)
            if key == name or key.startswith(name + "."):
                found = item
        return found


def _override_key(item: str) -> str:
    """The dotted key of a `--set key=value`, spaces around its parts removed."""
    return ".".join(part.strip() for part in item.partition("=")[0].split("."))


def load_config(
    path: str | Path, overrides: list[str] | tuple[str, ...] = (), values: dict[str, Any] | None = None
) -> Config:
    """Load and validate a project's config.

    Args:
        path: a project folder holding `kit.yaml`, or the YAML file itself.
        overrides: `dotted.key=value` strings applied after the file.
        values: dotted keys set last, as given (a `kit tune` trial's parameters).

    Returns:
        A validated `Config`.

    Raises:
        ConfigError: naming the file, key and line (or the `--set`) of the first problem.
    """
    file = find_config_file(path)
    raw, lines = parse_yaml(read_config_text(file), file)
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(raw, key, value, item)
    for key, value in (values or {}).items():
        set_dotted(raw, key, value)
    where = _Where(file, lines, list(overrides))
    where.strict = True
    where.values = dict(values or {})
    config = build_config(raw, where, source_file=file.resolve(), project_plugins=True)
    check_runs_dir(config, where)
    return config


def find_config_file(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        candidate = path / CONFIG_FILE
        if not os.path.lexists(candidate):
            raise ConfigError(
                f"No {CONFIG_FILE} in {path}. Create one with `kit new NAME`, or pass the path to a config file."
            )
        return _regular_file(candidate)
    if not os.path.lexists(path):
        raise ConfigError(
            f"No such project or config file: {path}. Pass a folder holding {CONFIG_FILE} or a YAML file."
        )
    return _regular_file(path)


def _regular_file(path: Path) -> Path:
    """`path` if it is a plain file of config size; anything else (a folder, a FIFO that would hang) is refused."""
    try:
        info = path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(
                f"{path} is a symbolic link that leads back to itself; point it at a YAML file."
            ) from None
        if path.is_symlink():
            raise ConfigError(f"{path} is a symbolic link to {os.readlink(path)}, which does not exist.") from None
        raise ConfigError(f"Cannot read {path}: {exc.strerror}.") from None
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{path} is a folder, not a YAML file. Move it away and write {CONFIG_FILE} as a file.")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{path} is not a regular file (a pipe, socket or device); kit reads configs from files.")
    if info.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path} is {info.st_size:,} bytes; a config is a few KB (at most {MAX_CONFIG_BYTES:,} bytes). "
            "Data belongs in data files named by data.train."
        )
    return path


def read_config_text(file: Path) -> str:
    """The text of a config file, which must be UTF-8 (a leading byte-order mark is allowed)."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"Cannot read {file}: {exc.strerror or exc}.") from None
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise ConfigError(f"{file} is UTF-16 text; save it as UTF-8 (most editors offer this under 'Save as').")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{file}, line {line}: byte 0x{data[exc.start]:02x} is not UTF-8 text; save the file as UTF-8."
        ) from None


def parse_yaml(text: str, file: Path | None) -> tuple[dict[str, Any], dict[str, int]]:
    """Parse YAML safely, returning the mapping and the line of every dotted key."""
    data, lines = _load_yaml(text, file)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{file or '<config>'}: expected a mapping of keys (task:, data:, ...) at the top, got {type(data).__name__}."
        )
    return data, lines


def _load_yaml(text: str, origin: Path | str | None) -> tuple[Any, dict[str, int]]:
    """Compose, check the shape (aliases, keys), then construct. `origin` is a file or the text of a `--set`."""
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None, {}
            shape = _Shape(loader.aliases, origin)
            shape.check(node)
            return loader.construct_document(node), shape.lines
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, text, origin) from None
    except RecursionError:
        raise ConfigError(f"{_place(origin)}: values are nested too deeply (at most {MAX_DEPTH} levels).") from None


def _yaml_error(exc: yaml.YAMLError, text: str, origin: Path | str | None) -> ConfigError:
    if isinstance(exc, yaml.reader.ReaderError):
        line = text[: exc.position].count("\n") + 1
        return ConfigError(
            f"{_place(origin, line)}: character U+{exc.character:04X} is not allowed in YAML; remove it."
        )
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if isinstance(origin, str):  # a --set value: one line, positions would point into the value
        return ConfigError(
            f"{origin}: invalid YAML: {problem}. Check the quoting: a list is [a, b], a mapping {{a: 1}}."
        )
    hint = "YAML indents with spaces, not tabs" if "'\\t'" in problem else "Check indentation and quoting"
    where = f", column {mark.column + 1}" if mark else ""
    return ConfigError(f"{_place(origin, mark.line + 1 if mark else None)}{where}: invalid YAML: {problem}. {hint}.")


def _place(origin: Path | str | None, line: int | None = None) -> str:
    """`FILE, line N` for a file; `--set ITEM` for an override (one line, so no line number)."""
    if isinstance(origin, str):
        return origin
    return f"{origin or '<config>'}, line {line}" if line else str(origin or "<config>")


class _Loader(yaml.SafeLoader):
    """The safe loader, remembering every use of an alias: composed nodes share objects and forget where."""

    def __init__(self, text: str):
        super().__init__(text)
        self.aliases: list[tuple[yaml.Node, str, int]] = []

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event() if self.check_event(yaml.AliasEvent) else None
        node = super().compose_node(parent, index)
        if event is not None:
            self.aliases.append((node, event.anchor, event.start_mark.line + 1))
        return node


STR_TAG = "tag:yaml.org,2002:str"
MERGE_TAG = "tag:yaml.org,2002:merge"
# What YAML 1.1 reads an unquoted key as, in words: `yes:` is a boolean, `1:` a number.
KEY_KINDS = {"bool": "true/false", "int": "a number", "float": "a number", "null": "null", "timestamp": "a date"}


class _Shape:
    """One walk over a composed YAML document, before anything is built from it.

    It refuses recursive aliases, aliases that expand past `MAX_VALUES` values,
    nesting past `MAX_DEPTH`, keys that are not text and keys given twice in
    one mapping (YAML would silently keep the last), and records the line of
    every dotted key. Shared nodes are walked once, so the walk is linear in
    the size of the text whatever the aliases expand to.
    """

    def __init__(self, aliases: list[tuple[yaml.Node, str, int]], origin: Path | str | None):
        self.aliases = aliases
        self.origin = origin
        self.sizes: dict[int, int] = {}
        self.open: set[int] = set()
        self.lines: dict[str, int] = {}

    def check(self, root: yaml.Node) -> None:
        total = self.size(root, "", 0)
        if total <= MAX_VALUES:
            return
        if not self.aliases:
            raise ConfigError(f"{_place(self.origin)}: holds {total:,} values; a config has at most {MAX_VALUES:,}.")
        _, anchor, line = max(self.aliases, key=lambda use: self.sizes.get(id(use[0]), 0))
        raise ConfigError(
            f"{_place(self.origin, line)}: YAML aliases (such as *{anchor}) expand this config to {total:,} "
            f"values; kit allows {MAX_VALUES:,}. Write the values out, or nest fewer aliases."
        )

    def size(self, node: yaml.Node, prefix: str | None, depth: int) -> int:
        """Values under `node` once aliases are expanded."""
        if id(node) in self.sizes:
            return self.sizes[id(node)]
        if id(node) in self.open:
            raise self._recursion(node)
        if depth > MAX_DEPTH:
            line = node.start_mark.line + 1
            raise ConfigError(f"{_place(self.origin, line)}: values are nested more than {MAX_DEPTH} levels deep.")
        self.open.add(id(node))
        total = 1 + sum(self._children(node, prefix, depth + 1))
        self.open.discard(id(node))
        self.sizes[id(node)] = total
        return total

    def _children(self, node: yaml.Node, prefix: str | None, depth: int) -> list[int]:
        if isinstance(node, yaml.SequenceNode):
            return [self.size(item, None, depth) for item in node.value]
        if not isinstance(node, yaml.MappingNode):
            return []
        seen: dict[str, int] = {}
        sizes = []
        for key_node, value_node in node.value:
            key = self._key(key_node, seen, prefix)
            dotted = None if key is None or prefix is None else prefix + key
            if dotted is not None:
                self.lines.setdefault(dotted, key_node.start_mark.line + 1)
            sizes.append(self.size(key_node, None, depth) + self.size(value_node, _child(dotted), depth))
        return sizes

    def _key(self, key_node: yaml.Node, seen: dict[str, int], prefix: str | None) -> str | None:
        """The key's text (None for a `<<` merge); refuses keys that are not text or come twice."""
        line = key_node.start_mark.line + 1
        if key_node.tag == MERGE_TAG:
            return None
        if not isinstance(key_node, yaml.ScalarNode):
            raise ConfigError(f"{_place(self.origin, line)}: a key must be text, not a list or mapping.")
        if key_node.tag != STR_TAG:
            kind = KEY_KINDS.get(key_node.tag.rsplit(":", 1)[-1], key_node.tag)
            raise ConfigError(
                f"{_place(self.origin, line)}: key {key_node.value!r} is read by YAML as {kind}, but keys are text; "
                f"quote it ('{key_node.value}':) or fix the key."
            )
        key = key_node.value
        if key in seen:
            lines = f" (lines {seen[key]} and {line})" if seen[key] != line else ""
            raise ConfigError(
                f"{_place(self.origin, line)}: key '{_visible((prefix or '') + key)}' is given twice{lines}; "
                "YAML would silently keep the last. Keep one."
            )
        seen[key] = line
        return key

    def _recursion(self, node: yaml.Node) -> ConfigError:
        anchor, line = next(((a, n) for used, a, n in self.aliases if used is node), ("?", node.start_mark.line + 1))
        return ConfigError(
            f"{_place(self.origin, line)}: alias *{anchor} is used inside the value it names (a recursive "
            f"structure); write the values out instead."
        )


def _child(dotted: str | None) -> str | None:
    return None if dotted is None else dotted + "."


def parse_override(item: str) -> tuple[str, Any]:
    """Split `a.b=value`, parsing value as a YAML scalar, list or mapping (checked as kit.yaml is)."""
    key, sep, text = item.partition("=")
    key = _override_key(item)
    if not sep or any(not part for part in key.split(".")):
        raise ConfigError(f"Bad override '{_shorten(item)}': expected dotted.key=value, e.g. --set train.epochs=3")
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"--set {_shorten(item)}: the value is {len(text):,} characters; too long for a config.")
    if not text.strip():
        return key, ""
    try:
        value, _ = _load_yaml(text, f"--set {_shorten(item)}")
    except ConfigError as exc:
        # A list, mapping or quoted text that does not parse is a typo to show; other text (`a: b: c`) is meant as is.
        if "invalid YAML" not in str(exc) or text.strip()[0] in "[{\"'":
            raise
        value = text
    if value is None and text.strip() not in YAML_NULLS:
        value = text  # `#` (a delimiter) reads as a YAML comment, so as null: the user meant the text
    return key, value


YAML_NULLS = {"null", "Null", "NULL", "~"}


def set_dotted(data: dict[str, Any], key: str, value: Any, item: str | None = None) -> None:
    """Set `a.b.c` in nested mappings, creating missing sections; a section that holds a value is refused."""
    parts = key.split(".")
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            section = ".".join(parts[: depth + 1])
            raise ConfigError(
                f"--set {_shorten(item or key)}: '{_visible(section)}' is {_describe(child)}, not a section, so it "
                f"has no key '{_visible(parts[depth + 1])}'. Set '{_visible(section)}' itself, or fix it in the file."
            )
        node = child
    node[parts[-1]] = value


def _shorten(text: str, limit: int = 80) -> str:
    text = _visible(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _visible(text: str) -> str:
    """`text` with invisible characters (zero-width spaces, control characters) shown as escapes."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)


# ------------------------------------------------------------- validation


def build_config(
    raw: dict[str, Any],
    where: _Where | None = None,
    source_file: Path | None = None,
    project_plugins: bool = False,
    reference: Any = None,
) -> Config:
    """Validate a plain mapping against the `Config` schema, parse `model.backbone`, settle `auto` training values.

    With `project_plugins`, the modules the config names in `plugins:` are loaded first (they may
    register backbones). Configs read back from a run folder never load them: a run folder is
    untrusted, and loading it must not run code; such a config also gets its backbone
    `reference` from the run (the pretrained folder it names may not exist on this machine).
    Without a strict `where` (from `load_config`), rules added after a run may have been trained
    (empty `features`, keys between sections) are not applied, so a saved run's config still loads.
    """
    where = where or _Where(None)
    config = _build_dataclass(Config, raw, "", where)
    config.source_file = source_file
    if project_plugins and config.plugins:
        from kit.plugins import get_plugins

        get_plugins().load_project_plugins(config.plugins, config.project_dir)
    config.backbone_ref = reference if reference is not None else backbone_reference(config, where)
    resolve_auto_training(config.train, config.backbone_ref.pretrained)
    if where.strict:
        check_data_section(config.data, where)
        check_unfreezing(config, where)
    config.origin = where
    return config


def backbone_reference(config: Config, where: _Where) -> Any:
    """`model.backbone` parsed against the built-in names plugins registered (`kit.references`)."""
    from kit.plugins import get_plugins
    from kit.references import parse_reference

    try:
        return parse_reference(config.model.backbone, config.project_dir, get_plugins().backbone_origins())
    except ConfigError as exc:
        raise ConfigError(f"{where('model.backbone')}: {exc}") from None


def check_unfreezing(config: Config, where: _Where) -> None:
    """A backbone unfrozen after the last epoch is never trained: say so rather than train the head alone."""
    after, epochs = config.model.unfreeze_backbone_after, config.train.epochs
    if after is not None and after >= epochs:
        raise ConfigError(
            f"{where('model.unfreeze_backbone_after')}: {after} is not below train.epochs ({epochs}), so the backbone "
            "would never be trained. Lower it, or use model.freeze_backbone: true to train the head alone."
        )


# `auto` training settings. Fine-tuning a pretrained backbone wants a learning rate ~20x lower,
# warm-up (the new head's first gradients are large) and few epochs (it over-fits fast);
# measured on MiniLM + rotten_tomatoes (README, "Fine-tuning a pretrained backbone").
AUTO_TRAINING = {
    "scratch": {"epochs": 10, "learning_rate": 1e-3, "warmup_fraction": 0.0},
    "pretrained": {"epochs": 2, "learning_rate": 5e-5, "warmup_fraction": 0.1},
}


def resolve_auto_training(train: TrainConfig, pretrained: bool) -> None:
    """Replace `auto` epochs, learning rate and warm-up by the defaults for scratch or pretrained models."""
    defaults = AUTO_TRAINING["pretrained" if pretrained else "scratch"]
    for name, value in defaults.items():
        if getattr(train, name) == "auto":
            setattr(train, name, value)


def _build_dataclass(cls: type, raw: Any, prefix: str, where: _Where) -> Any:
    section = prefix.rstrip(".") or "the top level"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where(prefix.rstrip('.'))}: expected a mapping for {section}, got {_describe(raw)}.")
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in raw:
        if key not in fields:
            raise ConfigError(f"{where(prefix + str(key))}: unknown key in {section}.{_unknown_hint(str(key), cls)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        dotted = prefix + name
        if name in raw:
            values[name] = _coerce(raw[name], hints[name], dotted, where)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where(dotted)}: required key is missing. {f.metadata.get('help', '')}".strip())
    return cls(**values)


def _unknown_hint(key: str, cls: type) -> str:
    """What to write instead of an unknown key: its section for a dotted one (`data.train:`), else the closest key."""
    head, dot, rest = key.partition(".")
    sections = {f.name for f in dataclasses.fields(cls) if dataclasses.is_dataclass(typing.get_type_hints(cls)[f.name])}
    if dot and head in sections:
        return f" Dotted keys are for --set; in YAML write the section: `{head}:` and, indented under it, `{rest}:`."
    return _did_you_mean(key, {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")})


def _did_you_mean(key: str, allowed: dict[str, Any]) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    odd = [c for c in key if not c.isascii()]
    if odd:  # a look-alike letter or an invisible character: the key reads right but is not
        named = ", ".join(f"U+{ord(c):04X} {unicodedata.name(c, 'unnamed')}" for c in dict.fromkeys(odd))
        hint += f" The key holds non-ASCII characters ({named}); retype it."
    return f"{hint} Allowed: {', '.join(sorted(allowed))}."


# Inclusive (lowest, highest) allowed values of numeric keys; None means unbounded. Every integer key has an
# upper bound: a value past it is a typo (batch_size: 1e20) that would otherwise overflow deep in TensorFlow.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "seed": (0, 2**32 - 1),  # NumPy's seeds are 32-bit
    "data.validation_fraction": (0, 0.99),
    "data.test_fraction": (0, 0.99),
    "data.batch_size": (1, 2**20),
    "data.shuffle_buffer": (1, 10**8),
    "data.image_size": (8, 4096),
    "model.sequence_length": (4, 2**17),
    "model.vocabulary_size": (16, 2**21),
    "model.lora_rank": (1, 4096),
    "model.hidden_units": (1, 2**16),
    "model.dropout": (0, 0.99),
    "model.unfreeze_backbone_after": (1, 10**6),
    "train.epochs": (1, 10**6),
    "train.steps_per_epoch": (1, 10**9),
    "train.learning_rate": (1e-12, 10),
    "train.backbone_learning_rate": (0, 10),
    "train.weight_decay": (0, 10),
    "train.warmup_fraction": (0, 1),
    "train.clip_norm": (1e-12, None),
    "train.early_stopping_patience": (0, 10**6),
    "train.checkpoint_every_steps": (1, 10**9),
    "train.keep_checkpoints": (1, 10**4),
    "tune.trials": (1, 10**6),
    "tune.timeout": (1, 10**8),
    "tune.startup_trials": (0, 10**6),
    "tune.warmup_epochs": (0, 10**6),
    "tune.seed": (0, 2**32 - 1),
}
# Keys not listed above (a task's options) still get a bound: what a 32-bit integer or a float32 holds.
INT_LIMIT = 2**31 - 1
FLOAT_LIMIT = 3.4e38


# ------------------------------------------------------------- single keys (kit tune's search space)

SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def key_type(key: str) -> Any | None:
    """The type of a dotted config key (`train.learning_rate` -> `float | 'auto'`); None when there is no such key.

    Task options (`options.NAME`) are typed by the task and have no schema here: `Any`.
    """
    head, _, rest = key.partition(".")
    if head == "options" and rest:
        return Any
    cls = SECTIONS.get(head) if rest else Config
    name = rest or head
    if cls is None or "." in name:
        return None
    fields = {f.name for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    hint = typing.get_type_hints(cls).get(name) if name in fields else None
    return None if hint is None or dataclasses.is_dataclass(hint) else hint


def config_keys() -> list[str]:
    """Every dotted key a value can be given for (sections' keys as `data.train`), for did-you-mean hints."""
    keys = [f.name for f in dataclasses.fields(Config) if key_type(f.name) is not None]
    for section, cls in SECTIONS.items():
        keys += [f"{section}.{f.name}" for f in dataclasses.fields(cls)]
    return keys


def did_you_mean(key: str, allowed: list[str]) -> str:
    """The "Did you mean 'x'?" hint (or nothing) for a key not in `allowed`."""
    close = difflib.get_close_matches(key, allowed, n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def check_value(key: str, value: Any, where: _Where) -> Any:
    """`value` checked as kit.yaml's `key` would be (type, range, per-key rules); raises ConfigError saying where."""
    return _coerce(value, key_type(key), key, where)


def _coerce(value: Any, hint: Any, key: str, where: _Where) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build_dataclass(hint, value, key + ".", where)
    try:
        result = _coerce_value(value, hint)
    except _Mismatch as exc:
        hint = " (YAML reads an empty value, `~` and text after `#` as null: quote text)" if value is None else ""
        raise ConfigError(f"{where(key)}: expected {exc.expected}, got {_describe(value)}{hint}.") from None
    _check_range(key, result, where)
    check = KEY_CHECKS.get(key)
    if check is None or result is None or (key in NEWER_RULES and not where.strict):
        return result
    return check(result, key, where)


def _check_range(key: str, value: Any, where: _Where) -> None:
    values = value if isinstance(value, list) else [value]
    for item in values:
        if isinstance(item, bool) or not isinstance(item, (int, float)):  # "auto", null, text
            continue
        low, high = _bounds(key, item)
        if (low is not None and item < low) or (high is not None and item > high):
            allowed = f"at least {_number(low)}" if high is None else f"between {_number(low)} and {_number(high)}"
            raise ConfigError(f"{where(key)}: must be {allowed}, got {_number(item)}.")


def _bounds(key: str, item: float) -> tuple[float | None, float | None]:
    low, high = RANGES.get(key, (None, None))
    limit = INT_LIMIT if isinstance(item, int) else FLOAT_LIMIT
    return (-limit if low is None else low), (limit if high is None else high)


def _number(value: float | None) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


class _Mismatch(Exception):
    def __init__(self, expected: str):
        self.expected = expected


def _coerce_value(value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        return _coerce_union(value, args)
    if origin is Literal:
        for option in args:
            if value == option and type(value) is type(option):
                return option
        raise _Mismatch(repr(args[0]) if len(args) == 1 else "one of " + ", ".join(repr(a) for a in args))
    if origin is list:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and args[0] is str:
            value = [value]  # `target: price` means `target: [price]`
        if not isinstance(value, list):
            raise _Mismatch(f"a list of {_type_name(args[0])}")
        return [_coerce_value(item, args[0]) for item in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch("a mapping")
        return dict(value)
    return _coerce_scalar(value, hint)


def _coerce_union(value: Any, args: tuple[Any, ...]) -> Any:
    if value is None and type(None) in args:
        return None
    expected = []
    for option in args:
        if option is type(None):
            expected.append("null")
            continue
        try:
            return _coerce_value(value, option)
        except _Mismatch as exc:
            expected.append(exc.expected)
    raise _Mismatch(" or ".join(expected))


def _coerce_scalar(value: Any, hint: Any) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch("true or false")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch("an integer")
    if hint is float:
        return _coerce_float(value)
    if hint is str:
        return _coerce_text(value)
    raise TypeError(f"unsupported config type {hint!r}")  # a bug in the schema, not user input


def _coerce_float(value: Any) -> float:
    number = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):  # YAML 1.1 reads `1e-3` as a string
        try:
            number = float(value)
        except ValueError:
            pass
    if number is None or not math.isfinite(number):
        raise _Mismatch("a finite number")
    return number + 0.0  # -0.0 is 0.0


def _coerce_text(value: Any) -> str:
    """Text that names something (a column, a file, a task): never empty, no control characters but tabs."""
    if not isinstance(value, str):
        raise _Mismatch("a string")
    if not value:
        raise _Mismatch("a non-empty string (remove the key for its default)")
    bad = next((c for c in value if unicodedata.category(c) == "Cc" and c != "\t"), None)
    if bad is not None:
        raise _Mismatch(f"text without control characters (U+{ord(bad):04X})")
    return value


def _type_name(hint: Any) -> str:
    return {str: "strings", int: "integers", float: "numbers"}.get(hint, str(hint))


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    text = _visible(repr(value))
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


# ------------------------------------------------------------- per-key rules


def _check_delimiter(value: str, key: str, where: _Where) -> str:
    """One character; `\\t` and `tab` (hard to type on a command line) mean a tab."""
    value = DELIMITER_NAMES.get(value.lower(), value)
    if len(value) != 1 or value in '\r\n"':
        raise ConfigError(
            f"{where(key)}: a CSV delimiter is one character (not a quote or a line break), got {value!r}. "
            "Write ',' or ';' or '|', or '\\t' (or tab) for tabs."
        )
    return value


DELIMITER_NAMES = {"\\t": "\t", "tab": "\t", "\\\\t": "\t"}


def _check_encoding(value: str, key: str, where: _Where) -> str:
    try:
        codec = codecs.lookup(value)
        if codec.name == "undefined":  # a codec whose every use raises
            raise LookupError(value)
    except LookupError:
        close = difflib.get_close_matches(value.lower(), ["utf-8", "utf-8-sig", "utf-16", "latin-1", "cp1252"], n=1)
        hint = f" Did you mean '{close[0]}'?" if close else " Common ones: utf-8, latin-1, cp1252."
        raise ConfigError(f"{where(key)}: unknown text encoding {value!r}.{hint}") from None
    if not getattr(codec, "_is_text_encoding", True):  # rot13, base64, zip: bytes to bytes, not bytes to text
        raise ConfigError(f"{where(key)}: {value!r} is not a text encoding; use one such as utf-8 or latin-1.")
    return value


def _check_image_size(value: list[int], key: str, where: _Where) -> list[int]:
    if len(value) != 2:
        raise ConfigError(f"{where(key)}: expected [height, width] (two integers), got {value!r}.")
    return value


def _unique_columns(value: list[str], key: str, where: _Where) -> list[str]:
    twice = next((item for i, item in enumerate(value) if item in value[:i]), None)
    if twice is not None:
        raise ConfigError(f"{where(key)}: names '{_visible(twice)}' twice; list each once.")
    return value


def _nonempty_columns(value: list[str], key: str, where: _Where) -> list[str]:
    if not value:
        default = DEFAULT_WHEN_UNSET[key]
        raise ConfigError(f"{where(key)}: an empty list names no column. Remove the key to use {default}.")
    return _unique_columns(value, key, where)


DEFAULT_WHEN_UNSET = {
    "data.target": "the task's own target (`label` for classification)",
    "data.features": "every column except the targets, or list the feature columns",
}


def _check_runs_dir_name(value: str, key: str, where: _Where) -> str:
    if is_scheme(value) or "://" in value:
        raise ConfigError(f"{where(key)}: runs are written to a local folder, got {value!r}.")
    return value


# Rules a run trained before them may break (`features: []` meant every column): saved runs still load.
NEWER_RULES = {"data.target", "data.features", "data.categorical", "plugins", "runs_dir"}
KEY_CHECKS: dict[str, Callable[[Any, str, _Where], Any]] = {
    "data.delimiter": _check_delimiter,
    "data.encoding": _check_encoding,
    "data.image_size": _check_image_size,
    "data.target": _nonempty_columns,
    "data.features": _nonempty_columns,
    "data.categorical": _unique_columns,
    "plugins": _unique_columns,
    "runs_dir": _check_runs_dir_name,
}


def check_data_section(data: DataConfig, where: _Where) -> None:
    """Rules between keys of the data section."""
    split = [name for name in ("validation", "test") if getattr(data, name) is None]
    fractions = sum(getattr(data, f"{name}_fraction") for name in split)
    if fractions >= 1:
        keys = " + ".join(f"data.{name}_fraction" for name in split)
        raise ConfigError(f"{where(f'data.{split[0]}_fraction')}: {keys} = {fractions:g} leaves no training rows.")
    outside = [c for c in data.categorical or [] if data.features is not None and c not in data.features]
    if outside:
        raise ConfigError(
            f"{where('data.categorical')}: names {', '.join(outside)}, not in data.features; add them there too."
        )


def check_runs_dir(config: Config, where: _Where) -> None:
    """`runs_dir` must be a folder (or not exist yet) outside every data folder: runs written into a folder of
    images or texts would be read back as training examples by the next run."""
    runs = Path(config.resolve_path(config.runs_dir or "runs"))
    existing = next(path for path in (runs, *runs.parents) if path.exists())
    if not existing.is_dir():
        raise ConfigError(f"{where('runs_dir')}: {existing} is a file, not a folder; choose a folder for runs.")
    for name, folder in _data_folders(config):
        if runs == folder or folder in runs.parents:
            raise ConfigError(
                f"{where('runs_dir')}: {runs} is inside data.{name} ({folder}): runs would be read as data. "
                "Choose a folder outside the data."
            )


def _data_folders(config: Config) -> list[tuple[str, Path]]:
    """The data sources that are local folders, by key."""
    sources = {name: getattr(config.data, name) for name in ("train", "validation", "test")}
    paths = {name: Path(config.resolve_path(s)) for name, s in sources.items() if s and not is_scheme(s)}
    return [(name, path) for name, path in paths.items() if os.path.isdir(path)]  # False where the OS refuses the name


def check_inputs(config: Config, targets: list[str], kind: str) -> None:
    """Refuse inputs that are a target (a model that reads the answer scores 1.0 and learns nothing)."""
    data, where = config.data, config.origin or _Where(config.source_file)
    for key in ("data.features", "data.categorical"):
        if getattr(data, key.split(".")[1]) and kind != "tabular":
            raise ConfigError(
                f"{where(key)}: names tabular feature columns, but these inputs are {kind}, which ignore it. "
                "Set data.inputs: tabular to use them, or remove the key."
            )
    used = {"text": ["data.text_column"], "image": ["data.image_column"]}.get(kind, [])
    used += ["data.features", "data.categorical"]
    for key in used:
        value = getattr(data, key.split(".")[1])
        named = [c for c in ([value] if isinstance(value, str) else value or []) if c in targets]
        if named:
            raise ConfigError(
                f"{where(key)}: names the target column {', '.join(named)}: a model that reads the answer learns "
                "nothing (test accuracy 1.0). Use other columns, or change data.target."
            )


def check_monitor(config: Config, task: Any) -> None:
    """`train.monitor` must be a value the run reports: `loss`, a task metric, or either's `val_` form."""
    names = task.metric_names()
    monitor = config.train.monitor
    if names is None:  # a metric kit cannot name in advance: Keras will say if the monitor is missing
        return
    reported = ["loss", *names]
    reported += [f"val_{name}" for name in reported]
    if monitor in reported:
        return
    close = difflib.get_close_matches(monitor, reported, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    where = config.origin or _Where(config.source_file)
    raise ConfigError(
        f"{where('train.monitor')}: '{_visible(monitor)}' is not reported by task '{config.task}'.{hint} "
        f"Reported: {', '.join(reported)}."
    )


def validate_options(
    options_cls: type | None, raw: dict[str, Any], task_name: str, file: Path | None, where: _Where | None = None
) -> Any:
    """Validate the `options:` mapping against a task's `Options` dataclass."""
    where = where or _Where(file)
    if options_cls is None:
        if raw:
            raise ConfigError(f"{where('options')}: task '{task_name}' takes no options, got {', '.join(raw)}.")
        return None
    return _build_dataclass(options_cls, raw, "options.", where)


# ------------------------------------------------------------- writing


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {
            f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if not f.metadata.get("internal")
        }
    if isinstance(obj, list):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    return obj


def resolved_dict(config: Config) -> dict[str, Any]:
    """The config as a plain mapping with data paths made absolute.

    Written to `config.yaml` in every run directory, it can be fed back to
    `kit run` unchanged from any working directory.
    """
    plain = config.to_dict()
    data = plain["data"]
    for key in ("train", "validation", "test", "tfds_data_dir"):
        if data.get(key):
            data[key] = config.resolve_path(data[key])
    plain["plugins"] = [config.resolve_path(p) if p.endswith(".py") else p for p in config.plugins]
    plain["runs_dir"] = config.resolve_path(config.runs_dir or "runs")
    if config.backbone_ref is not None and config.backbone_ref.path is not None:
        plain["model"]["backbone"] = str(config.backbone_ref.path)
    if not plain.get("name"):
        plain["name"] = config.project_dir.name
    return plain


def dump_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, allow_unicode=True)


def reference_markdown() -> str:
    """The config reference (every key, type, default and help) as Markdown."""
    out = []
    sections = (("top level", Config), ("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig))
    for title, cls in (*sections, ("tune", TuneConfig), ("tracking", TrackingConfig)):
        out.append(f"### `{title}`\n\n| key | type | default | meaning |\n|---|---|---|---|")
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.metadata.get("internal"):
                continue
            out.append(
                f"| `{f.name}` | {_hint_text(hints[f.name])} | {_default_text(f)} | {f.metadata.get('help', '')} |"
            )
        out.append("")
    return "\n".join(out)


def _hint_text(hint: Any) -> str:
    if dataclasses.is_dataclass(hint):
        return "section"
    return f"`{_type_text(hint)}`".replace("|", "\\|")


def _type_text(hint: Any) -> str:
    """`int | 'auto'`-style names: unions and literals written the way YAML users read them."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        return " | ".join(_type_text(arg) for arg in typing.get_args(hint))
    if typing.get_origin(hint) is Literal:
        return " | ".join(repr(arg) for arg in typing.get_args(hint))
    text = hint.__name__ if isinstance(hint, type) else str(hint)
    return text.replace("typing.", "").replace("NoneType", "None")


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return f"`{f.default!r}`".replace("|", "\\|")
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        return "" if dataclasses.is_dataclass(value) else f"`{value!r}`"
    return "required"
