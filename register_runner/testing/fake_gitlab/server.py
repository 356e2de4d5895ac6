"""The HTTP server: reads requests, hands them to the fake, writes the answers."""

from __future__ import annotations

import contextlib
import email.utils
import os
import socket
import ssl
import sys
import time
import traceback
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Optional, Union

from .model import VERSION, _json, _phrase

if TYPE_CHECKING:
    from .fake import FakeGitLab

# A client that connects to the TLS port and says nothing must not hold a thread forever.
HANDSHAKE_TIMEOUT = 10.0
TLS_HANDSHAKE_RECORD = b"\x16"

# What nginx answers when plain HTTP reaches its TLS port.
PLAIN_HTTP_ON_TLS = (
    b"<html><head><title>400 The plain HTTP request was sent to HTTPS port</title></head>"
    b"<body><center><h1>400 Bad Request</h1>"
    b"<center>The plain HTTP request was sent to HTTPS port</center></body></html>\r\n"
)


@dataclass(frozen=True)
class TLSFiles:
    """PEM files for serving https; with ``client_ca`` a client certificate signed by
    that CA is required."""

    certfile: Union[str, os.PathLike]
    keyfile: Union[str, os.PathLike]
    client_ca: Optional[Union[str, os.PathLike]] = None

    def context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(os.fspath(self.certfile), os.fspath(self.keyfile))
        if self.client_ca is not None:
            context.load_verify_locations(cafile=os.fspath(self.client_ca))
            context.verify_mode = ssl.CERT_REQUIRED
        return context


class _Answer:
    """What the server writes for one request: ``body`` (bytes) wins over ``payload``
    (JSON); ``misbehaviour`` tells the server how to misdeliver it (see faults.py)."""

    __slots__ = ("body", "content_type", "headers", "misbehaviour", "payload", "status")

    def __init__(
        self,
        status: int,
        payload: Any = None,
        headers: Optional[list] = None,
        body: Optional[bytes] = None,
        content_type: str = "application/json",
    ):
        self.status = status
        self.payload = payload
        self.headers = list(headers or [])
        self.body = body
        self.content_type = content_type
        self.misbehaviour: Any = None

    @property
    def has_body(self) -> bool:
        return self.status not in (204, 304)

    def data(self) -> bytes:
        if not self.has_body:
            return b""
        if self.body is not None:
            return self.body
        return b"" if self.payload is None else _json(self.payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    fake: FakeGitLab
    ssl_context: Optional[ssl.SSLContext] = None

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Quiet: clients hang up all the time.
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
        self.plain_on_tls = False
        if self.server.ssl_context is not None:
            self._start_tls(self.server.ssl_context)
        super().setup()
        self.server.fake._track(self.connection, True)

    def _start_tls(self, context: ssl.SSLContext) -> None:
        # The handshake runs here, in the connection's own thread, not in accept():
        # a silent or plain-HTTP client then cannot stall the whole server.
        self.request.settimeout(HANDSHAKE_TIMEOUT)
        if self.request.recv(1, socket.MSG_PEEK) == TLS_HANDSHAKE_RECORD:
            self.request = context.wrap_socket(self.request, server_side=True)
        else:
            self.plain_on_tls = True
        self.request.settimeout(None)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.fake._track(self.connection, False)
            if isinstance(self.connection, ssl.SSLSocket):
                # socketserver closes the plain socket it accepted, which the TLS
                # socket replaced: close this one, or a dropped answer never ends.
                with contextlib.suppress(OSError):
                    self.connection.close()

    def handle(self) -> None:
        # A reset connection, or one closed by down()/stop(), is not an error.
        with contextlib.suppress(OSError, ValueError):
            if self.plain_on_tls:
                self._refuse_plain_http()
            else:
                super().handle()

    def _refuse_plain_http(self) -> None:
        self.rfile.readline(65537)
        while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
            pass
        head = (
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\n"
            f"Content-Length: {len(PLAIN_HTTP_ON_TLS)}\r\nConnection: close\r\n\r\n"
        )
        self.wfile.write(head.encode("latin-1") + PLAIN_HTTP_ON_TLS)
        self.close_connection = True

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
        answer = fake._serve(
            self.command, self.path, self.headers, body, self.client_address[0], self.requestline
        )
        if fake._closing:
            self.close_connection = True
        odd = answer.misbehaviour
        kind = odd.kind if odd is not None else None
        if kind == "drop_after":
            self.close_connection = True
            return
        if kind == "oversize":
            length, chunks = odd.oversize_body(answer)
        else:
            data = answer.data()
            length, chunks = len(data), [data]
        head = self._head(answer, length)
        if kind == "trickle":
            self._trickle(head, b"".join(chunks), odd.options)
            return
        self.wfile.write(head)
        for chunk in chunks:
            self.wfile.write(chunk)

    def _head(self, answer: _Answer, length: int) -> bytes:
        status = answer.status
        lines = [
            f"HTTP/1.1 {status} {_phrase(status)}",
            "Server: " + self.server_version,
            "Date: " + email.utils.formatdate(usegmt=True),
        ]
        if answer.has_body:
            lines.append("Content-Type: " + answer.content_type)
            # The full length even when the body trickles: the client keeps waiting.
            lines.append(f"Content-Length: {length}")
        for key, value in answer.headers:
            lines.append(f"{key}: {value}")
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _trickle(self, head: bytes, data: bytes, options: dict) -> None:
        """Send ``data`` (and ``head`` too with headers=True) ``chunk`` bytes per
        ``interval`` seconds, sleeping before each chunk."""
        size, interval = int(options["chunk"]), float(options["interval"])
        if not options["headers"]:
            self.wfile.write(head)
            head = b""
        slow = head + data
        for start in range(0, len(slow), size):
            time.sleep(interval)
            if self.server.fake._closing:
                raise ConnectionAbortedError("the fake is stopping")
            self.wfile.write(slow[start : start + size])

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch
