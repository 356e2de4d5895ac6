"""Injected faults: failing, held, rate-limited and misbehaving requests."""

from __future__ import annotations

import email.utils
import math
import re
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Optional

from .model import (
    _ApiError,
)

if TYPE_CHECKING:
    from .fake import FakeGitLab


class Block:
    """Holds matching requests until :meth:`release` (see :meth:`FakeGitLab.block`)."""

    def __init__(self, owner: FakeGitLab, method: Optional[str], path: Optional[str], when: str):
        if when not in ("before", "after"):
            raise ValueError("when must be 'before' or 'after'")
        self._owner = owner
        self.method = method.upper() if method else None
        self.path = re.compile(path) if path is not None else None
        self.when = when
        self.reached = threading.Event()
        self.hits = 0
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

    def _hold(self) -> None:
        self.hits += 1
        self.reached.set()
        # Bounded so that a forgotten block cannot hang a test run forever.
        self._released.wait(600)


class _Fail:
    __slots__ = ("count", "method", "path", "retry_after", "status")

    def __init__(self, count, status, method, path, retry_after):
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
    # ------------------------------------------------------------------ faults

    def fail_next(
        self,
        count: int = 1,
        status: int = 503,
        method: Optional[str] = None,
        path: Optional[str] = None,
        retry_after: Any = None,
    ) -> None:
        """The next ``count`` requests matching ``method`` and the ``path`` regex
        (searched in the path without /api/v4) answer ``status``, without side effects."""
        with self._lock:
            self._fails.append(_Fail(count, status, method, path, retry_after))

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
        client ``key`` ("ip" or "user-agent"); None disables."""
        if key not in ("ip", "user-agent"):
            raise ValueError("key must be 'ip' or 'user-agent'")
        with self._lock:
            self._rate_limit = per_minute
            self._rate_key = key
            self._rate_windows = {}

    def _hold(self, method: str, path: str, when: str) -> None:
        if not self._blocks:
            return
        with self._lock:
            blocks = [b for b in self._blocks if b.when == when and b.matches(method, path)]
        for b in blocks:
            b._hold()

    def _rate_check(self, who: str) -> Optional[_ApiError]:
        limit = self._rate_limit
        assert limit is not None
        now = time.monotonic()
        window = self._rate_windows.get(who)
        if window is None:
            window = self._rate_windows[who] = deque()
        while window and window[0] <= now - 60:
            window.popleft()
        if len(window) < limit:
            window.append(now)
            return None
        wait = max(1, math.ceil(window[0] + 60 - now)) if window else 60
        reset = int(time.time()) + wait
        return _ApiError(
            429,
            {"message": "Retry later"},
            [
                ("Retry-After", str(wait)),
                ("RateLimit-Name", "throttle_authenticated_api"),
                ("RateLimit-Limit", str(limit)),
                ("RateLimit-Observed", str(len(window) + 1)),
                ("RateLimit-Remaining", "0"),
                ("RateLimit-Reset", str(reset)),
                ("RateLimit-ResetTime", email.utils.formatdate(reset, usegmt=True)),
            ],
        )
