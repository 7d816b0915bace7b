"""What `kit serve` measures: Prometheus metrics at /metrics, and the same figures as JSON for the page at /.

Metrics (all prefixed `kit_`):

| metric | type | what |
|---|---|---|
| `kit_requests_total{endpoint,status}` | counter | answered requests by HTTP status |
| `kit_request_latency_seconds{endpoint}` | histogram | time from arrival to answer |
| `kit_rows_total{endpoint}` | counter | rows predicted / prompts continued (throughput: `rate()`) |
| `kit_batch_rows` | histogram | rows per model call |
| `kit_batch_seconds` | histogram | time of one model call |
| `kit_queue_depth` | gauge | requests waiting for the model |
| `kit_errors_total{endpoint,reason}` | counter | bad_request, busy (503), not_ready, failed (500) |
| `kit_generated_tokens_total` | counter | tokens generated |
| `kit_feedback_total` | counter | true labels/values received |
| `kit_accuracy` | gauge | classification: share of correct predictions over the feedback window |
| `kit_feedback_mae`, `kit_feedback_rmse` | gauge | regression: errors over the feedback window, in the target's units |
| `kit_drift_mean_shift{feature}`, `kit_drift_psi{feature}` | gauge | numeric drift (see `kit.serve.drift`) |
| `kit_drift_unseen_category_rate{feature}` | gauge | categories training never saw |
| `kit_drift_text_length_mean{feature}`, `kit_drift_text_length_shift{feature}` | gauge | text length |
| `kit_drift_unknown_token_rate{feature}` | gauge | tokens the tokenizer did not know |
| `kit_ready` | gauge | 1 once warmed up |
"""

from __future__ import annotations

import collections
import math
import threading
import time
from typing import Any, Iterator

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
DRIFT_GAUGES = {  # figure -> (metric, help)
    "mean_shift": ("kit_drift_mean_shift", "Live mean minus training mean, in training standard deviations."),
    "psi": ("kit_drift_psi", "Population stability index of live values over the training deciles."),
    "unseen_rate": ("kit_drift_unseen_category_rate", "Share of live values of a category training never saw."),
    "length_mean": ("kit_drift_text_length_mean", "Mean live text length in characters."),
    "length_shift": ("kit_drift_text_length_shift", "Live mean text length minus training's, in training stds."),
    "unknown_token_rate": ("kit_drift_unknown_token_rate", "Share of live tokens the tokenizer did not know."),
}


class Feedback:
    """Predictions remembered by request id, and the true labels or values clients send back.

    Args:
        window: feedback items the rolling accuracy (or error) is computed over.
        remembered: predicted rows kept for feedback (the oldest requests are forgotten first).
    """

    def __init__(self, window: int = 500, remembered: int = 100_000):
        self.window: collections.deque[dict[str, Any]] = collections.deque(maxlen=window)
        self.predictions: collections.OrderedDict[str, list[Any]] = collections.OrderedDict()
        self.given: dict[str, set[int]] = {}
        self.rows = 0
        self.remembered = remembered
        self.count = 0
        self.lock = threading.Lock()

    def remember(self, request_id: str, predictions: list[dict[str, Any]]) -> None:
        with self.lock:
            self.predictions[request_id] = predictions
            self.rows += len(predictions)
            while self.rows > self.remembered and len(self.predictions) > 1:
                forgotten, rows = self.predictions.popitem(last=False)
                self.rows -= len(rows)
                self.given.pop(forgotten, None)

    def prediction(self, request_id: str, line: int) -> dict[str, Any] | None:
        """The prediction for row `line` (from 1) of request `request_id`, or None when not remembered."""
        with self.lock:
            rows = self.predictions.get(request_id)
        return rows[line - 1] if rows is not None and 1 <= line <= len(rows) else None

    def add(self, request_id: str, line: int, scored: dict[str, Any]) -> bool:
        """Record one row's score ({"correct": bool} or {"error": number}); False if that row had feedback."""
        with self.lock:
            lines = self.given.setdefault(request_id, set())
            if line in lines:
                return False
            lines.add(line)
            self.window.append(scored)
            self.count += 1
        return True

    def figures(self) -> dict[str, Any]:
        with self.lock:
            items = list(self.window)
        found: dict[str, Any] = {"feedback": self.count, "window": len(items)}
        correct = [item["correct"] for item in items if "correct" in item]
        errors = [item["error"] for item in items if "error" in item]
        if correct:
            found["accuracy"] = sum(correct) / len(correct)
        if errors:
            found["mae"] = sum(abs(e) for e in errors) / len(errors)
            found["rmse"] = math.sqrt(sum(e * e for e in errors) / len(errors))
        return found


class Recent:
    """The last few hundred answers, for the page's live figures (percentiles need raw values)."""

    def __init__(self, size: int = 2000, span: float = 10.0):
        self.latencies: collections.deque[tuple[float, float, int]] = collections.deque(maxlen=size)
        self.batches: collections.deque[tuple[float, int]] = collections.deque(maxlen=size)
        self.span = span
        self.lock = threading.Lock()

    def answered(self, seconds: float, rows: int) -> None:
        with self.lock:
            self.latencies.append((time.monotonic(), seconds, rows))

    def batch(self, rows: int) -> None:
        with self.lock:
            self.batches.append((time.monotonic(), rows))

    def figures(self) -> dict[str, Any]:
        since = time.monotonic() - self.span
        with self.lock:
            latencies = [(seconds, rows) for when, seconds, rows in self.latencies if when >= since]
            batches = [rows for when, rows in self.batches if when >= since]
        ordered = sorted(seconds for seconds, _ in latencies)
        return {
            "window_seconds": self.span,
            "requests_per_second": len(latencies) / self.span,
            "rows_per_second": sum(rows for _, rows in latencies) / self.span,
            "latency_p50_ms": percentile(ordered, 0.5) * 1000 if ordered else None,
            "latency_p99_ms": percentile(ordered, 0.99) * 1000 if ordered else None,
            "mean_batch_rows": sum(batches) / len(batches) if batches else None,
        }


def percentile(ordered: list[float], q: float) -> float:
    """The q-quantile of sorted values (nearest rank)."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class Monitor:
    """The server's Prometheus registry and the rolling figures behind /stats.

    Args:
        task: the run's task; drift: a `kit.serve.drift.Drift`; feedback: a `Feedback`.
        queue_depth: returns the requests waiting now.
    """

    def __init__(self, drift: Any, feedback: Feedback, queue_depth: Any, info: dict[str, str]):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry = CollectorRegistry()
        self.drift, self.feedback, self.recent = drift, feedback, Recent()
        self.requests = Counter("kit_requests", "Answered requests.", ["endpoint", "status"], registry=registry)
        self.latency = Histogram(
            "kit_request_latency_seconds", "Time from arrival to answer.", ["endpoint"], buckets=LATENCY_BUCKETS,
            registry=registry,
        )  # fmt: skip
        self.rows = Counter("kit_rows", "Rows predicted or prompts continued.", ["endpoint"], registry=registry)
        self.batch_rows = Histogram("kit_batch_rows", "Rows per model call.", buckets=BATCH_BUCKETS, registry=registry)
        self.batch_seconds = Histogram(
            "kit_batch_seconds", "Time of one model call.", buckets=LATENCY_BUCKETS, registry=registry
        )
        self.errors = Counter("kit_errors", "Requests not answered 200.", ["endpoint", "reason"], registry=registry)
        self.tokens = Counter("kit_generated_tokens", "Tokens generated.", registry=registry)
        self.feedback_total = Counter("kit_feedback", "True labels or values received.", registry=registry)
        self.ready = Gauge("kit_ready", "1 once the model is loaded and warmed up.", registry=registry)
        Gauge("kit_queue_depth", "Requests waiting for the model.", registry=registry).set_function(queue_depth)
        Gauge("kit_model_info", "The model served.", list(info), registry=registry).labels(**info).set(1)
        registry.register(_Computed(self))

    def answered(self, endpoint: str, status: int, seconds: float, rows: int = 0) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        if status == 200:
            self.rows.labels(endpoint).inc(rows)
            self.recent.answered(seconds, rows)

    def failed(self, endpoint: str, reason: str) -> None:
        self.errors.labels(endpoint, reason).inc()

    def batch(self, rows: int, jobs: int, seconds: float) -> None:
        self.batch_rows.observe(rows)
        self.batch_seconds.observe(seconds)
        self.recent.batch(rows)

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    def stats(self, queue_depth: int) -> dict[str, Any]:
        """Everything the page shows, as JSON."""
        errors = {}
        for metric in self.errors.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    key = f"{sample.labels['endpoint']} {sample.labels['reason']}"
                    errors[key] = int(sample.value)
        return {
            **self.recent.figures(),
            "queue_depth": queue_depth,
            "requests": _total(self.requests),
            "errors": errors,
            "tokens": _total(self.tokens),
            "feedback": self.feedback.figures(),
            "drift": self.drift.figures(),
        }


def _total(counter: Any) -> int:
    """A counter's value summed over its labels."""
    return int(sum(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total")))


class _Computed:
    """Gauges computed when scraped: rolling accuracy or error, and drift per feature."""

    def __init__(self, monitor: Monitor):
        self.monitor = monitor

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        feedback = self.monitor.feedback.figures()
        for key, text in (("accuracy", "Share of correct predictions over the feedback window."),
                          ("mae", "Mean absolute error over the feedback window."),
                          ("rmse", "Root mean squared error over the feedback window.")):  # fmt: skip
            if key in feedback:
                yield GaugeMetricFamily("kit_accuracy" if key == "accuracy" else f"kit_feedback_{key}", text,
                                        value=feedback[key])  # fmt: skip
        drift = self.monitor.drift.figures()
        for figure, (name, text) in DRIFT_GAUGES.items():
            gauge = GaugeMetricFamily(name, text, labels=["feature"])
            for column, figures in drift.items():
                if figures.get(figure) is not None:
                    gauge.add_metric([column], figures[figure])
            yield gauge
