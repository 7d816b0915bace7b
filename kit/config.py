"""Project configuration: the `kit.yaml` schema, strict loading and overrides.

A project is a folder holding `kit.yaml`. Loading validates every key against
the dataclasses below: unknown keys (with a "did you mean"), wrong types and
missing required keys raise `ConfigError` naming the file, the key and the line.
`--set dotted.key=value` overrides are parsed as YAML scalars/lists and checked
against the same schema.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

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
        "Tabular feature columns; default: every column except the targets.", default=None
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
        "Cut each batch of texts to its longest one (rounded up to 8 tokens) instead of padding all to "
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
    delimiter: str = _doc("CSV field delimiter.", default=",")
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
    hidden_units: list[int] = _doc("Tabular MLP layer widths.", default_factory=lambda: [256, 128])
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
    monitor: str = _doc("Metric watched by early stopping and best-checkpoint selection.", default="val_loss")
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
class Config:
    """A whole `kit.yaml`."""

    task: str = _doc("Task type, as listed by `kit tasks`.")
    data: DataConfig = _doc("Data section.")
    name: str | None = _doc("Project name (defaults to the folder name).", default=None)
    seed: int = _doc("Seed for weights, shuffling and splits; the same seed gives the same run on CPU.", default=42)
    plugins: list[str] = _doc("Project-local plugin modules (paths relative to the project).", default_factory=list)
    runs_dir: str | None = _doc(
        "Folder that receives run directories (run-1, run-2...); default: PROJECT/runs.", default=None
    )
    model: ModelConfig = _doc("Model section.", default_factory=ModelConfig)
    train: TrainConfig = _doc("Training section.", default_factory=TrainConfig)
    options: dict[str, Any] = _doc("Options of the task type (see `kit tasks --json`).", default_factory=dict)

    # Where the config came from, and `model.backbone` parsed; not part of the YAML schema.
    source_file: Path | None = field(default=None, compare=False, repr=False, metadata={"internal": True})
    backbone_ref: Any = field(default=None, compare=False, repr=False, metadata={"internal": True})

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
        return _to_plain(self)


# ---------------------------------------------------------------- loading


class _Where:
    """Remembers the YAML line of every dotted key, for error messages."""

    def __init__(self, file: Path | None, lines: dict[str, int] | None = None):
        self.file = file
        self.lines = lines or {}

    def __call__(self, key: str) -> str:
        place = str(self.file) if self.file else "<config>"
        line = self.lines.get(key)
        return f"{place}, line {line}, key '{key}'" if line else f"{place}, key '{key}'"


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load and validate a project's config.

    Args:
        path: a project folder holding `kit.yaml`, or the YAML file itself.
        overrides: `dotted.key=value` strings applied after the file.

    Returns:
        A validated `Config`.

    Raises:
        ConfigError: naming the file, key and line of the first problem.
    """
    file = find_config_file(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read {file}: {exc}") from None
    raw, lines = parse_yaml(text, file)
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(raw, key, value)
        lines.pop(key, None)
    return build_config(raw, _Where(file, lines), source_file=file.resolve(), project_plugins=True)


def find_config_file(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        candidate = path / CONFIG_FILE
        if not candidate.is_file():
            raise ConfigError(
                f"No {CONFIG_FILE} in {path}. Create one with `kit new NAME`, or pass the path to a config file."
            )
        return candidate
    if not path.exists():
        raise ConfigError(
            f"No such project or config file: {path}. Pass a folder holding {CONFIG_FILE} or a YAML file."
        )
    return path


def parse_yaml(text: str, file: Path | None) -> tuple[dict[str, Any], dict[str, int]]:
    """Parse YAML safely, returning the mapping and the line of every dotted key."""
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else {}
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"{file or '<config>'}{where}: invalid YAML: {problem}. Check indentation and quoting."
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{file or '<config>'}: expected a mapping of keys (task:, data:, ...) at the top, got {type(data).__name__}."
        )
    lines: dict[str, int] = {}
    _collect_lines(node, "", lines)
    return data, lines


def _collect_lines(node: Any, prefix: str, lines: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            lines[key] = key_node.start_mark.line + 1
            _collect_lines(value_node, key + ".", lines)


def parse_override(item: str) -> tuple[str, Any]:
    """Split `a.b=value`, parsing value as a YAML scalar or list."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"Bad override '{item}': expected dotted.key=value, e.g. --set train.epochs=3")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text  # not YAML (e.g. "a: b: c"): keep the literal string
    return key, value


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


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
    """
    where = where or _Where(None)
    config = _build_dataclass(Config, raw, "", where)
    config.source_file = source_file
    if project_plugins and config.plugins:
        from kit.plugins import get_plugins

        get_plugins().load_project_plugins(config.plugins, config.project_dir)
    config.backbone_ref = reference if reference is not None else backbone_reference(config, where)
    resolve_auto_training(config.train, config.backbone_ref.pretrained)
    return config


def backbone_reference(config: Config, where: _Where) -> Any:
    """`model.backbone` parsed against the built-in names plugins registered (`kit.references`)."""
    from kit.plugins import get_plugins
    from kit.references import parse_reference

    try:
        return parse_reference(config.model.backbone, config.project_dir, get_plugins().backbone_origins())
    except ConfigError as exc:
        raise ConfigError(f"{where('model.backbone')}: {exc}") from None


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
            raise ConfigError(f"{where(prefix + str(key))}: unknown key in {section}.{_did_you_mean(str(key), fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        dotted = prefix + name
        if name in raw:
            values[name] = _coerce(raw[name], hints[name], dotted, where)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where(dotted)}: required key is missing. {f.metadata.get('help', '')}".strip())
    return cls(**values)


def _did_you_mean(key: str, allowed: dict[str, Any]) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"{hint} Allowed: {', '.join(sorted(allowed))}."


# Inclusive (lowest, highest) allowed values of numeric keys; None means unbounded.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "seed": (0, None),
    "data.validation_fraction": (0, 0.99),
    "data.test_fraction": (0, 0.99),
    "data.batch_size": (1, None),
    "data.shuffle_buffer": (1, None),
    "model.sequence_length": (4, None),
    "model.lora_rank": (1, None),
    "model.vocabulary_size": (16, None),
    "model.dropout": (0, 0.99),
    "train.epochs": (1, None),
    "train.steps_per_epoch": (1, None),
    "train.learning_rate": (1e-12, None),
    "train.backbone_learning_rate": (0, None),
    "model.unfreeze_backbone_after": (1, None),
    "train.weight_decay": (0, None),
    "train.warmup_fraction": (0, 1),
    "train.clip_norm": (1e-12, None),
    "train.early_stopping_patience": (0, None),
    "train.checkpoint_every_steps": (1, None),
    "train.keep_checkpoints": (1, None),
    "model.hidden_units": (1, None),
    "data.image_size": (8, None),
}


def _coerce(value: Any, hint: Any, key: str, where: _Where) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build_dataclass(hint, value, key + ".", where)
    try:
        result = _coerce_value(value, hint)
    except _Mismatch as exc:
        raise ConfigError(f"{where(key)}: expected {exc.expected}, got {_describe(value)}.") from None
    _check_range(key, result, where)
    return result


def _check_range(key: str, value: Any, where: _Where) -> None:
    low, high = RANGES.get(key, (None, None))
    if value is None or (low is None and high is None):
        return
    values = value if isinstance(value, list) else [value]
    for item in values:
        if isinstance(item, str):  # "auto"
            continue
        if (low is not None and item < low) or (high is not None and item > high):
            allowed = f"at least {low:g}" if high is None else f"between {low:g} and {high:g}"
            raise ConfigError(f"{where(key)}: must be {allowed}, got {item!r}.")


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
        return number
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch("a string")
    raise TypeError(f"unsupported config type {hint!r}")  # a bug in the schema, not user input


def _type_name(hint: Any) -> str:
    return {str: "strings", int: "integers", float: "numbers"}.get(hint, str(hint))


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def validate_options(options_cls: type | None, raw: dict[str, Any], task_name: str, file: Path | None) -> Any:
    """Validate the `options:` mapping against a task's `Options` dataclass."""
    if options_cls is None:
        if raw:
            raise ConfigError(f"{file or '<config>'}: task '{task_name}' takes no options, got {', '.join(raw)}.")
        return None
    return _build_dataclass(options_cls, raw, "options.", _Where(file))


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
    for title, cls in (("top level", Config), ("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig)):
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
