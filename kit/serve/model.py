"""The model `kit serve` runs: rows checked as `kit predict` checks them, batches run as one call.

`open_run` loads a run directory (or a `kit export --format keras` folder) with
`kit.inference.TrainedModel`: only installed plugins, model.keras in safe mode,
nothing from the folder ever run as code. `Predictor` answers rows for tasks
that predict (classification, regression, token classification, a plugin's);
`Continuer` continues prompts for tasks that generate (the task's
`generator()`, which for the built-in generation task is `kit generate`'s).

Checking happens on the event loop and is cheap (parsing values); tokenising
and the model run in the worker thread, inside one `tf.function`, so a batch
costs one graph call.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable, Sequence

import numpy as np

from kit.console import say
from kit.errors import KitError, ModelError, UsageError
from kit.rundir import RunDir

EXPORT_RECORD = "export.json"


class RequestError(Exception):
    """A request the server cannot take: answered with `status` and this message (one line)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------------ loading


def open_run(target: Path, unsafe: bool = False, plugins: Sequence[str] = ()) -> Any:
    """A `TrainedModel` for a run directory or a `kit export --format keras` folder.

    An export folder holds the run's model/ folder without its run.json: it is served from a
    private copy laid out as a run (removed when the process ends).
    """
    from kit.inference import TrainedModel

    target = Path(target)
    record = target / EXPORT_RECORD
    if target.is_dir() and record.is_file() and not RunDir(target).is_run():
        return TrainedModel(_staged_export(target, record), unsafe, plugins)
    return TrainedModel(target, unsafe, plugins)


def _staged_export(folder: Path, record: Path) -> Path:
    """A run laid out from an export folder that holds kit's model bundle, or the run the export names."""
    import atexit

    try:
        written = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        written = None
    written = written if isinstance(written, dict) else {}
    if not (folder / RunDir.BUNDLE).is_file():
        run = written.get("run")
        if isinstance(run, str) and RunDir(run).is_run():
            say(f"kit: {folder} is an export of {run}: serving that run.")
            return Path(run)
        raise ModelError(
            f"{folder} is a kit export (format {written.get('format')!r}) without kit's model bundle, and the run it "
            f"came from is not here. kit serve serves a run directory: its run.json and model/ folder are all it "
            f"needs (docs/serve.md). A SavedModel export is served by TensorFlow Serving."
        )
    staging = Path(tempfile.mkdtemp(prefix="kit-serve-"))
    atexit.register(shutil.rmtree, staging, True)
    run = RunDir(staging / "run")
    shutil.copytree(folder, run.model_dir, ignore=shutil.ignore_patterns("export*"))
    run.write_record({"status": "complete", "exported_from": str(folder.resolve())})
    return run.path


# ------------------------------------------------------------------ reading request bodies


def read_json(body: bytes) -> Any:
    """A request body as JSON; a key given twice in one object is refused, as `kit predict` refuses it."""
    from kit.data.sources import _DuplicateKey, _unique_keys

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError("The request body is not UTF-8 text. Send JSON encoded as UTF-8.") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise RequestError(
            f"The request body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})."
        ) from None
    except _DuplicateKey as exc:
        raise RequestError(f"Key '{exc.args[0]}' appears twice in one object; keep one.") from None
    except (RecursionError, ValueError) as exc:
        raise RequestError(f"The request body is unreadable JSON ({str(exc).split(';')[0][:80]}).") from None


def rows_of(value: Any) -> list[Any]:
    """The rows of a /predict body: `{"rows": [...]}`, a JSON array of rows, or one row object."""
    if isinstance(value, dict) and isinstance(value.get("rows"), list) and len(value) == 1:
        rows = value["rows"]
    elif isinstance(value, list):
        rows = value
    elif isinstance(value, dict):
        rows = [value]
    else:
        raise RequestError(
            f'Expected rows as JSON objects keyed by column, e.g. {{"rows": [{{"text": "..."}}]}}, got {_kind(value)}.'
        )
    if not rows:
        raise RequestError('The request holds no rows. Send {"rows": [{...}, ...]}, one object per example.')
    return rows


def _kind(value: Any) -> str:
    from kit.data.sources import json_type

    return json_type(value)


# ------------------------------------------------------------------ predicting rows


@dataclass
class Checked:
    """A request's rows, checked: parsed values (for drift) and encoded columns (for the model)."""

    parsed: list[dict[str, Any]]
    columns: dict[str, np.ndarray]
    group: Hashable = None  # image shapes: only same-shaped images batch together

    @property
    def size(self) -> int:
        return len(self.parsed)


@dataclass
class Answer:
    """A batch's predictions, and per row the (unknown, all) token counts of its text, for drift."""

    predictions: list[dict[str, Any]]
    tokens: list[tuple[int, int]] = field(default_factory=list)


class Predictor:
    """Rows in, `kit predict`'s predictions out, for a trained run whose task predicts."""

    generates = False

    def __init__(self, trained: Any, max_batch_size: int = 32):
        import tensorflow as tf

        from kit.backbone import needs_autograph
        from kit.inference import plain_model

        self.trained = trained
        self.fields = list(trained.kind.fields)
        self.columns = [f.column for f in self.fields]
        self.model = plain_model(trained.model)
        self.max_batch_size = max_batch_size
        self.unknown_id = unknown_token_id(trained.backbone)
        # Without AutoGraph's rewrite of the source unless a plugin's preprocessing needs it (kit.backbone).
        self.forward = tf.function(self._forward, reduce_retracing=True, autograph=needs_autograph(trained.backbone))

    def check(self, rows: list[Any]) -> Checked:
        """Parse every row with the run's fields, as `kit predict` does; a bad row is a `RequestError`."""
        from kit.data.fields import BadValue
        from kit.data.plan import parse_row
        from kit.data.sources import Row

        parsed = []
        for number, raw in enumerate(rows, start=1):
            if not isinstance(raw, dict):
                raise RequestError(f"row {number}: expected a JSON object (column -> value), got {_kind(raw)}.")
            try:
                values = parse_row(Row(number, self._pixels(raw, number)), self.fields)
            except BadValue as exc:
                raise RequestError(
                    f"row {number}: {str(exc).rstrip('.')}. The model reads: {', '.join(self.columns)}."
                ) from None
            parsed.append(dict(zip(self.columns, values)))
        return Checked(parsed, self._encode(parsed), self._shapes(parsed))

    def _pixels(self, raw: dict[str, Any], number: int) -> dict[str, Any]:
        """Images come as pixel arrays (nested lists); the server never reads files from its own disk."""
        from kit.data.fields import ImageField

        for f in self.fields:
            if not isinstance(f, ImageField) or f.column not in raw:
                continue
            value = raw[f.column]
            if isinstance(value, str):
                raise RequestError(
                    f"row {number}: column '{f.column}': send the image's pixels (a [height][width][channels] array "
                    f"of numbers 0-255), not a file path: the server does not read files from its disk for clients."
                )
            try:
                pixels = np.asarray(value, dtype=np.float64)
            except (ValueError, TypeError):
                raise RequestError(
                    f"row {number}: column '{f.column}': the pixel array is ragged or not numbers."
                ) from None
            if pixels.ndim in (2, 3) and pixels.size and (pixels.min() < 0 or pixels.max() > 255):
                raise RequestError(f"row {number}: column '{f.column}': pixel values must be 0-255.")
            raw = {**raw, f.column: pixels.astype(np.uint8)}
        return raw

    def _encode(self, parsed: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        from kit.data.fields import ImageField

        columns = {}
        for f in self.fields:
            values = [f.encode(row[f.column]) for row in parsed]
            if isinstance(f, ImageField):
                columns[f.column] = np.stack(values) if self._same_shape(values) else values
            else:
                columns[f.column] = np.asarray(values, dtype=object if f.dtype == "str" else f.dtype)
        return columns

    @staticmethod
    def _same_shape(values: list[Any]) -> bool:
        return len({np.shape(v) for v in values}) == 1

    def _shapes(self, parsed: list[dict[str, Any]]) -> Hashable:
        shapes = tuple(sorted({(c, np.shape(row[c])) for row in parsed for c in self.columns if _is_array(row[c])}))
        return shapes or None

    def run_jobs(self, jobs: list[Any]) -> list[Answer]:
        """The batcher's call: one `Answer` per job (`kit.serve.batching.Job` holding `Checked` rows)."""
        return self.run([job.payload for job in jobs])

    def run(self, batch: list[Checked]) -> list[Answer]:
        """Predict the rows of several requests as one model call (per `max_batch_size` rows)."""
        if any(self._mixed(c) for c in batch):
            return [self._run_one_by_one(c) if self._mixed(c) else self._run_rows([c]) for c in batch]
        return self._split(self._run_rows(batch), batch)

    def _mixed(self, checked: Checked) -> bool:
        """Images of several sizes in one request: they cannot be stacked into one batch."""
        return any(not isinstance(checked.columns.get(f.column), np.ndarray) for f in self.fields)

    def _run_one_by_one(self, checked: Checked) -> Answer:
        answer = Answer([])
        for i, row in enumerate(checked.parsed):
            columns = {name: np.stack([values[i]]) for name, values in checked.columns.items()}
            one = self._run_rows([Checked([row], columns)])
            answer.predictions += one.predictions
            answer.tokens += one.tokens
        return answer

    def _run_rows(self, batch: list[Checked]) -> Answer:
        import tensorflow as tf

        from kit.fused_dense import fused_dense_layers

        columns = {name: np.concatenate([c.columns[name] for c in batch]) for name in self.columns}
        rows = len(next(iter(columns.values())))
        answer = Answer([])
        for start in range(0, rows, self.max_batch_size):
            features = {
                name: tf.constant(values[start : start + self.max_batch_size]) for name, values in columns.items()
            }
            with fused_dense_layers():  # traced (on a new shape) with dense layers fused, as kit predict's
                outputs, counts = self.forward(features)
            plain = {name: value.numpy() for name, value in features.items()}
            answer.predictions += self.trained.predictions(np.asarray(outputs), plain)
            answer.tokens += [tuple(int(n) for n in row) for row in np.asarray(counts)]
        return answer

    @staticmethod
    def _split(answer: Answer, batch: list[Checked]) -> list[Answer]:
        answers, start = [], 0
        for checked in batch:
            end = start + checked.size
            answers.append(Answer(answer.predictions[start:end], answer.tokens[start:end]))
            start = end
        return answers

    def _forward(self, features: dict[str, Any]) -> Any:
        """Preprocessing and the model in one graph; also each row's (unknown, all) token counts."""
        import tensorflow as tf

        x = self.trained.backbone.preprocess_batch(features)
        outputs = self.model(x, training=False)
        rows = tf.shape(next(iter(features.values())))[0]
        if not isinstance(x, dict) or "token_ids" not in x or "padding_mask" not in x:
            return outputs, tf.zeros([rows, 2], tf.int32)
        real = tf.cast(x["padding_mask"], tf.int32)
        unknown = tf.cast(tf.equal(x["token_ids"], self.unknown_id if self.unknown_id is not None else -1), tf.int32)
        return outputs, tf.stack([tf.reduce_sum(unknown * real, axis=1), tf.reduce_sum(real, axis=1)], axis=1)

    def text_column(self) -> str | None:
        """The column whose tokens the unknown-token rate counts (the first text column)."""
        from kit.data.fields import TextField
        from kit.data.sequences import WordsField

        return next((f.column for f in self.fields if isinstance(f, (TextField, WordsField))), None)

    def warm_up(self) -> None:
        """Trace the graph for a lone row and for full batches, so no client waits for it."""
        row = warm_up_row(self.fields)
        for size in sorted({1, 2, self.max_batch_size}):
            self.run([self.check([row] * size)])

    def example(self) -> dict[str, Any]:
        """A row the page fills its form with."""
        return {column: _plain(value) for column, value in warm_up_row(self.fields).items()}


def _is_array(value: Any) -> bool:
    return isinstance(value, np.ndarray)


def _plain(value: Any) -> Any:
    return value.tolist() if isinstance(value, np.ndarray) else value


def warm_up_row(fields: list[Any]) -> dict[str, Any]:
    """A plausible input row built from what training learned (a mean, a known category...)."""
    from kit.data.fields import CategoryField, ImageField, NumberField
    from kit.data.sequences import WordsField

    row: dict[str, Any] = {}
    for f in fields:
        if isinstance(f, NumberField):
            row[f.column] = round(float(f.mean), 4)
        elif isinstance(f, CategoryField):
            row[f.column] = f.vocabulary[0] if f.vocabulary else "a"
        elif isinstance(f, WordsField):
            row[f.column] = ["Hello", "from", "kit"]
        elif isinstance(f, ImageField):
            row[f.column] = np.zeros((32, 32, 3), np.uint8)
        else:
            row[f.column] = "Hello from kit serve."
    return row


def unknown_token_id(backbone: Any) -> int | None:
    """The id of the tokenizer's unknown token ([UNK]), or None (byte-level BPE never produces one)."""
    tokenizer = getattr(backbone, "tokenizer", None) if hasattr(type(backbone), "tokenizer") else None
    if tokenizer is None:
        return None
    for attribute in ("oov_token", "unk_token"):
        token = getattr(tokenizer, attribute, None)
        if isinstance(token, str):
            try:
                return int(tokenizer.token_to_id(token))
            except (KeyError, ValueError, TypeError):
                continue
    return None


# ------------------------------------------------------------------ continuing prompts


@dataclass
class Prompts:
    """A /generate request, checked: its prompts and sampler settings."""

    prompts: list[str]
    settings: Any
    stream: bool = False
    single: bool = True  # sent as "prompt" (answered with "completion"), not "prompts"

    @property
    def size(self) -> int:
        return len(self.prompts)


@dataclass
class Completions:
    """A /generate request's completions (new text only), and how many tokens they took."""

    texts: list[str]
    tokens: int


class Continuer:
    """Prompts in, completions out (streamed token by token), for a run whose task generates."""

    generates = True
    columns: list[str] = []

    def __init__(self, trained: Any, max_batch_size: int = 8):
        self.generator = trained.task.generator(trained) if hasattr(trained.task, "generator") else None
        if self.generator is None:
            raise UsageError(
                f"The '{trained.task.name}' task neither predicts rows nor generates (Task.generator); kit serve has "
                f"no use for it."
            )
        self.trained = trained
        self.max_batch_size = max_batch_size

    def check(self, body: Any) -> Prompts:
        """A /generate body: {"prompt": "..."} or {"prompts": [...]}, "stream", and sampler settings."""
        if not isinstance(body, dict):
            raise RequestError(f'Expected a JSON object such as {{"prompt": "Once upon a time"}}, got {_kind(body)}.')
        settings = dict(body)
        stream = settings.pop("stream", False)
        if not isinstance(stream, bool):
            raise RequestError(f"'stream' must be true or false, got {stream!r}.")
        single = "prompt" in settings
        prompts = self._prompts(settings)
        if stream and len(prompts) != 1:
            raise RequestError("'stream' sends one prompt's tokens as they come; send one prompt, not 'prompts'.")
        try:
            checked = self.generator.settings(settings)
        except KitError as exc:  # the command line's words, with the JSON keys' names (--top-p -> top_p)
            raise RequestError(re.sub(r"--([a-z-]+)", lambda m: m.group(1).replace("-", "_"), str(exc))) from None
        if stream and checked.sampler == "beam":
            raise RequestError(
                "Beam search picks its best sequence at the end, so it cannot stream; set 'stream': false."
            )
        return Prompts(prompts, checked, stream, single)

    @staticmethod
    def _prompts(settings: dict[str, Any]) -> list[str]:
        if ("prompt" in settings) == ("prompts" in settings):
            raise RequestError('Give "prompt" (one text) or "prompts" (a list of texts), one of them.')
        prompts = [settings.pop("prompt")] if "prompt" in settings else settings.pop("prompts")
        if not isinstance(prompts, list) or not prompts:
            raise RequestError("'prompts' must be a non-empty list of texts.")
        for number, prompt in enumerate(prompts, start=1):
            if not isinstance(prompt, str) or not prompt.strip():
                raise RequestError(f"Prompt {number} is {str(prompt)[:40]!r}; a prompt must be non-empty text.")
        return prompts

    def group(self, prompts: Prompts) -> Hashable:
        """Requests batch together when they sample alike; a seeded one runs alone, so its seed repeats."""
        settings = prompts.settings
        if settings.seed is not None:
            return object()
        return tuple(sorted(vars(settings).items()))

    def run_jobs(self, jobs: list[Any]) -> None:
        """Continue the prompts of several jobs (one group) together; resolve each job, streaming its pieces."""
        try:
            completions = self._continue(jobs)
        except UsageError as exc:  # e.g. a prompt longer than the context: only its own request fails
            if len(jobs) > 1:
                for job in jobs:
                    self.run_jobs([job])
                return
            jobs[0].finish(error=RequestError(str(exc)))
            return
        start, tokens = 0, self.generator.generated_tokens
        for job in jobs:
            job.finish(Completions(completions[start : start + job.size], sum(tokens[start : start + job.size])))
            start += job.size

    def _continue(self, jobs: list[Any]) -> list[str]:
        prompts = [prompt for job in jobs for prompt in job.payload.prompts]
        settings = jobs[0].payload.settings
        if settings.sampler == "beam":
            return self.generator.generate(prompts, settings)
        owners = [job for job in jobs for _ in job.payload.prompts]
        completions = [""] * len(prompts)
        streamed = [job.payload.stream for job in jobs for _ in job.payload.prompts]
        for pieces in self.generator.steps(prompts, settings, streamed):
            for number, piece in enumerate(pieces):
                if piece:
                    completions[number] += piece
                    owners[number].emit(piece)
        return completions

    def warm_up(self) -> None:
        """Trace the decoding step for a lone prompt and for a batch."""
        settings = self.generator.settings({"sampler": "greedy", "max_new_tokens": 2})
        for prompts in (["Hello"], ["Hello"] * min(2, self.max_batch_size)):
            for _ in self.generator.steps(prompts, settings):
                pass

    def example(self) -> dict[str, Any]:
        return {"prompt": "Once upon a time"}
