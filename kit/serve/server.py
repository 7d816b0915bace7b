"""Running `kit serve`: load the run, check the port, and serve it on uvicorn until a signal stops it.

SIGTERM or Ctrl-C stops accepting connections, lets every request already
taken finish (including those waiting in the queue), then exits with status
0; a second Ctrl-C quits at once.

Example:
    >>> serve(Path("runs/run-1"), Options(max_batch_size=32), host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import contextlib
import errno
import signal
import socket
from pathlib import Path
from typing import Any, Iterator, Sequence

from kit.console import say
from kit.errors import UsageError
from kit.serve.app import Options


def require_stack() -> None:
    """The serve extra's packages, or how to install them."""
    import importlib.util

    missing = [name for name in ("starlette", "uvicorn", "prometheus_client") if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(
            f"kit serve needs {', '.join(missing)}, not installed here. Install the serving extra: "
            f"pip install 'kit[serve]'."
        )


def check_port(host: str, port: int) -> None:
    """Refuse a port that is taken before the (slow) model loads."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror})"
            raise UsageError(
                f"Port {port} on {host} {why}. Choose another with --port, or stop what holds it."
            ) from None


def check_options(options: Options, port: int) -> None:
    """Every bound is a positive number (a zero queue would refuse everything)."""
    for name, value in (("--max-batch-size", options.max_batch_size), ("--queue-size", options.queue_size),
                        ("--feedback-window", options.feedback_window), ("--drift-window", options.drift_window),
                        ("--max-body-kb", options.max_body_bytes)):  # fmt: skip
        if value < 1:
            raise UsageError(f"{name} must be at least 1, got {value}.")
    if options.max_wait_ms < 0:
        raise UsageError(f"--max-wait-ms must be 0 or more, got {options.max_wait_ms}.")
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be 0-65535, got {port}.")


def load(target: Path, options: Options, unsafe: bool = False, plugins: Sequence[str] = ()) -> Any:
    """The served model for a run directory or keras export: a `Predictor` or, for generation, a `Continuer`."""
    from kit.serve.model import Continuer, Predictor, open_run

    trained = open_run(target, unsafe, plugins)
    if trained.task.predicts:
        return Predictor(trained, options.max_batch_size)
    return Continuer(trained, options.max_batch_size)


def serve(
    target: Path,
    options: Options,
    host: str = "127.0.0.1",
    port: int = 8000,
    unsafe: bool = False,
    plugins: Sequence[str] = (),
    access_log: bool = False,
    graceful_timeout: float | None = 60.0,
) -> None:
    """Serve `target` until SIGTERM or Ctrl-C; return once every request taken has its answer."""
    import uvicorn

    from kit.serve.app import Service, make_app

    require_stack()
    check_options(options, port)
    check_port(host, port)
    served = load(target, options, unsafe, plugins)
    service = Service(served, options, name=str(target))
    config = uvicorn.Config(
        make_app(service), host=host, port=port, log_level="warning", access_log=access_log,
        timeout_graceful_shutdown=graceful_timeout, backlog=max(2048, options.queue_size),
    )  # fmt: skip
    server = _server_class()(config, service)
    say(
        f"kit: serving {target} ({served.trained.task.name}) on http://{host}:{port}/ - batches of up to "
        f"{options.max_batch_size} rows, queue of {options.queue_size}; GET /health answers 200 once warmed up."
    )
    server.run()
    if server.failure is not None:
        raise server.failure
    say(f"kit: stopped after answering {service.monitor.stats(0)['requests']} requests.")


def _server_class() -> type:
    import uvicorn

    class GracefulServer(uvicorn.Server):
        """uvicorn's server that, on SIGTERM/SIGINT, drains and then returns (exit 0) rather than re-raising."""

        def __init__(self, config: Any, service: Any):
            super().__init__(config)
            self.service = service
            self.failure: BaseException | None = None
            service.on_failure = self.fail

        def fail(self, exc: BaseException) -> None:
            """Warm-up failed: stop, and let `serve` raise the error."""
            from kit.errors import KitError, ModelError

            self.failure = exc if isinstance(exc, KitError) else ModelError(
                f"The model failed while warming up: {type(exc).__name__}: {str(exc)[:200]}"
            )  # fmt: skip
            self.should_exit = True

        def handle_exit(self, sig: int, frame: Any) -> None:
            if not self.should_exit:
                say(f"kit: {signal.Signals(sig).name}: no new requests; answering the {self.service.in_flight} taken.")
            self.service.stopping = True
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            handled = (signal.SIGINT, signal.SIGTERM)
            original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    return GracefulServer
