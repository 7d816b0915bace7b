"""`kit serve`: a trained run over HTTP, with dynamic batching and monitoring.

- `kit.serve.model`: the run loaded as `kit predict` loads it; rows checked and predicted in batches;
  prompts continued (and streamed) for generation runs;
- `kit.serve.batching`: the bounded queue and the one worker thread that runs batches;
- `kit.serve.monitoring` and `kit.serve.drift`: Prometheus metrics, accuracy from feedback, input drift;
- `kit.serve.app`: the Starlette application; `kit.serve.page`: the page at `/`;
- `kit.serve.server`: uvicorn, graceful stops, the `kit serve` entry point.

Importing this package imports neither TensorFlow nor the web stack (`kit --help` stays fast).
"""

from __future__ import annotations

__all__: list[str] = []
