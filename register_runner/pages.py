"""The requests session python-gitlab pages lists through, held to transport.py's rules:
no redirect followed, one origin (a next-page link elsewhere is refused), the run's
deadline on every socket, answers read in full up to the size cap, the one TLS context.
Imported only when a list is asked for: a steady sync never needs it.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urljoin

import requests
import requests.adapters
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .transport import CHUNK, Deadline, DeadlinePassed, Redirect, host_port, origin_of, read_capped

_active = threading.local()  # the deadline of the request this thread is making


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
    ) -> tuple[Any, Any]:
        host, _ = super().build_connection_pool_key_attributes(request, True, None)
        return host, {"ssl_context": self._ssl_context, "cert_reqs": "CERT_REQUIRED"}


class GuardedSession(requests.Session):
    def __init__(self, origin: str, deadline: Deadline, timeout: float, ssl_context: Any):
        super().__init__()
        self.origin = origin_of(origin)
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
        self._refuse_elsewhere(url)
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
                # Refused here, before python-gitlab reads the link (and warns raw).
                self._refuse_elsewhere(urljoin(url, response.links.get("next", {}).get("url", "")))
                response._content = read_capped(
                    response.headers.get("Content-Length", ""),
                    response.iter_content(CHUNK),
                    self.deadline,
                )
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

    def _refuse_elsewhere(self, url: str) -> None:
        if origin_of(url) != self.origin:
            raise Redirect(None, host_port(url))
