"""A second local HTTP server that records whatever reaches it.

For "did the token leave for another host?" tests: point a redirect, a pagination
link or a client_config at ``listener.url`` and then look at ``listener.requests``::

    with RecordingListener() as other:
        gl.misbehave("redirect", location=other.url + "/api/v4/user/runners")
        ...
        assert all("PRIVATE-TOKEN" not in r.headers for r in other.requests)

Standard library only; every request is answered 200 ``{}``.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

__all__ = ["RecordedRequest", "RecordingListener"]


@dataclass
class RecordedRequest:
    """One request as received: ``path`` is the request target (query included)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def handle(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            super().handle()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        self.server.listener._add(
            RecordedRequest(self.command, self.path, dict(self.headers.items()), body)
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _record


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    listener: RecordingListener


class RecordingListener:
    """An HTTP server on 127.0.0.1 (a free port) that records every request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the listener is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def _add(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def start(self) -> RecordingListener:
        if self._server is None:
            server = _Server(("127.0.0.1", 0), _Handler)
            server.listener = self
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.01},  # stop() waits for the loop to see it
                name="recording-listener",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> RecordingListener:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
