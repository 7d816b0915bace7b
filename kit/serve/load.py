"""A bounded load generator for `kit serve` on this machine: closed-loop clients over keep-alive HTTP/1.1.

Each client sends its next request when the last one is answered, so
`concurrency` is the number of requests in flight. It is deliberately thin
(asyncio streams, no HTTP library) so that on a small machine the client
takes little of the CPU the server needs. Every request is bounded by
`timeout`; the run ends after `count` requests.

Example:
    >>> result = asyncio.run(load("127.0.0.1", 8000, "/predict", [b'{"text": "fine"}'], concurrency=8, count=400))
    >>> result.summary()   # {"requests": 400, "ok": 400, "per_second": ..., "p50_ms": ..., "p99_ms": ...}
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from kit.serve.monitoring import percentile


@dataclass
class Reply:
    """One request's outcome: its HTTP status (0 when no answer came) and the time it took."""

    status: int
    seconds: float
    body: bytes = b""
    error: str = ""


@dataclass
class LoadResult:
    replies: list[Reply] = field(default_factory=list)
    seconds: float = 0.0

    def statuses(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for reply in self.replies:
            counts[reply.status] = counts.get(reply.status, 0) + 1
        return counts

    def summary(self) -> dict[str, Any]:
        ok = sorted(reply.seconds for reply in self.replies if reply.status == 200)
        return {
            "requests": len(self.replies),
            "ok": len(ok),
            "statuses": self.statuses(),
            "seconds": self.seconds,
            "per_second": len(ok) / self.seconds if self.seconds else 0.0,
            "p50_ms": percentile(ok, 0.5) * 1000 if ok else None,
            "p99_ms": percentile(ok, 0.99) * 1000 if ok else None,
        }


def request_bytes(host: str, port: int, path: str, body: bytes, method: str = "POST") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def read_reply(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, whether the server keeps the connection open) of one HTTP/1.1 response."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if headers.get("transfer-encoding") == "chunked":
        body = await _chunked(reader)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, body, headers.get("connection", "").lower() != "close"


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
        parts.append(await reader.readexactly(size + 2))
        if size == 0:
            return b"".join(part[:-2] for part in parts)


class Client:
    """One keep-alive connection, reopened when the server closes it."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def send(self, payload: bytes, timeout: float) -> Reply:
        started = time.perf_counter()
        try:
            if self.streams is None:
                self.streams = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), timeout)
            reader, writer = self.streams
            writer.write(payload)
            status, body, keep = await asyncio.wait_for(read_reply(reader), timeout)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            await self.close()
            return Reply(0, time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}")
        if not keep:
            await self.close()
        return Reply(status, time.perf_counter() - started, body)

    async def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def load(
    host: str,
    port: int,
    path: str,
    bodies: Sequence[bytes],
    concurrency: int,
    count: int,
    timeout: float = 60.0,
    keep_bodies: bool = False,
) -> LoadResult:
    """Send `count` POSTs of `bodies` (in turn) to `path` from `concurrency` clients; every one bounded by `timeout`."""
    payloads = [request_bytes(host, port, path, body) for body in bodies]
    numbers = itertools.count()
    result = LoadResult()

    async def client() -> None:
        connection = Client(host, port)
        while (number := next(numbers)) < count:
            reply = await connection.send(payloads[number % len(payloads)], timeout)
            if not keep_bodies and reply.status == 200:
                reply.body = b""
            result.replies.append(reply)
        await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    return result
