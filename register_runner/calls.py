"""How one GitLab is called: each request over this worker's guarded channel (transport.py:
no redirect, one origin, the deadline, the size cap, TLS), retried while that is safe and
the deadline allows, and its answer turned into a value or one of the failures in
answers.py. The endpoints themselves are gitlab.GitLab's.

Retries are done here: a client library's retry sleeps whatever Retry-After says (GitLab
answers 60 s during migrations, up to ten times), while a unit's ExecStartPre has an
overall deadline, and one 429 should pause every worker, not just one.

Every call goes over http.client (transport.Channel), lists too: each page is a call of
its own (``_pages``), so the retries, the 429 pause and the deadline above hold for every
page, and the guards for every request are transport.py's alone. python-gitlab and
requests cost more per call than a steady sync of 200 runners spends on everything else,
and a list needs no more than a URL, two headers and ``X-Next-Page``.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, NoReturn, Optional

from . import tls, transport
from ._version import __version__
from .answers import (
    Issued,
    RatePause,
    Redirected,
    Unavailable,
    issued_or_none,
    refusal,
    retry_after,
    transient_status,
)
from .model import ClientConfig
from .transport import Deadline

log = logging.getLogger("register_runner.gitlab")

BACKOFF_BASE = 0.2
# No retry is sent with less than this left before the deadline.
LAST_TRY_MARGIN = 0.5
BACKOFF_CAP = 5.0
MIN_RATE_WAIT = 1.0
# With this few requests left in GitLab's rate window (RateLimit-Remaining), the pool
# slows down so that what is left lasts until the window resets, instead of running into
# 429s. A fleet sharing one access token shares one budget: the others spend it too.
PACE_BELOW = 16


@dataclass
class Connection:
    """Settings shared by every client of one run.

    ``give_up_unreachable_after``: seconds after which a refused connection or a name
    that does not resolve ends the calls at once instead of retrying until the deadline.
    Set it when a usable config exists (the runners can start without GitLab); leave it
    None on a fresh host, which has nothing to start with and may as well wait.
    """

    deadline: Deadline
    timeout: float = 10.0
    pause: Optional[RatePause] = None
    system_id: str = ""
    give_up_unreachable_after: Optional[float] = None

    def __post_init__(self) -> None:
        if self.pause is None:
            self.pause = RatePause()

    @property
    def user_agent(self) -> str:
        # The system ID lets a GitLab admin tell which host sends what.
        return f"register-runner/{__version__} ({self.system_id or 'no system id'})"


@dataclass(frozen=True)
class _Request:
    """One call as _call was given it (what it is for the messages, and how it is sent)."""

    what: str
    verb: str
    path: str
    data: Optional[Mapping[str, Any]]
    query: Optional[Mapping[str, Any]]
    needs: Optional[str]
    anonymous: bool
    mutating: bool
    retried: bool = True


class _Attempt(Exception):
    """One attempt failed in a way worth retrying; ``reason`` says how."""

    def __init__(self, reason: str, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unreachable = unreachable


class Calls:
    """The requests to one GitLab instance, as one ClientConfig describes it. Thread-safe:
    each worker thread gets its own HTTP session."""

    def __init__(self, client: ClientConfig, connection: Connection) -> None:
        self.client = client
        self.url = client.url
        self.connection = connection
        self._local = threading.local()
        # Every worker's channel, so that close() reaches those of threads that have
        # ended: a socket left to the collector is a ResourceWarning.
        self._opened: list[transport.Channel] = []
        self._opened_lock = threading.Lock()
        self._proxy = transport.environment_proxy(self.url)
        self._context_lock = threading.Lock()
        self._ssl_context: Any = None
        self._unreachable: Optional[str] = None
        self.last_failure = ""  # why the last verify proved nothing, for the warning
        if transport.cleartext(self.url):
            log.warning(
                "event=plain_http url=%s tokens travel unencrypted to a host that is not "
                "this one; use https",
                self.url,
            )

    def _call(
        self,
        what: str,
        verb: str,
        path: str,
        *,
        data: Optional[Mapping[str, Any]] = None,
        query: Optional[Mapping[str, Any]] = None,
        needs: Optional[str] = None,
        anonymous: bool = False,
        mutating: bool = False,
        retried: bool = True,
        expect: Optional[str] = "json",
    ) -> Any:
        """One API call, retried while that is safe and the deadline allows. ``expect``:
        "json" (a JSON answer), "any" (2xx is all that counts), None (nothing read) or
        "pages" (every page of a GET list, each page a call: ``_pages``).

        ``mutating``: GitLab may have acted on the call whatever came back short of an
        answer (a lost or unreadable answer, a 5xx: a proxy's 502/504, or GitLab's own 500
        after it acted), so it is never sent again in this run: it fails as an ambiguous
        Unavailable, for the journal and the next run to settle. A 429 or a connection
        that never stood proves GitLab did nothing, and is retried.

        ``retried=False``: one attempt, for a call the run can do without (an advisory
        check would otherwise retry the deadline away before the calls that matter)."""
        request = _Request(what, verb, path, data, query, needs, anonymous, mutating, retried)
        if expect == "pages":
            return self._pages(request)
        return self._answered(request, expect)[1]

    def _answered(self, request: _Request, expect: Optional[str]) -> tuple[transport.Answer, Any]:
        """_call's work: the answer (its headers say where a list goes on) and its value."""
        what = request.what
        deadline = self.connection.deadline
        attempt = 0
        while True:
            if self._unreachable:
                raise Unavailable(f"{self.url}: {what}: {self._unreachable}")
            self.connection.pause.wait(deadline)  # type: ignore[union-attr]
            if deadline.passed():
                raise Unavailable(
                    f"{self.url}: {what}: no answer within the {deadline.seconds:g} s deadline"
                )
            try:
                response = self._send(request)
                return response, self._decode(what, response, request.mutating, expect)
            except _Attempt as failed:
                attempt += 1
                if not request.retried:
                    raise Unavailable(f"{self.url}: {what}: {failed.reason}") from None
                self._before_retry(what, failed, attempt)

    def _send(self, request: _Request) -> transport.Answer:
        what, mutating, data = request.what, request.mutating, request.data
        deadline = self.connection.deadline
        try:
            response = self._channel().request(
                request.verb.upper(),
                self._api_url + request.path,
                query=dict(request.query) if request.query else None,
                body=None if data is None else json.dumps(dict(data)).encode(),
                headers=self._headers(request.anonymous),
            )
        except transport.Redirect as redirect:
            raise self._redirected(what, redirect) from None
        except transport.Oversize:
            raise Unavailable(
                f"{self.url}: {what}: GitLab's answer is larger than "
                f"{transport.MAX_ANSWER_BYTES // 2**20} MiB; refused",
                ambiguous=mutating,
            ) from None
        except transport.DeadlinePassed:
            raise Unavailable(
                f"{self.url}: {what}: no complete answer within the {deadline.seconds:g} s "
                "deadline",
                ambiguous=mutating,
            ) from None
        except transport.NetworkError as error:
            reason, sent, unreachable = transport.network_failure(
                error.cause, self.url, self.connection.timeout, error.connected
            )
            if sent and mutating:
                raise Unavailable(f"{self.url}: {what}: {reason}", ambiguous=True) from None
            if reason.startswith("TLS"):
                raise Unavailable(f"{self.url}: {what}: {reason}") from None
            raise _Attempt(reason, unreachable) from None
        self._local.last_answer = response
        if 200 <= response.status < 300:
            self._pace(response.headers)
            return response
        self._refused(what, response.status, _error_message(response), request.needs, mutating)

    def _refused(
        self, what: str, status: int, said: Any, needs: Optional[str], mutating: bool
    ) -> NoReturn:
        if status == 429:
            self._rate_limited(what)
            raise _Attempt("GitLab answered 429 (too many requests)")
        if not transient_status(status):
            raise refusal(self.url, what, status, said, needs)
        if mutating and status >= 500:
            raise Unavailable(
                f"{self.url}: {what}: GitLab answered {status}; it may have acted all the same",
                ambiguous=True,
            )
        raise _Attempt(f"GitLab answered {status}")

    def _pages(self, request: _Request) -> list[Any]:
        """Every page of a list, 100 a page, as GitLab's ``X-Next-Page`` leads (a
        ``Link`` to a next page elsewhere is refused by the channel). Each page is a
        call: retried, paced and held to the deadline and the size cap as any other, so
        a list without end ends there."""
        items: list[Any] = []
        page = "1"
        while page:
            query = {**(request.query or {}), "per_page": 100, "page": page}
            answer, found = self._answered(replace(request, query=query), "json")
            if not isinstance(found, list):
                raise Unavailable(f"{self.url}: {request.what}: GitLab's answer is not a list")
            items += found
            following = (answer.headers.get("X-Next-Page") or "").strip()
            page = following if following.isdigit() else ""
        return items

    def _decode(self, what: str, response: Any, mutating: bool, expect: Optional[str]) -> Any:
        if expect is None:
            return None
        body = response.body.strip()
        kind = response.headers.get("Content-Type") or ""
        if "html" in kind.lower() or body[:1] == b"<":
            # A login page or captive portal answering for GitLab: not an answer from it.
            problem = f"an HTML page (HTTP {response.status}) instead of JSON"
        else:
            try:
                return json.loads(body) if body else None
            except ValueError:
                if expect == "any":
                    return None
                problem = "an answer that is not JSON (truncated or garbled)"
        if mutating:
            raise Unavailable(f"{self.url}: {what}: GitLab sent {problem}", ambiguous=True)
        raise _Attempt(f"GitLab sent {problem}")

    def _before_retry(self, what: str, failed: _Attempt, attempt: int) -> None:
        deadline = self.connection.deadline
        delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
        limit = self.connection.give_up_unreachable_after
        if failed.unreachable and limit is not None and deadline.elapsed() + delay >= limit:
            # A usable config exists: the runners start without GitLab, so do not hold
            # them back for a GitLab that is down or not in DNS.
            self._unreachable = failed.reason
            raise Unavailable(
                f"{self.url}: {what}: {failed.reason}; gave up after {attempt} attempts "
                f"in {deadline.elapsed():.1f} s (the last good config is kept)"
            )
        remaining = deadline.remaining()
        if delay > remaining - LAST_TRY_MARGIN:
            # A try sent in the deadline's last moment is cut short by it: its reason would
            # be the deadline instead of GitLab's, and a create, update or delete cut short
            # may have been acted on (ambiguous, for the next run to settle).
            if remaining < LAST_TRY_MARGIN * 2:
                raise Unavailable(
                    f"{self.url}: {what}: {failed.reason}; gave up after {attempt} "
                    f"attempts within the {deadline.seconds:g} s deadline"
                )
            # Nothing to start with (else give_up_unreachable_after): keep trying until
            # the deadline, with one last try just before it.
            delay = remaining - LAST_TRY_MARGIN
        log.debug(
            "event=retry url=%s call=%r reason=%r in=%.2fs", self.url, what, failed.reason, delay
        )
        time.sleep(delay)

    def _pace(self, headers: Mapping[str, str]) -> None:
        remaining = (headers.get("RateLimit-Remaining") or "").strip()
        if not remaining.isdigit() or int(remaining) >= PACE_BELOW:
            return
        window = retry_after({"RateLimit-Reset": headers.get("RateLimit-Reset") or ""})
        if not window:
            return
        # The whole pool waits: a share of the window per request left, the full window
        # when none is; jittered so that hosts sharing the budget do not come back as one.
        delay = window / (int(remaining) + 1) * random.uniform(1.0, 1.2)
        log.debug("event=rate_pacing url=%s remaining=%s wait=%.1fs", self.url, remaining, delay)
        self.connection.pause.extend(delay)  # type: ignore[union-attr]

    def _rate_limited(self, what: str) -> None:
        answer = getattr(self._local, "last_answer", None)
        delay = retry_after(answer.headers if answer is not None else {})
        if delay is None or delay < MIN_RATE_WAIT:
            # No usable Retry-After (absent, 0, negative, nan): back off from a second
            # up, jittered so that the workers do not come back together.
            backoff = getattr(self._local, "backoff", MIN_RATE_WAIT / 2) * 2
            self._local.backoff = min(BACKOFF_CAP * 4, backoff)
            delay = self._local.backoff * random.uniform(1.0, 1.5)
        else:
            delay *= random.uniform(1.0, 1.1)
        log.info("event=rate_limited url=%s call=%r wait=%.1fs", self.url, what, delay)
        self.connection.pause.extend(delay, limited=True)  # type: ignore[union-attr]

    def _redirected(self, what: str, redirect: transport.Redirect) -> Redirected:
        if redirect.status is None:
            said = f"GitLab's answer pointed to another origin, {redirect.target}; not followed"
        else:
            said = f"GitLab answered {redirect.status} with a redirect to {redirect.target}"
        return Redirected(
            f"{self.url}: {what}: {said}; put the final url in the client_config "
            "(requests are never re-sent elsewhere: the token would go along)",
            redirect.target,
        )

    def _issued(
        self, what: str, answer: Any, runner_id: Optional[int] = None, need_id: bool = True
    ) -> Issued:
        """The token in an answer to a call that made one; an answer without a usable
        token or id may hide a runner that exists now: ambiguous, and never stored."""
        issued = issued_or_none(answer, runner_id)
        if issued is None or (need_id and issued.id is None):
            raise Unavailable(
                f"{self.url}: {what}: GitLab's answer has no usable runner id and token",
                ambiguous=True,
            )
        return issued

    @property
    def _api_url(self) -> str:
        return self.url.rstrip("/") + "/api/v4"

    def _headers(self, anonymous: bool) -> dict[str, str]:
        headers = {"User-Agent": self.connection.user_agent, "Content-Type": "application/json"}
        if not anonymous and self.client.access_token is not None:
            headers["PRIVATE-TOKEN"] = self.client.access_token.reveal()
        return headers

    def _channel(self) -> transport.Channel:
        """This worker's channel: its connection is kept alive from one call to the next."""
        channel = getattr(self._local, "channel", None)
        if channel is None:
            channel = transport.Channel(
                self.url,
                self.connection.deadline,
                self.connection.timeout,
                self._context(),
                proxy=self._proxy,
            )
            self._local.channel = self._opening(channel)
        return channel

    def _opening(self, channel: transport.Channel) -> transport.Channel:
        with self._opened_lock:
            self._opened.append(channel)
        return channel

    def close(self) -> None:
        """Close every worker's connections. Only between calls: a worker that calls
        again opens new ones."""
        with self._opened_lock:
            opened, self._opened = self._opened, []
        for channel in opened:
            channel.close()
        self._local = threading.local()

    def _context(self) -> Any:
        if not self.url.startswith("https://"):
            return None  # plain http: no TLS files are read, as gitlab-runner does
        with self._context_lock:
            if self._ssl_context is None:
                self._ssl_context = tls.context(
                    self.client.tls_ca_file,
                    self.client.tls_cert_file,
                    self.client.tls_key_file,
                )
            return self._ssl_context


def _error_message(response: transport.Answer) -> Any:
    """What GitLab said in a refusal: the JSON ``message`` (or ``error``), else the body."""
    said: Any = response.body
    try:
        answer = json.loads(response.body)
        for key in ("message", "error"):
            if key in answer:
                said = answer[key]
    except (KeyError, ValueError, TypeError):
        pass
    return said
