"""The search space of `kit tune`: `tune.space` in kit.yaml, checked like the rest of the config.

Each entry names a config key (dotted, as `--set` writes it) and what to try for it::

    tune:
      space:
        train.learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}
        model.dropout: {low: 0.0, high: 0.5, step: 0.1}
        model.hidden_units: [[64], [128, 64], [256, 128]]    # a list: the choices
        train.weight_decay: {low: 0.0, high: 0.1, when: {train.optimizer: adamw}}
        train.optimizer: {choices: [adam, adamw]}

Mistakes are `ConfigError`s naming the file, line and key, like every other
config mistake: a key kit.yaml does not have (with a did-you-mean), a range on
a key that is not a number, a value outside the key's own range, an empty or
impossible range, a condition on a key that is not in the space.

No TensorFlow and no Optuna here: the space is plain data until `sample`.
"""

from __future__ import annotations

import json
import math
import types
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin

from kit.config import Config, check_value, config_keys, did_you_mean, key_type
from kit.errors import ConfigError

# Keys that say what is trained on or where runs go: trials with other values would not be comparable.
NOT_TUNABLE = {
    "task": "the task type",
    "name": "the project name",
    "plugins": "the plugins",
    "runs_dir": "where runs are written",
    "data.train": "the training data",
    "data.validation": "the validation data",
    "data.test": "the test data",
    "data.tfds_data_dir": "where TFDS data lives",
    "data.validation_fraction": "the validation split the objective is measured on",
}
SPEC_KEYS = ("low", "high", "log", "step", "choices", "when")
# Grids larger than this are a typo (a step of 1e-6), not a search.
MAX_GRID = 100_000


@dataclass
class Param:
    """One key of the search space.

    Attributes:
        key: the config key, dotted (`train.learning_rate`); also the parameter's name in the study.
        kind: "float" or "int" (a range) or "choice".
        low, high, log, step: the range.
        choices: the values to choose from (any YAML value: numbers, text, lists).
        when: the condition, {space key: allowed values}; the key is sampled only when it holds.
    """

    key: str
    kind: Literal["float", "int", "choice"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] = field(default_factory=list)
    when: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def labels(self) -> list[Any]:
        """The choices as the study stores them: numbers, text and booleans as they are, lists as JSON text."""
        return [label_of(choice) for choice in self.choices]

    def value_of(self, label: Any) -> Any:
        """The config value for a label the study gave back."""
        return self.choices[self.labels.index(label)] if self.kind == "choice" else label

    def grid(self) -> list[Any] | None:
        """Every value the grid sampler tries (labels), or None for a continuous range."""
        if self.kind == "choice":
            return self.labels
        if self.kind == "int" and self.step is None:
            return list(range(int(self.low), int(self.high) + 1))
        if self.step is None:
            return None
        count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        values = [self.low + i * self.step for i in range(count)]
        return [int(v) for v in values] if self.kind == "int" else [round(v, 12) for v in values]

    def as_dict(self) -> dict[str, Any]:
        """The parameter as plain data (for the study's record of its space)."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind == "choice":
            out["choices"] = self.choices
        else:
            out.update(low=self.low, high=self.high, log=self.log, step=self.step)
        if self.when:
            out["when"] = self.when
        return out


def label_of(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value)


@dataclass
class Space:
    """The parsed search space: parameters in sampling order (a conditional one after what it depends on)."""

    params: list[Param]

    def sample(self, trial: Any) -> dict[str, Any]:
        """Ask an Optuna trial for a value of every parameter whose condition holds; config values by key."""
        chosen: dict[str, Any] = {}
        for param in self.params:
            if not all(chosen.get(key, _UNSET) in values for key, values in param.when.items()):
                continue
            chosen[param.key] = param.value_of(_suggest(trial, param))
        return chosen

    def grid(self) -> dict[str, list[Any]]:
        return {param.key: param.grid() or [] for param in self.params}

    def as_dict(self) -> dict[str, Any]:
        return {param.key: param.as_dict() for param in self.params}

    def keys(self) -> list[str]:
        return [param.key for param in self.params]


_UNSET = object()


def _suggest(trial: Any, param: Param) -> Any:
    if param.kind == "choice":
        return trial.suggest_categorical(param.key, param.labels)
    if param.kind == "int":
        return trial.suggest_int(param.key, int(param.low), int(param.high), step=int(param.step or 1), log=param.log)
    return trial.suggest_float(param.key, param.low, param.high, step=param.step, log=param.log)


# ------------------------------------------------------------------ parsing


def parse_space(config: Config, sampler: str | None = None) -> Space:
    """Check `tune.space` of a loaded config and return it parsed.

    Args:
        config: a config from `kit.config.load_config` (its `origin` says where each key is).
        sampler: the sampler that will use the space (`grid` needs every parameter to be finite).

    Returns:
        The `Space`, parameters in an order where conditions come first.

    Raises:
        ConfigError: naming the file, line and key of the first mistake.
    """
    where = config.origin
    raw = config.tune.space
    if not raw:
        raise ConfigError(
            f"{where('tune.space')}: the search space is empty; name at least one config key to search, e.g. "
            "`train.learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}` (see docs/tune.md)."
        )
    params = [_param(str(key), spec, where) for key, spec in raw.items()]
    _check_conditions(params, where)
    if (sampler or config.tune.sampler) == "grid":
        _check_grid(params, where)
    return Space(_ordered(params, where))


def _param(key: str, spec: Any, where: Any) -> Param:
    at = f"tune.space.{key}"
    _check_key(key, where)
    if isinstance(spec, list):
        spec = {"choices": spec}
    if not isinstance(spec, dict):
        raise ConfigError(
            f"{where(at)}: expected {{low, high}} (a range), {{choices: [...]}} or a list of choices, got "
            f"{type(spec).__name__} {spec!r}. A single value is not a search: set it in {key.split('.')[0]}: instead."
        )
    for name in spec:
        if name not in SPEC_KEYS:
            raise ConfigError(
                f"{where(f'{at}.{name}')}: unknown key.{did_you_mean(str(name), list(SPEC_KEYS))} "
                f"Allowed: {', '.join(SPEC_KEYS)}."
            )
    when = _when(spec.get("when"), f"{at}.when", where)
    if "choices" in spec:
        return _choice_param(key, spec, when, where)
    return _range_param(key, spec, when, where)


def _check_key(key: str, where: Any) -> None:
    at = f"tune.space.{key}"
    if key in NOT_TUNABLE:
        raise ConfigError(
            f"{where(at)}: {key} ({NOT_TUNABLE[key]}) cannot be searched: trials must train and be measured on "
            "the same data. Tune model and training keys."
        )
    if key.startswith("tune.") or key == "tune":
        raise ConfigError(f"{where(at)}: the tune section itself cannot be searched.")
    if key_type(key) is None:
        raise ConfigError(
            f"{where(at)}: '{key}' is not a config key.{did_you_mean(key, config_keys())} Space keys are dotted "
            "config keys as --set writes them (train.learning_rate, model.dropout, data.batch_size)."
        )


def _choice_param(key: str, spec: dict[str, Any], when: dict[str, list[Any]], where: Any) -> Param:
    at = f"tune.space.{key}"
    extra = [name for name in ("low", "high", "log", "step") if name in spec]
    if extra:
        raise ConfigError(f"{where(at)}: give either choices or a range (low/high), not both ({', '.join(extra)}).")
    choices = spec["choices"]
    if not isinstance(choices, list) or not choices:
        raise ConfigError(f"{where(at + '.choices')}: expected a non-empty list of values, got {choices!r}.")
    checked = [check_value(key, choice, _InSpace(where, key, ".choices")) for choice in choices]
    labels = [label_of(choice) for choice in checked]
    twice = next((c for i, c in enumerate(labels) if c in labels[:i]), _UNSET)
    if twice is not _UNSET:
        raise ConfigError(f"{where(at + '.choices')}: lists {twice!r} twice; list each choice once.")
    return Param(key, "choice", choices=checked, when=when)


def _range_param(key: str, spec: dict[str, Any], when: dict[str, list[Any]], where: Any) -> Param:
    at = f"tune.space.{key}"
    if "low" not in spec or "high" not in spec:
        missing = "low" if "low" not in spec else "high"
        raise ConfigError(
            f"{where(at)}: a range needs both low and high ({missing} is missing), or give choices: [...]."
        )
    kind = _number_kind(key, spec, where)
    low = check_value(key, spec["low"], _InSpace(where, key, ".low"))
    high = check_value(key, spec["high"], _InSpace(where, key, ".high"))
    if not isinstance(low, (int, float)) or not isinstance(high, (int, float)) or isinstance(low, bool):
        raise ConfigError(f"{where(at)}: low and high must be numbers, got {low!r} and {high!r}.")
    if kind == "int" and (low != int(low) or high != int(high)):
        raise ConfigError(f"{where(at)}: {key} is an integer key; low and high must be integers.")
    log, step = spec.get("log", False), _number(spec.get("step"))
    _check_range(key, kind, low, high, log, step, where)
    return Param(
        key,
        kind,
        float(low) if kind == "float" else int(low),
        float(high) if kind == "float" else int(high),
        bool(log),
        step,
        when=when,
    )


def _number(value: Any) -> Any:
    """YAML 1.1 reads `1e-3` (no dot) as text; a step written so is still the number."""
    try:
        return float(value) if isinstance(value, str) else value
    except ValueError:
        return value


def _number_kind(key: str, spec: dict[str, Any], where: Any) -> Literal["float", "int"]:
    """Whether a range on `key` gives floats or integers; a key that is not a number cannot take a range."""
    types = _numeric_types(key_type(key))
    if types is None:  # a task option: the numbers given decide
        values = [spec["low"], spec["high"], spec.get("step") or 1]
        return "int" if all(isinstance(v, int) and not isinstance(v, bool) for v in values) else "float"
    if float in types:
        return "float"
    if int in types:
        return "int"
    hint = key_type(key)
    raise ConfigError(
        f"{where(f'tune.space.{key}')}: a range (low/high) needs a numeric key, but {key} is "
        f"{_described_type(hint)}. List the values to try instead: choices: [...]."
    )


def _numeric_types(hint: Any) -> set[type] | None:
    """The number types a key takes (`float | 'auto'` -> {float}); None for `Any` (task options)."""
    if hint is Any:
        return None
    if get_origin(hint) in (Union, types.UnionType):
        return {t for t in get_args(hint) if t in (int, float)}
    return {hint} & {int, float}


def _described_type(hint: Any) -> str:
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if hint is str:
        return "text"
    if hint is bool:
        return "true/false"
    return f"of type {getattr(hint, '__name__', str(hint)).replace('typing.', '')}"


def _check_range(key: str, kind: str, low: float, high: float, log: Any, step: Any, where: Any) -> None:
    at = f"tune.space.{key}"
    if not isinstance(log, bool):
        raise ConfigError(f"{where(at + '.log')}: expected true or false, got {log!r}.")
    if low >= high:
        raise ConfigError(
            f"{where(at)}: low ({low:g}) must be below high ({high:g}); for one value, set the key itself."
        )
    if log and low <= 0:
        raise ConfigError(f"{where(at + '.log')}: a log scale needs low above 0, got {low:g}.")
    if step is None:
        return
    if isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0:
        raise ConfigError(f"{where(at + '.step')}: expected a positive number, got {step!r}.")
    if log:
        raise ConfigError(f"{where(at + '.step')}: give step or log: true, not both (Optuna samples one or the other).")
    if kind == "int" and step != int(step):
        raise ConfigError(f"{where(at + '.step')}: {key} is an integer key; the step must be an integer.")
    if step > high - low:
        raise ConfigError(
            f"{where(at + '.step')}: a step of {step:g} is larger than the range {low:g}..{high:g}, which then "
            "holds one value; lower the step or widen the range."
        )


class _InSpace:
    """A `where` for a value inside `tune.space.KEY`: messages name the space entry, not kit.yaml's own key."""

    strict = True

    def __init__(self, where: Any, key: str, suffix: str):
        self.where, self.key, self.suffix = where, key, suffix

    def __call__(self, key: str) -> str:
        return self.where(f"tune.space.{self.key}{self.suffix}")


def _when(raw: Any, at: str, where: Any) -> dict[str, list[Any]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(
            f"{where(at)}: expected a mapping of space keys to values, e.g. when: {{train.optimizer: adamw}}."
        )
    return {str(key): value if isinstance(value, list) else [value] for key, value in raw.items()}


def _check_conditions(params: list[Param], where: Any) -> None:
    by_key = {param.key: param for param in params}
    for param in params:
        for key, values in param.when.items():
            at = f"tune.space.{param.key}.when"
            other = by_key.get(key)
            if other is None or other.kind != "choice":
                what = "is not in the search space" if other is None else "is a range, not a list of choices"
                raise ConfigError(
                    f"{where(at)}: '{key}' {what}; a condition names another space key with choices."
                    + (did_you_mean(key, [p.key for p in params]) if other is None else "")
                )
            labels = other.labels
            missing = [v for v in values if label_of(v) not in labels]
            if missing:
                raise ConfigError(
                    f"{where(at)}: {key} is never {missing[0]!r} (its choices: "
                    f"{', '.join(repr(c) for c in other.choices)}), so {param.key} would never be searched."
                )


def _ordered(params: list[Param], where: Any) -> list[Param]:
    """Parameters so that every condition's key is sampled before the parameter it guards."""
    done: list[Param] = []
    pending = list(params)
    while pending:
        ready = [p for p in pending if all(key in {d.key for d in done} for key in p.when)]
        if not ready:
            raise ConfigError(
                f"{where(f'tune.space.{pending[0].key}.when')}: conditions go round in a circle "
                f"({', '.join(p.key for p in pending)}); one of them must not depend on the others."
            )
        done += ready
        pending = [p for p in pending if p not in ready]
    return done


def _check_grid(params: list[Param], where: Any) -> None:
    size = 1
    for param in params:
        values = param.grid()
        if values is None:
            raise ConfigError(
                f"{where(f'tune.space.{param.key}')}: tune.sampler: grid tries every value, so a float range "
                "needs a step (or choices); or use another sampler (tpe, random, qmc)."
            )
        size *= len(values)
    if size > MAX_GRID:
        raise ConfigError(
            f"{where('tune.sampler')}: the grid holds {size:,} combinations (at most {MAX_GRID:,}); coarsen the "
            "steps or use tpe or random."
        )
