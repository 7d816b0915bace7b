"""Dynamic batching: requests that arrive together run as one model call, in one worker thread.

The event loop never runs the model. A request puts a `Job` on a bounded
queue and awaits its future; one worker thread takes what is queued (up to
`max_batch_size` rows of one group), runs it as one batch, and hands each job
its result back through the event loop. A full queue refuses at once
(`QueueFull`, which the server answers with 503), so memory stays bounded
however many clients push.

Waiting for a batch to fill costs latency, so the worker waits (at most
`max_wait_ms`, counted from the first queued request's arrival) only under
concurrency: when the batch it just ran held several requests. A lone client
is never delayed; under load, batches fill up.

Example:
    >>> batcher = Batcher(lambda jobs: [job.payload * 2 for job in jobs], max_batch_size=32)
    >>> batcher.start()
    >>> await batcher.submit(21)   # 42, run in the worker thread
    >>> batcher.close()
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence


class QueueFull(Exception):
    """The queue holds `queue_size` requests already: answer 503 and let the client retry."""


class Closed(Exception):
    """The server is shutting down and accepts no more work."""


@dataclass
class Job:
    """One request's work: what to run, how many rows it is, and where its result goes.

    Attributes:
        payload: what the batch function needs (checked, encoded rows; prompts and settings).
        size: rows it adds to a batch.
        group: jobs run together only when their groups are equal (image shapes, sampler settings).
        future: resolved with the job's result (or exception) on the event loop.
        loop: the event loop that awaits it.
        arrived: `time.perf_counter()` when it was queued.
        events: for streaming jobs, an `asyncio.Queue` the worker `emit`s pieces into.
    """

    payload: Any
    size: int
    group: Hashable
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    arrived: float = field(default_factory=time.perf_counter)
    events: asyncio.Queue | None = None

    def emit(self, item: Any) -> None:
        """Hand one streamed piece to the request (from the worker thread)."""
        if self.events is not None:
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        """Resolve the request's future (from the worker thread); a request whose client left is skipped."""

        def resolve() -> None:
            if self.events is not None:
                self.events.put_nowait(None)  # the stream's end, before its result
            if self.future.done():
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)

        self.loop.call_soon_threadsafe(resolve)


class Batcher:
    """A bounded queue of jobs and the one worker thread that runs them in batches.

    Args:
        run_batch: called in the worker thread with a list of jobs of one group (at most
            `max_batch_size` rows, or one larger job alone); returns one result per job, or
            resolves jobs itself (`job.finish`) and returns None. An exception fails every job of
            the batch with it; the worker carries on.
        max_batch_size: rows per model call.
        max_wait_ms: how long the worker may wait for a batch to fill, under concurrency.
        queue_size: requests that may wait; one more is refused with `QueueFull`.
        on_batch: told (rows, jobs, seconds) after every batch (metrics).
        before_start: run first in the worker thread (warm-up), before any job.
    """

    def __init__(
        self,
        run_batch: Callable[[list[Job]], Sequence[Any] | None],
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        queue_size: int = 256,
        on_batch: Callable[[int, int, float], None] | None = None,
        before_start: Callable[[], None] | None = None,
    ):
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.queue_size = queue_size
        self.on_batch = on_batch
        self.before_start = before_start
        self.queue: collections.deque[Job] = collections.deque()
        self.condition = threading.Condition()
        self.closing = False
        self.busy = False  # a batch is running
        self.concurrent = False  # the last batch held several jobs: wait for batches to fill
        self.thread: threading.Thread | None = None
        self.started = threading.Event()
        self.start_error: BaseException | None = None

    # -- the event loop's side

    def start(self) -> None:
        self.thread = threading.Thread(target=self._work, name="kit-serve-model", daemon=True)
        self.thread.start()

    @property
    def depth(self) -> int:
        """Requests waiting in the queue."""
        return len(self.queue)

    @property
    def in_flight(self) -> int:
        """Requests queued or running."""
        return len(self.queue) + (1 if self.busy else 0)

    def enqueue(self, payload: Any, size: int = 1, group: Hashable = None, streaming: bool = False) -> Job:
        """Queue a job from the event loop; raise `QueueFull` or `Closed` at once instead of waiting."""
        loop = asyncio.get_running_loop()
        job = Job(payload, size, group, loop.create_future(), loop, events=asyncio.Queue() if streaming else None)
        with self.condition:
            if self.closing:
                raise Closed()
            if len(self.queue) >= self.queue_size:
                raise QueueFull()
            self.queue.append(job)
            self.condition.notify()
        return job

    async def submit(self, payload: Any, size: int = 1, group: Hashable = None) -> Any:
        """Queue a job and wait for its result."""
        return await self.enqueue(payload, size, group).future

    def close(self, timeout: float | None = None) -> None:
        """Accept no more jobs, run every queued one, then stop the worker."""
        with self.condition:
            self.closing = True
            self.condition.notify_all()
        if self.thread is not None:
            self.thread.join(timeout)

    # -- the worker thread

    def _work(self) -> None:
        try:
            if self.before_start is not None:
                self.before_start()
        except BaseException as exc:  # noqa: BLE001  reported by the server, which then stops
            self.start_error = exc
            self.started.set()
            return
        self.started.set()
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._run(batch)

    def _next_batch(self) -> list[Job] | None:
        with self.condition:
            while not self.queue:
                if self.closing:
                    return None
                self.condition.wait()
            if self.concurrent:
                self._wait_to_fill()
            batch = self._take()
            self.busy = True
            return batch

    def _wait_to_fill(self) -> None:
        """Wait (holding the condition) until a batch is full, the oldest job's wait is over, or closing."""
        deadline = self.queue[0].arrived + self.max_wait
        while not self.closing and self._rows(self.queue[0].group) < self.max_batch_size:
            left = deadline - time.perf_counter()
            if left <= 0:
                return
            self.condition.wait(left)

    def _rows(self, group: Hashable) -> int:
        return sum(job.size for job in self.queue if job.group == group)

    def _take(self) -> list[Job]:
        """The oldest job, then later jobs of its group while they fit in one batch."""
        first = self.queue.popleft()
        batch, rows, left = [first], first.size, collections.deque()
        while self.queue:
            job = self.queue.popleft()
            if job.group == first.group and rows + job.size <= self.max_batch_size:
                batch.append(job)
                rows += job.size
            else:
                left.append(job)
        self.queue.extendleft(reversed(left))
        return batch

    def _run(self, batch: list[Job]) -> None:
        started = time.perf_counter()
        try:
            results = self.run_batch(batch)
        except BaseException as exc:  # noqa: BLE001  one bad batch must not stop the server
            results, error = None, exc
        else:
            error = None
        with self.condition:
            self.busy = False
            self.concurrent = len(batch) > 1
        if self.on_batch is not None:  # counted before the clients hear back
            self.on_batch(sum(job.size for job in batch), len(batch), time.perf_counter() - started)
        for number, job in enumerate(batch):
            if error is not None:
                job.finish(error=error)
            elif results is not None:
                job.finish(results[number])
