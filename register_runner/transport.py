"""HTTP for gitlab.py, held to what the run can afford and to one origin.

* No redirect is ever followed: a front's 3xx would carry PRIVATE-TOKEN (requests strips
  only Authorization across hosts) or a runner token in a re-sent body to another host.
* Every request goes to the configured origin; a pagination link elsewhere is refused.
* The run's deadline is a wall-clock bound: a watchdog shuts the sockets down when it
  passes, so an answer trickling one byte a second (headers included) cannot outlive it.
* Answers are read in full here, up to a size cap, never into unbounded memory.
* TLS uses one verifying context (tls.context), never requests' certifi default.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
import weakref
from typing import Any, Optional
from urllib.parse import urljoin, urlsplit

import requests
import requests.adapters
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from . import tls

MAX_ANSWER_BYTES = 4 * 1024 * 1024
_active = threading.local()  # the deadline of the request this thread is making


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
                    self._timer = threading.Timer(self.remaining(), self._expire)
                    self._timer.daemon = True
                    self._timer.start()
                return
        _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            sockets = list(self._sockets)
            self._sockets.clear()
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    # The plain socket's shutdown, also for an SSLSocket: its own would drop the SSL
    # object under a thread that is reading through it.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watched:
    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        deadline = getattr(_active, "deadline", None)
        if deadline is not None:
            deadline.watch(self.sock)  # type: ignore[attr-defined]
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_Watched, HTTPConnection):
    pass


class _HTTPSConnection(_Watched, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class Adapter(requests.adapters.HTTPAdapter):
    """Our TLS context on every connection, and sockets the deadline can shut down."""

    def __init__(self, ssl_context: Any) -> None:
        self._ssl_context = ssl_context
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._ssl_context
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        kwargs["ssl_context"] = self._ssl_context
        manager = super().proxy_manager_for(proxy, **kwargs)
        manager.pool_classes_by_scheme = _POOLS
        return manager

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        # The context carries the trust; requests would add certifi's bundle to it.
        conn.cert_reqs = "CERT_REQUIRED"

    def build_connection_pool_key_attributes(
        self, request: Any, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host, _ = super().build_connection_pool_key_attributes(request, True, None)
        return host, {"ssl_context": self._ssl_context, "cert_reqs": "CERT_REQUIRED"}


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


class GuardedSession(requests.Session):
    def __init__(self, origin: str, deadline: Deadline, timeout: float, ssl_context: Any):
        super().__init__()
        self.origin = _origin(origin)
        self.deadline = deadline
        self.timeout = timeout
        adapter = Adapter(ssl_context)
        self.mount("https://", adapter)
        self.mount("http://", adapter)
        # The proxy settings (HTTPS_PROXY, NO_PROXY...) are read once for the one origin,
        # not on every request as requests does (a third of its time per call). Nothing
        # else from the environment applies: the trust is tls.context's, and credentials
        # from ~/.netrc have no business next to GitLab tokens.
        self.proxies = requests.utils.get_environ_proxies(origin)
        self.trust_env = False

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if _origin(url) != self.origin:
            raise Redirect(None, host_port(url))
        remaining = self.deadline.remaining()
        if remaining <= 0:
            raise DeadlinePassed()
        kwargs.update(
            allow_redirects=False,
            stream=True,
            verify=True,
            cert=None,
            timeout=(min(self.timeout, remaining), min(self.timeout, remaining)),
        )
        _active.deadline = self.deadline
        try:
            response = super().request(method, url, *args, **kwargs)
            try:
                if 300 <= response.status_code < 400:
                    location = response.headers.get("Location") or ""
                    raise Redirect(response.status_code, host_port(urljoin(url, location)))
                response._content = self._read(response)
            finally:
                response.close()
        except (requests.RequestException, OSError):
            if self.deadline.passed():
                raise DeadlinePassed() from None
            raise
        finally:
            _active.deadline = None
        if self.deadline.passed():
            raise DeadlinePassed()  # a shut-down socket may look like a short, complete answer
        return response

    def _read(self, response: requests.Response) -> bytes:
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > MAX_ANSWER_BYTES:
            raise Oversize()
        body = bytearray()
        for chunk in response.iter_content(64 * 1024):
            body += chunk
            if len(body) > MAX_ANSWER_BYTES:
                raise Oversize()
            if self.deadline.passed():
                raise DeadlinePassed()
        return bytes(body)


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port


def host_port(url: str) -> str:
    scheme, host, port = _origin(url)
    if not host:
        return "an unnamed host"
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}"


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
    error: requests.exceptions.RequestException, url: str, timeout: float
) -> tuple[str, bool, bool]:
    """(one full line, whether the request may have reached GitLab, whether GitLab is
    simply not there: refused or not in DNS)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    described = tls.describe(error, host, port)
    if described:
        return f"TLS: {described}", False, False
    chain = tls.causes(error)
    names = {type(cause).__name__ for cause in chain}
    if "NameResolutionError" in names or any(
        isinstance(cause, OSError) and type(cause).__name__ == "gaierror" for cause in chain
    ):
        return f"cannot connect: host {host} does not resolve", False, True
    if any(isinstance(cause, ConnectionRefusedError) for cause in chain):
        return f"cannot connect: connection refused by {host}:{port}", False, True
    if isinstance(error, requests.exceptions.ConnectTimeout) or "ConnectTimeoutError" in names:
        return f"cannot connect: no connection to {host}:{port} within {timeout:g} s", False, False
    if "NewConnectionError" in names:
        errors = [c for c in chain if isinstance(c, OSError) and c.strerror]
        why = errors[0].strerror.lower() if errors else "failed"
        return f"cannot connect to {host}:{port}: {why}", False, True
    if isinstance(error, requests.exceptions.ReadTimeout) or "ReadTimeoutError" in names:
        return f"no answer from {host}:{port} within {timeout:g} s", True, False
    closed = f"{host}:{port} closed the connection before answering in full"
    if parts.scheme == "https":
        # Under TLS 1.3 a front that wants a client certificate often just hangs up.
        closed += (
            " (if a TLS front requires a client certificate: set tls_cert_file and tls_key_file)"
        )
    return closed, True, False
