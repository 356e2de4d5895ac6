"""A scripted HTTP server on 127.0.0.1: each (method, path) answers what a test wrote down,
and every request it got is kept. For tests of how single answers are read (status codes,
bodies, headers) over real HTTP; whole GitLab behaviour is fake_gitlab's.

    with Scripted() as server:
        server.post("/user/runners", status_code=201, json={"id": 1, "token": "glrt-x"})
        server.delete("/runners/5", [{"status_code": 429}, {"status_code": 204}])
        ... GitLab(ClientConfig(server.url, ...)) ...
        server.last_request.json(), server.call_count
"""

from __future__ import annotations

import contextlib
import json as json_module
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional, Union
from urllib.parse import urlsplit

API_PREFIX = "/api/v4"


@dataclass
class Sent:
    """One request the server received."""

    method: str
    path: str  # without /api/v4 and without the query
    query: str
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json_module.loads(self.body)


@dataclass
class _Route:
    answers: list[dict[str, Any]]
    served: int = 0

    def next(self) -> dict[str, Any]:
        # The last answer repeats, as requests-mock's response lists do.
        answer = self.answers[min(self.served, len(self.answers) - 1)]
        self.served += 1
        return answer


@dataclass
class Scripted:
    """The server; a context manager that starts and stops it."""

    routes: dict[tuple[str, str], _Route] = field(default_factory=dict)
    request_history: list[Sent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: Optional[ThreadingHTTPServer] = None

    # -- scripting ------------------------------------------------------------------------

    def answer(
        self,
        method: str,
        path: str,
        answers: Optional[Sequence[Mapping[str, Any]]] = None,
        **answer: Any,
    ) -> None:
        """``answers`` in turn (the last one repeats), or the one ``answer``: keys
        status_code (default 200), json, text, content (bytes), headers."""
        scripted = [dict(a) for a in answers] if answers else [answer]
        with self._lock:
            self.routes[(method.upper(), _api_path(path))] = _Route(scripted)

    def get(self, path: str, answers: Any = None, **answer: Any) -> None:
        self.answer("GET", path, answers, **answer)

    def post(self, path: str, answers: Any = None, **answer: Any) -> None:
        self.answer("POST", path, answers, **answer)

    def put(self, path: str, answers: Any = None, **answer: Any) -> None:
        self.answer("PUT", path, answers, **answer)

    def delete(self, path: str, answers: Any = None, **answer: Any) -> None:
        self.answer("DELETE", path, answers, **answer)

    # -- what was sent --------------------------------------------------------------------

    @property
    def call_count(self) -> int:
        return len(self.request_history)

    @property
    def last_request(self) -> Sent:
        return self.request_history[-1]

    # -- the server -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Scripted:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Scripted:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self, method: str, target: str, headers: Message, body: bytes) -> dict[str, Any]:
        parts = urlsplit(target)
        path = _api_path(parts.path)
        with self._lock:
            self.request_history.append(Sent(method, path, parts.query, headers, body))
            route = self.routes.get((method, path))
            if route is None:
                return {"status_code": 404, "json": {"message": f"not scripted: {method} {path}"}}
            return route.next()


def _api_path(path: str) -> str:
    return path[len(API_PREFIX) :] if path.startswith(API_PREFIX + "/") else path


def _encode(answer: Mapping[str, Any]) -> tuple[int, dict[str, str], bytes]:
    headers = {k: str(v) for k, v in (answer.get("headers") or {}).items()}
    body: Union[bytes, str] = b""
    if "json" in answer:
        body = json_module.dumps(answer["json"])
        headers.setdefault("Content-Type", "application/json")
    elif "text" in answer:
        body = answer["text"]
        headers.setdefault("Content-Type", "text/plain")
    elif "content" in answer:
        body = answer["content"]
    data = body.encode() if isinstance(body, str) else body
    return int(answer.get("status_code", 200)), headers, data


def _handler(server: Scripted) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as GitLab's front

        def handle_one_request(self) -> None:
            self.raw_requestline = self.rfile.readline(65537)
            if not self.raw_requestline or not self.parse_request():
                self.close_connection = True
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, headers, data = _encode(
                server._serve(self.command, self.path, self.headers, body)
            )
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            # A client that stops reading (the size cap, a deadline) is no server error.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the test reads request_history, not a log

    return Handler
