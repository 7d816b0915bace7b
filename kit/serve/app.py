"""The HTTP API of `kit serve`, a Starlette application.

| route | what |
|---|---|
| `POST /predict` | rows (JSON objects keyed by column) -> `kit predict`'s predictions, with a request id |
| `POST /generate` | a prompt and sampler settings -> its completion; `"stream": true` sends tokens as server-sent events |
| `POST /feedback` | the true label or value of an earlier prediction, by request id (and row) |
| `GET /health` | 200 once the model is loaded and warmed up, 503 before and while stopping |
| `GET /metrics` | Prometheus metrics (`kit.serve.monitoring`) |
| `GET /stats`, `GET /info` | the page's live figures, and what the model takes |
| `GET /` | the page: try the model, watch the figures |

Every refusal is JSON `{"error": "one line"}`: 400 for a bad request (the
same words as `kit predict` / `kit generate`), 404 for feedback on an unknown
id, 503 when the queue is full, warming up or stopping.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator

from kit.serve.batching import Batcher, Closed, QueueFull
from kit.serve.drift import Drift
from kit.serve.model import Answer, RequestError, read_json, rows_of
from kit.serve.monitoring import Feedback, Monitor


@dataclass
class Options:
    """How the server batches, bounds and remembers (the `kit serve` options)."""

    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    queue_size: int = 256
    max_body_bytes: int = 1 << 20
    feedback_window: int = 500
    drift_window: int = 1000


class Service:
    """The model behind the routes: its batcher, monitor, drift and feedback, and whether it is ready."""

    def __init__(self, served: Any, options: Options, name: str = ""):
        self.served, self.options = served, options
        self.ready = False
        self.stopping = False
        self.in_flight = 0
        # A prompt is no training document (those are passages of thousands of characters): nothing to compare.
        self.drift = Drift([] if served.generates else served.trained.kind.fields, options.drift_window)
        self.feedback = Feedback(options.feedback_window)
        self.batcher = Batcher(
            served.run_jobs,
            options.max_batch_size,
            options.max_wait_ms,
            options.queue_size,
            on_batch=self._batch_done,
            before_start=self._warm_up,
        )
        info = {"run": name, "task": served.trained.task.name}
        self.monitor = Monitor(self.drift, self.feedback, lambda: self.batcher.depth, info)
        self.name = name
        self.on_failure: Any = None  # called with the error when warm-up fails (the server stops)

    def _warm_up(self) -> None:
        try:
            self.served.warm_up()
        except BaseException as exc:
            if self.on_failure is not None:
                self.on_failure(exc)
            raise
        self.ready = True
        self.monitor.ready.set(1)

    def _batch_done(self, rows: int, jobs: int, seconds: float) -> None:
        self.monitor.batch(rows, jobs, seconds)

    def refusal(self) -> RequestError | None:
        """Why no request is taken now (warming up, stopping), or None."""
        if self.stopping:
            return RequestError("The server is shutting down and takes no new requests.", 503)
        if not self.ready:
            return RequestError("The model is warming up; try again in a few seconds (GET /health says when).", 503)
        return None

    def queue(self, payload: Any, size: int, group: Any = None, streaming: bool = False) -> Any:
        """Put a job on the batcher's queue, or refuse with 503 at once."""
        try:
            return self.batcher.enqueue(payload, size, group, streaming)
        except QueueFull:
            raise RequestError(
                f"The server is busy: {self.options.queue_size} requests are waiting (--queue-size). Retry shortly.",
                503,
            ) from None
        except Closed:
            raise RequestError("The server is shutting down and takes no new requests.", 503) from None


async def read_body(request: Any, limit: int) -> bytes:
    """The request body, refused as soon as it passes `limit` bytes (never held whole when too large)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(_too_large(int(declared), limit))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(_too_large(size, limit, "over "))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int, over: str = "") -> str:
    return (
        f"The request body is {over}{size:,} bytes; this server takes at most {limit:,} (--max-body-kb). "
        f"Send fewer rows per request."
    )


def make_app(service: Service) -> Any:
    """The Starlette application serving `service`."""
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.routing import Route

    routes = Routes(service)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        service.batcher.start()  # warm-up runs first in the worker; /health says when it is done
        yield
        service.stopping = True
        await asyncio.get_running_loop().run_in_executor(None, service.batcher.close)

    return Starlette(
        routes=[
            Route("/", routes.page, methods=["GET"]),
            Route("/health", routes.health, methods=["GET"]),
            Route("/info", routes.info, methods=["GET"]),
            Route("/stats", routes.stats, methods=["GET"]),
            Route("/metrics", routes.metrics, methods=["GET"]),
            Route("/predict", routes.predict, methods=["POST"]),
            Route("/generate", routes.generate, methods=["POST"]),
            Route("/feedback", routes.feedback, methods=["POST"]),
        ],
        lifespan=lifespan,
    )


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Any:
    from starlette.responses import Response

    body = json.dumps(data, ensure_ascii=False, allow_nan=False).encode("utf-8")
    return Response(body, status, headers=headers, media_type="application/json")


class Routes:
    """The request handlers. Each answers JSON; none lets an exception reach the client as a traceback."""

    def __init__(self, service: Service):
        self.service = service

    # -- reading

    async def page(self, request: Any) -> Any:
        from starlette.responses import HTMLResponse

        from kit.serve.page import PAGE

        return HTMLResponse(PAGE)

    async def health(self, request: Any) -> Any:
        service = self.service
        refusal = service.refusal()
        status = "shutting down" if service.stopping else "ready" if service.ready else "warming up"
        body = {"status": status, "task": service.served.trained.task.name, "run": service.name}
        return _json(body, 503 if refusal else 200)

    async def info(self, request: Any) -> Any:
        served = self.service.served
        task = served.trained.task
        labels = getattr(task, "labels", None)
        body = {
            "run": self.service.name,
            "task": task.name,
            "generates": served.generates,
            "columns": served.columns,
            "targets": [f.column for f in task.fields],
            "labels": labels if isinstance(labels, list) else None,
            "example": served.example(),
            "max_batch_size": self.service.options.max_batch_size,
        }
        return _json(body)

    async def stats(self, request: Any) -> Any:
        service = self.service
        figures = service.monitor.stats(service.batcher.depth)
        figures.update(ready=service.ready, in_flight=service.in_flight)
        return _json(figures)

    async def metrics(self, request: Any) -> Any:
        from prometheus_client import CONTENT_TYPE_LATEST
        from starlette.responses import Response

        return Response(self.service.monitor.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    # -- predicting

    async def predict(self, request: Any) -> Any:
        return await self._answer("predict", request, self._predict)

    async def _predict(self, request: Any, request_id: str) -> Any:
        service = self.service
        if service.served.generates:
            raise RequestError('This server continues text (a generation run): POST /generate {"prompt": "..."}.')
        body = await read_body(request, service.options.max_body_bytes)
        checked = service.served.check(rows_of(read_json(body)))
        job = service.queue(checked, checked.size, checked.group)
        service.drift.observe(checked.parsed)
        answer: Answer = await job.future
        column = service.served.text_column()
        if column is not None:
            service.drift.observe_tokens(column, answer.tokens)
        service.feedback.remember(request_id, answer.predictions)
        predictions = [{"line": line, **p} for line, p in enumerate(answer.predictions, start=1)]
        return {"id": request_id, "predictions": predictions}, checked.size

    async def generate(self, request: Any) -> Any:
        return await self._answer("generate", request, self._generate)

    async def _generate(self, request: Any, request_id: str) -> Any:
        service = self.service
        served = service.served
        if not served.generates:
            raise RequestError(
                'This server predicts rows: POST /predict {"rows": [...]}; /generate is for generation runs.'
            )
        body = await read_body(request, service.options.max_body_bytes)
        prompts = served.check(read_json(body))
        job = service.queue(prompts, prompts.size, served.group(prompts), streaming=prompts.stream)
        if prompts.stream:
            first = await job.events.get()
            if first is None:  # ended before any text: a refusal (too long a prompt), or an empty completion
                await job.future
            return _Stream(self, job, first, request_id, prompts.prompts[0]), 1
        completions = await job.future
        service.monitor.tokens.inc(completions.tokens)
        if prompts.single:
            return {"id": request_id, "prompt": prompts.prompts[0], "completion": completions.texts[0]}, 1
        pairs = [{"prompt": p, "completion": c} for p, c in zip(prompts.prompts, completions.texts)]
        return {"id": request_id, "completions": pairs}, len(pairs)

    # -- feedback

    async def feedback(self, request: Any) -> Any:
        return await self._answer("feedback", request, self._feedback, needs_ready=False)

    async def _feedback(self, request: Any, request_id: str) -> Any:
        service = self.service
        body = read_json(await read_body(request, service.options.max_body_bytes))
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise RequestError('Send {"id": "<the prediction\'s id>", "line": 1, "<target column>": <true value>}.')
        line = body.get("line", 1)
        if isinstance(line, bool) or not isinstance(line, int):
            raise RequestError(f"'line' must be a row number (from 1), got {line!r}.")
        predicted = service.feedback.prediction(body["id"], line)
        if predicted is None:
            raise RequestError(
                f"No prediction with id {body['id'][:40]!r} and line {line} is remembered (the server keeps the last "
                f"{service.feedback.remembered:,} predicted rows; ids do not survive a restart).",
                404,
            )
        scored = score(service.served.trained.task.fields, body, predicted)
        if not service.feedback.add(body["id"], line, scored):
            raise RequestError(f"Feedback for id {body['id'][:40]!r} line {line} was given already.", 409)
        service.monitor.feedback_total.inc()
        return {"id": body["id"], "line": line, **scored, **service.feedback.figures()}, 1

    # -- answering

    async def _answer(self, endpoint: str, request: Any, handle: Any, needs_ready: bool = True) -> Any:
        """Run a handler; count it; turn refusals into JSON errors (and anything unforeseen into a 500)."""
        service = self.service
        started = time.perf_counter()
        request_id = request.headers.get("x-request-id", "")[:64] or uuid.uuid4().hex
        service.in_flight += 1
        try:
            refusal = service.refusal() if needs_ready or service.stopping else None
            if refusal is not None:
                raise refusal
            body, rows = await handle(request, request_id)
        except RequestError as exc:
            return self._refused(endpoint, exc, started, request_id)
        except Exception as exc:  # noqa: BLE001  a bug or a model failure: the client gets one line, the server goes on
            error = RequestError(f"The model failed on this request: {type(exc).__name__}: {str(exc)[:200]}", 500)
            return self._refused(endpoint, error, started, request_id)
        finally:
            service.in_flight -= 1
        if isinstance(body, _Stream):
            return body.response()
        service.monitor.answered(endpoint, 200, time.perf_counter() - started, rows)
        return _json(body, headers={"X-Request-ID": request_id})

    def _refused(self, endpoint: str, error: RequestError, started: float, request_id: str) -> Any:
        reasons = {400: "bad_request", 404: "unknown_id", 409: "repeated", 503: "busy", 500: "failed"}
        reason = reasons.get(error.status, "bad_request")
        if error.status == 503 and not self.service.ready:
            reason = "not_ready"
        self.service.monitor.failed(endpoint, reason)
        self.service.monitor.answered(endpoint, error.status, time.perf_counter() - started)
        headers = {"X-Request-ID": request_id, **({"Retry-After": "1"} if error.status == 503 else {})}
        return _json({"error": str(error)}, error.status, headers)


def score(fields: list[Any], body: dict[str, Any], predicted: dict[str, Any]) -> dict[str, Any]:
    """A label is right or wrong; numbers give their error in the target's units (mean over targets)."""
    from kit.data.fields import BadValue, LabelField, NumberField

    errors = []
    for f in fields:
        if not isinstance(f, (LabelField, NumberField)):
            raise RequestError("Feedback is kept for classification and regression runs (a label or numbers per row).")
        if f.column not in body:
            raise RequestError(
                f"The feedback has no '{f.column}': send the true value of the target column '{f.column}'."
            )
        try:
            value = f.parse(body[f.column])
            f.check(value)
        except BadValue as exc:
            raise RequestError(f"column '{f.column}': {exc}.") from None
        if isinstance(f, LabelField):
            return {"correct": value == predicted["label"]}
        errors.append(float(predicted[f.column]) - value)
    return {"error": sum(errors) / len(errors)}


class _Stream:
    """A /generate answer sent as server-sent events: `token` events, then `done` with the whole completion."""

    def __init__(self, routes: Routes, job: Any, first: str | None, request_id: str, prompt: str):
        self.routes, self.job, self.first = routes, job, first
        self.request_id, self.prompt = request_id, prompt
        self.started = time.perf_counter()

    def response(self) -> Any:
        from starlette.responses import StreamingResponse

        headers = {"X-Request-ID": self.request_id, "Cache-Control": "no-cache"}
        return StreamingResponse(self.events(), media_type="text/event-stream", headers=headers)

    async def events(self) -> AsyncIterator[bytes]:
        service = self.routes.service
        piece = self.first
        while piece is not None:
            yield _event("token", {"text": piece})
            piece = await self.job.events.get()
        try:
            completions = await self.job.future
        except Exception as exc:  # noqa: BLE001  the headers are sent: the error goes in the stream
            service.monitor.failed("generate", "failed")
            yield _event("error", {"error": str(exc)})
            return
        service.monitor.tokens.inc(completions.tokens)
        service.monitor.answered("generate", 200, time.perf_counter() - self.started, 1)
        yield _event("done", {"id": self.request_id, "prompt": self.prompt, "completion": completions.texts[0]})


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()
