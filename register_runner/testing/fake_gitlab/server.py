"""The HTTP server: reads requests, hands them to the fake, writes the answers."""

from __future__ import annotations

import contextlib
import email.utils
import sys
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from .model import (
    VERSION,
    _json,
    _phrase,
)

if TYPE_CHECKING:
    from .fake import FakeGitLab

# ------------------------------------------------------------------------- server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    fake: FakeGitLab

    def handle_error(self, request, client_address):  # quiet: clients hang up all the time
        exc = sys.exc_info()[1]
        if not isinstance(exc, (OSError, ValueError)):
            traceback.print_exc()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeGitLab/" + VERSION
    sys_version = ""
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.fake._track(self.connection, False)

    def handle(self) -> None:
        # A reset connection, or one closed by down()/stop(), is not an error.
        with contextlib.suppress(OSError, ValueError):
            super().handle()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        body = self._read_body()
        fake = self.server.fake
        status, payload, headers = fake._serve(
            self.command, self.path, self.headers, body, self.client_address[0]
        )
        if fake._closing:
            self.close_connection = True
        data = b"" if status in (204, 304) or payload is None else _json(payload)
        lines = [
            f"HTTP/1.1 {status} {_phrase(status)}",
            "Server: " + self.server_version,
            "Date: " + email.utils.formatdate(usegmt=True),
        ]
        if status not in (204, 304):
            lines.append("Content-Type: application/json")
            lines.append(f"Content-Length: {len(data)}")
        for key, value in headers:
            lines.append(f"{key}: {value}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch
