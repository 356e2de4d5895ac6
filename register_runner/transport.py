"""HTTP for gitlab.py, held to what the run can afford and to one origin.

* No redirect is ever followed: a front's 3xx would carry PRIVATE-TOKEN or a runner token
  in a re-sent body to another host.
* Every request goes to the configured origin; an answer whose ``Link`` names a next
  page elsewhere is refused (a front rewriting links would have the token follow).
* The run's deadline is a wall-clock bound: a watchdog shuts the sockets down when it
  passes, so an answer trickling one byte a second (headers included) cannot outlive it.
* Answers are read in full here, up to a size cap, never into unbounded memory.
* TLS uses one verifying context (tls.context), never a bundled default.

Every call, each page of a list too, uses ``http.client`` over one keep-alive connection
per worker (``Channel``): the only HTTP stack of the package, so each rule above is
written once, here. A call needs a URL, two headers and a JSON body; requests' layers
cost twice the time per call of everything else a steady sync does.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import ipaddress
import logging
import os
import re
import select
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Optional, cast
from urllib.parse import unquote, urlencode, urljoin, urlsplit

from . import tls

log = logging.getLogger("register_runner.gitlab")

MAX_ANSWER_BYTES = 4 * 1024 * 1024
CHUNK = 64 * 1024


class Deadline:
    """One overall budget for a run's API calls, shared by every worker. Sockets handed to
    ``watch`` are shut down when it passes, which ends any read blocked on them."""

    def __init__(self, seconds: float) -> None:
        self.start = time.monotonic()
        self.end = self.start + seconds
        self.seconds = seconds
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._timer: Optional[threading.Timer] = None

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def passed(self) -> bool:
        return self.remaining() <= 0

    def watch(self, sock: Any) -> None:
        if not isinstance(sock, socket.socket):
            return
        with self._lock:
            if not self.passed():
                self._sockets.add(sock)
                if self._timer is None:
                    # The timer holds the deadline weakly, and ends with it: a run done
                    # in-process (the Python API) leaves no thread asleep until its deadline.
                    self._timer = threading.Timer(
                        self.remaining(), _expire, args=(weakref.ref(self),)
                    )
                    self._timer.daemon = True
                    self._timer.start()
                    weakref.finalize(self, self._timer.cancel)
                return
        _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            sockets = list(self._sockets)
            self._sockets.clear()
        for sock in sockets:
            _shut(sock)


def _expire(deadline: weakref.ref[Deadline]) -> None:
    alive = deadline()
    if alive is not None:
        alive._expire()


def _shut(sock: socket.socket) -> None:
    # The plain socket's shutdown, also for an SSLSocket: its own would drop the SSL
    # object under a thread that is reading through it.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class Redirect(Exception):
    """GitLab (or a front) answered 3xx, or a link pointed to another origin."""

    def __init__(self, status: Optional[int], target: str) -> None:
        super().__init__(target)
        self.status = status
        self.target = target  # host:port, never a path or query that may carry a token


class Oversize(Exception):
    """The answer was larger than MAX_ANSWER_BYTES."""


class DeadlinePassed(Exception):
    """The run's deadline passed while this request was under way."""


class NetworkError(Exception):
    """The request failed on the way. ``connected``: a connection to GitLab (or its
    proxy) stood, so the request may have reached it."""

    def __init__(self, cause: BaseException, connected: bool) -> None:
        super().__init__(type(cause).__name__)
        self.cause = cause
        self.connected = connected


@dataclass(frozen=True)
class Answer:
    """A complete answer, read within the deadline and the size cap."""

    status: int
    headers: Any  # http.client.HTTPMessage (a test's dict): .get is enough
    body: bytes


class Channel:
    """One worker's keep-alive HTTP/1.1 connection to the one origin, through ``proxy``
    (``environment_proxy``'s, read once for all workers). Not thread-safe: one per worker
    thread."""

    def __init__(
        self,
        origin: str,
        deadline: Deadline,
        timeout: float,
        ssl_context: Any = None,
        *,
        proxy: Optional[Proxy],
    ) -> None:
        self.origin = origin_of(origin)
        self.deadline = deadline
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.proxy = proxy
        self._connection: Optional[http.client.HTTPConnection] = None

    def request(
        self,
        method: str,
        url: str,
        *,
        query: Optional[dict[str, Any]] = None,
        body: Optional[bytes] = None,
        headers: dict[str, str],
    ) -> Answer:
        self._refuse_elsewhere(url)
        remaining = self.deadline.remaining()
        if remaining <= 0:
            raise DeadlinePassed()
        timeout = min(self.timeout, remaining)
        parts = urlsplit(url)
        target = parts.path or "/"
        if query:
            target += "?" + urlencode(query)
        if self.proxy is not None and self.origin[0] == "http":
            target = f"{self.origin[0]}://{_netloc(self.origin)}{target}"  # a proxy's form
            headers = {**headers, **self.proxy.headers}
        started = time.monotonic()
        connection = self._connect(timeout)
        try:
            connection.request(method, target, body=body, headers=headers)
            response = connection.getresponse()
            answer = self._read(response, url)
        except (OSError, http.client.HTTPException) as error:
            self.close()
            if self.deadline.passed():
                raise DeadlinePassed() from None
            raise NetworkError(error, connected=True) from None
        except BaseException:
            self.close()
            raise
        if response.will_close:
            self.close()
        if self.deadline.passed():
            raise DeadlinePassed()  # a shut-down socket may look like a short, complete answer
        log.debug(
            "event=api method=%s path=%s status=%s ms=%.0f",
            method,
            parts.path,  # no query: nothing secret is logged
            answer.status,
            (time.monotonic() - started) * 1000,
        )
        return answer

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        connection = self._connection
        if connection is not None and connection.sock is not None and not _idle(connection.sock):
            # GitLab closed the kept-alive connection (or sent something unasked).
            self.close()
            connection = None
        if connection is None:
            connection = self._new_connection(timeout)
            try:
                connection.connect()
                if self.ssl_context is not None:
                    tls.check_peer_name(cast(ssl.SSLSocket, connection.sock), self.origin[1])
            except (OSError, http.client.HTTPException, ValueError) as error:
                connection.close()
                if self.deadline.passed():
                    raise DeadlinePassed() from None
                raise NetworkError(error, connected=False) from None
            self._connection = connection
        connection.sock.settimeout(timeout)  # type: ignore[union-attr]
        self.deadline.watch(connection.sock)
        return connection

    def _new_connection(self, timeout: float) -> http.client.HTTPConnection:
        scheme, host, port = self.origin
        if self.proxy is None:
            address, proxied = (host, port), False
        else:
            address, proxied = (self.proxy.host, self.proxy.port), True
        if scheme == "https":
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                *address, timeout=timeout, context=self.ssl_context
            )
            if proxied:
                connection.set_tunnel(host, port, headers=self.proxy.headers)  # type: ignore[union-attr]
        else:
            connection = http.client.HTTPConnection(*address, timeout=timeout)
        return connection

    def _refuse_elsewhere(self, url: str) -> None:
        if origin_of(url) != self.origin:
            raise Redirect(None, host_port(url))

    def _read(self, response: http.client.HTTPResponse, url: str) -> Answer:
        if 300 <= response.status < 400:
            location = response.getheader("Location") or ""
            raise Redirect(response.status, host_port(urljoin(url, location)))
        for link in _next_links(response.getheader("Link") or ""):
            self._refuse_elsewhere(urljoin(url, link))
        body = read_capped(
            response.getheader("Content-Length") or "",
            iter(lambda: response.read(CHUNK), b""),
            self.deadline,
        )
        return Answer(response.status, response.headers, body)


def read_capped(length: str, chunks: Iterable[bytes], deadline: Deadline) -> bytes:
    """An answer's body, read in full: Oversize past MAX_ANSWER_BYTES (``length``, its
    Content-Length, may say so before any is read), DeadlinePassed once the deadline
    has."""
    if length.isdigit() and int(length) > MAX_ANSWER_BYTES:
        raise Oversize()
    body = bytearray()
    for chunk in chunks:
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise Oversize()
        if deadline.passed():
            raise DeadlinePassed()
    return bytes(body)


def _next_links(link: str) -> list[str]:
    """The targets of ``rel="next"`` in a Link header (RFC 8288), as written."""
    return re.findall(r'<([^>]*)>\s*;[^,]*\brel="?next\b', link)


def _idle(sock: socket.socket) -> bool:
    """A kept-alive connection with nothing to read is still open: a closed one reads as
    readable (its end of file)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    headers: dict[str, str]


def environment_proxy(origin: str) -> Optional[Proxy]:
    """The proxy that HTTPS_PROXY/HTTP_PROXY/ALL_PROXY (and NO_PROXY) name for ``origin``,
    read once per GitLab of a run, not per worker or request; credentials in its url are
    sent to the proxy only."""
    if not any(name.lower().endswith("_proxy") for name in os.environ):
        return None  # the common case, without importing urllib.request
    import urllib.request

    scheme, host, _port = origin_of(origin)
    # Undocumented (and so not in typeshed), but what urllib's own proxy_bypass calls.
    if urllib.request.proxy_bypass_environment(host):  # type: ignore[attr-defined]
        return None
    proxies = urllib.request.getproxies_environment()
    url = proxies.get(scheme) or proxies.get("all")
    if not url:
        return None
    parts = urlsplit(url if "://" in url else f"http://{url}")
    headers = {}
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    return Proxy(parts.hostname or "", parts.port or 8080, headers)


def origin_of(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port


def _netloc(origin: tuple[str, str, int]) -> str:
    _, host, port = origin
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def host_port(url: str) -> str:
    scheme, host, port = origin_of(url)
    if not host:
        return "an unnamed host"
    return f"{scheme}://{_netloc((scheme, host, port))}"


def cleartext(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme != "http":
        return False
    host = parts.hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def network_failure(
    error: BaseException, url: str, timeout: float, connected: bool
) -> tuple[str, bool, bool]:
    """(one full line, whether the request may have reached GitLab, whether GitLab is
    simply not there: refused or not in DNS). ``connected``: whether a connection stood
    when it failed."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    described = tls.describe(error, host, port)
    if described:
        return f"TLS: {described}", False, False
    chain = tls.causes(error)
    if any(isinstance(c, socket.gaierror) for c in chain):
        return f"cannot connect: host {host} does not resolve", False, True
    if any(isinstance(cause, ConnectionRefusedError) for cause in chain):
        return f"cannot connect: connection refused by {host}:{port}", False, True
    timed_out = any(isinstance(c, socket.timeout) for c in chain)
    if not connected:
        if timed_out:
            reason = f"cannot connect: no connection to {host}:{port} within {timeout:g} s"
            return reason, False, False
        errors = [c for c in chain if isinstance(c, OSError) and c.strerror]
        why = (errors[0].strerror or "").lower() if errors else "failed"
        return f"cannot connect to {host}:{port}: {why}", False, True
    if timed_out:
        return f"no answer from {host}:{port} within {timeout:g} s", True, False
    closed = f"{host}:{port} closed the connection before answering in full"
    if parts.scheme == "https":
        # Under TLS 1.3 a front that wants a client certificate often just hangs up.
        closed += (
            " (if a TLS front requires a client certificate: set tls_cert_file and tls_key_file)"
        )
    return closed, True, False
