"""HealthServer: one small HTTP endpoint per worker for Prometheus and the orchestrator.

``GET /metrics`` (Prometheus text format), ``GET /healthz`` (liveness: 200 while the
worker's loops run), ``GET /readyz`` (readiness: 200 once models are warmed up and the
consumer has joined its group; 503 otherwise, and again while draining).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST

from inferpool.lifecycle import Service
from inferpool.logs import get_logger

log = get_logger("worker.health")

MAX_REQUEST_LINE = 4096


class HealthServer(Service):
    def __init__(
        self,
        host: str,
        port: int,
        metrics: Callable[[], bytes],
        alive: Callable[[], bool],
        ready: Callable[[], bool],
    ) -> None:
        self._host, self._requested_port = host, port
        self._metrics, self._alive, self._ready = metrics, alive, ready
        self._server: asyncio.Server | None = None
        self.port = port

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._requested_port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("health.listening", host=self._host, port=self.port)

    async def _stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    def _respond(self, path: str) -> tuple[int, str, bytes]:
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, self._metrics()
        if path == "/healthz":
            alive = self._alive()
            return (200 if alive else 503), "text/plain", b"ok\n" if alive else b"dead\n"
        if path == "/readyz":
            ready = self._ready()
            return (200 if ready else 503), "text/plain", b"ready\n" if ready else b"not ready\n"
        return 404, "text/plain", b"not found: try /metrics, /healthz or /readyz\n"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            while (header := await asyncio.wait_for(reader.readline(), 5)) not in (
                b"\r\n",
                b"\n",
                b"",
            ):
                if len(header) > MAX_REQUEST_LINE:
                    break
            parts = line.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) >= 2 else "/"
            status, content_type, body = self._respond(path)
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError) as error:
            log.debug("health.request_failed", error=type(error).__name__)
        except Exception as error:  # an observer never breaks the worker
            log.warning("health.request_failed", error=repr(error))
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
