"""Injected faults: failing, held, rate-limited and misbehaving requests."""

from __future__ import annotations

import email.utils
import math
import re
import threading
import time
from collections import deque
from datetime import datetime
from typing import Any, Optional

from .misbehave import _Misbehaviour
from .model import _access_token, _ApiError, _User


class Block:
    """Holds matching requests until :meth:`release` (see :meth:`FakeGitLab.block`)."""

    def __init__(self, owner: _Faults, method: Optional[str], path: Optional[str], when: str):
        if when not in ("before", "after"):
            raise ValueError("when must be 'before' or 'after'")
        self._owner = owner
        self.method = method.upper() if method else None
        self.path = re.compile(path) if path is not None else None
        self.when = when
        self.reached = threading.Event()
        self.hits = 0
        self._hit = threading.Condition()
        self._released = threading.Event()

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        return self.path is None or self.path.search(path) is not None

    @property
    def released(self) -> bool:
        return self._released.is_set()

    def release(self) -> None:
        """Let every held and future matching request through and remove the block."""
        self._released.set()
        self._owner._remove_block(self)

    def wait_hits(self, count: int, timeout: float = 30) -> bool:
        """Wait until ``count`` requests in all have been held here; whether they were
        within ``timeout``."""
        with self._hit:
            return self._hit.wait_for(lambda: self.hits >= count, timeout)

    def _hold(self) -> None:
        with self._hit:
            self.hits += 1
            self._hit.notify_all()
        self.reached.set()
        # Bounded so that a forgotten block cannot hang a test run forever.
        self._released.wait(600)


class _Fail:
    __slots__ = ("count", "method", "path", "retry_after", "status")

    def __init__(
        self, count: int, status: int, method: Optional[str], path: Optional[str], retry_after: Any
    ) -> None:
        self.count = count
        self.status = status
        self.method = method.upper() if method else None
        self.path = re.compile(path) if path is not None else None
        self.retry_after = retry_after

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        return self.path is None or self.path.search(path) is not None


class _Faults:
    """Part of FakeGitLab: the faults a test injects (fail, hold, rate-limit, misbehave)."""

    # Set by FakeGitLab.__init__.
    _lock: threading.Lock
    _users: dict[str, _User]

    def _init_faults(self) -> None:
        self._fails: list[_Fail] = []
        self._blocks: list[Block] = []
        self._misbehaviours: list[_Misbehaviour] = []
        self._rate_limit: Optional[int] = None
        self._rate_key = "ip"
        self._rate_windows: dict[str, deque] = {}

    def fail_next(
        self,
        count: int = 1,
        status: int = 503,
        method: Optional[str] = None,
        path: Optional[str] = None,
        retry_after: Any = None,
    ) -> None:
        """The next ``count`` requests matching ``method`` and the ``path`` regex
        (searched in the path without /api/v4) answer ``status``, without side effects.

        ``status``: any code from 100 to 999 (unofficial ones get a generic reason
        phrase); ``retry_after``: sent as given ("0", "-1", "nan", an HTTP date...),
        a datetime is sent as an HTTP date."""
        status = int(status)
        if not 100 <= status <= 999:
            raise ValueError("status must be a three-digit code")
        if isinstance(retry_after, datetime):
            retry_after = email.utils.format_datetime(retry_after, usegmt=True)
        with self._lock:
            self._fails.append(_Fail(count, status, method, path, retry_after))

    def misbehave(
        self,
        kind: str,
        *,
        method: Optional[str] = None,
        path: Optional[str] = None,
        count: int = 1,
        **options: Any,
    ) -> None:
        """The next ``count`` requests matching ``method`` and the ``path`` regex
        (searched in the path without /api/v4) misbehave; ``fail_next`` goes first.

        Handled (state changes, then the answer goes wrong):
        ``"drop_after"`` closes the connection unanswered; ``"garbage"`` answers
        ``status`` (default: the real one) with the raw ``body`` (default: the real
        answer cut in half) as ``content_type`` (default application/json);
        ``"trickle"`` sends the answer ``chunk`` bytes (1) every ``interval`` s (1.0),
        with the status line and headers at once unless ``headers=True``;
        ``"oversize"`` answers ``status`` (200) with the real JSON padded to ``size``
        bytes (64 MiB). Not handled: ``"redirect"`` answers ``status`` (302) with
        ``Location: location`` (default: the same path on http://gitlab.invalid);
        ``"echo"`` answers ``status`` (500) with a JSON message echoing the request line,
        every header (PRIVATE-TOKEN too) and the body; ``"html"`` answers ``status``
        (200) with an HTML sign-in page. The request log keeps the status GitLab's
        handler produced (for a handled kind, whatever the client then got)."""
        odd = _Misbehaviour(kind, method, path, count, options)
        with self._lock:
            self._misbehaviours.append(odd)

    def block(
        self, method: Optional[str] = None, path: Optional[str] = None, when: str = "after"
    ) -> Block:
        """Hold matching requests until ``release()``: ``when="after"`` processes the
        request (state changed) and then waits before answering, ``"before"`` waits first."""
        b = Block(self, method, path, when)
        with self._lock:
            self._blocks.append(b)
        return b

    def _remove_block(self, block: Block) -> None:
        with self._lock:
            if block in self._blocks:
                self._blocks.remove(block)

    def rate_limit(self, per_minute: Optional[int] = 600, key: str = "ip") -> None:
        """Answer 429 beyond ``per_minute`` requests in a sliding 60 s window per
        client ``key``; None disables. While a limit is set, every answer carries
        RateLimit-Limit, RateLimit-Remaining and RateLimit-Reset (epoch seconds).

        ``key``: "ip" (client address), "user-agent", or "token": the user of the
        access token (PRIVATE-TOKEN, a Bearer token or private_token); a request
        without a known one counts per runner token (its ``token`` field), and one
        without either per client address."""
        if key not in ("ip", "user-agent", "token"):
            raise ValueError("key must be 'ip', 'user-agent' or 'token'")
        with self._lock:
            self._rate_limit = per_minute
            self._rate_key = key
            self._rate_windows = {}

    # -------------------------------------------------- used by FakeGitLab._serve

    def _pick_fault(self, method: str, path: str) -> tuple[Optional[_Fail], Any]:
        """The fail_next or misbehave entry this request uses up, if any (lock held)."""
        for f in self._fails:
            if f.count > 0 and f.matches(method, path):
                f.count -= 1
                self._fails = [x for x in self._fails if x.count > 0]
                return f, None
        for odd in self._misbehaviours:
            if odd.matches(method, path):
                odd.count -= 1
                self._misbehaviours = [o for o in self._misbehaviours if o.count > 0]
                return None, odd
        return None, None

    def _rate_who(self, headers: Any, form: dict, client_ip: str) -> str:
        """The client a request counts for (lock held)."""
        if self._rate_key == "user-agent":
            return "ua:" + headers.get("User-Agent", "")
        if self._rate_key == "token":
            user = self._users.get(_access_token(headers, form) or "")
            if user is not None:
                return f"user:{user.id}"
            runner_token = form.get("token")
            if isinstance(runner_token, str) and runner_token:
                return "runner:" + runner_token
        return "ip:" + client_ip

    def _hold(self, method: str, path: str, when: str) -> None:
        if not self._blocks:
            return
        with self._lock:
            blocks = [b for b in self._blocks if b.when == when and b.matches(method, path)]
        for b in blocks:
            b._hold()

    def _window(self, who: str) -> deque:
        now = time.monotonic()
        window = self._rate_windows.setdefault(who, deque())
        while window and window[0] <= now - 60:
            window.popleft()
        return window

    def _rate_check(self, who: str) -> Optional[_ApiError]:
        """Count the request (lock held); the 429 error when over the limit."""
        limit = self._rate_limit
        assert limit is not None
        window = self._window(who)
        if len(window) < limit:
            window.append(time.monotonic())
            return None
        wait = max(1, math.ceil(window[0] + 60 - time.monotonic())) if window else 60
        reset = int(time.time()) + wait
        return _ApiError(
            429,
            {"message": "Retry later"},
            [
                ("Retry-After", str(wait)),
                ("RateLimit-Name", "throttle_authenticated_api"),
                ("RateLimit-Observed", str(len(window) + 1)),
                ("RateLimit-ResetTime", email.utils.formatdate(reset, usegmt=True)),
            ],
        )

    def _rate_headers(self, who: str) -> list[tuple[str, str]]:
        """RateLimit-* headers of every answer while a limit is set (lock held)."""
        limit = self._rate_limit
        if limit is None:
            return []
        window = self._window(who)
        wait = max(1, math.ceil(window[0] + 60 - time.monotonic())) if window else 0
        return [
            ("RateLimit-Limit", str(limit)),
            ("RateLimit-Remaining", str(max(0, limit - len(window)))),
            ("RateLimit-Reset", str(int(time.time()) + wait)),
        ]
