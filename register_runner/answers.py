"""What GitLab's answers mean: the failures gitlab.py raises, the tokens it hands out,
and GitLab's own words made safe to print."""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Optional

from .errors import RefusedError, TransientError
from .model import RateLimits
from .secret import Secret, scrub
from .timeutil import parse_timestamp

MESSAGE_CHARS = 300


class Unavailable(TransientError):
    """GitLab could not be reached or kept failing until the deadline. ``ambiguous``: a
    mutating call may have happened all the same (the answer was lost or unreadable, or
    was a 5xx)."""

    def __init__(self, message: str, ambiguous: bool = False) -> None:
        super().__init__(message)
        self.ambiguous = ambiguous


def lacks_scope(url: str, scope: str) -> str:
    """The one warning of a run whose access token lacks a scope that only reading back,
    updating or rotating runners needs (manage_runner): observe and apply meet it alike."""
    return (
        f"{url}: the access token lacks the {scope} scope: registration attributes are "
        "not read back (--refresh) nor updated, and tokens not rotated by register-runner"
    )


class AccessDenied(RefusedError):
    """The access token was rejected (401), or lacks the role or scope (403)."""

    def __init__(self, message: str, scope: Optional[str] = None, status: int = 403) -> None:
        super().__init__(message)
        self.scope = scope
        self.status = status


class Gone(RefusedError):
    """410: registration tokens are disabled on this GitLab."""


class Rejected(RefusedError):
    """400/422 and other 4xx: GitLab refused the values sent."""


class NotFound(RefusedError):
    """404: no such runner (already deleted, say), or a url whose path is wrong."""

    def __init__(self, message: str, url: str) -> None:
        super().__init__(message)
        self.url = url


class Redirected(RefusedError):
    """A 3xx, or a pagination link to another origin: never followed, since the token
    would go along. The operator puts the final url in the client_config."""

    def __init__(self, message: str, location_host: str) -> None:
        super().__init__(message)
        self.location_host = location_host


@dataclass(frozen=True)
class Issued:
    """A runner token GitLab just handed out: the only time it is shown."""

    id: Optional[int]
    token: Secret
    expires_at: Optional[datetime]


class RatePause:
    """A 429 pauses the whole pool until Retry-After has passed."""

    def __init__(self) -> None:
        self._until = 0.0
        self._lock = threading.Lock()
        self._limited = 0
        self._waited = 0.0
        self._since = 0.0  # when the current pause began
        self._waited_until = 0.0  # the end of the last pause counted in _waited

    def extend(self, seconds: float, *, limited: bool = False) -> None:
        """Pause for ``seconds`` more; ``limited``: because GitLab answered 429."""
        with self._lock:
            now = time.monotonic()
            if self._until <= now:
                self._since = now
            self._until = max(self._until, now + seconds)
            self._limited += limited

    def wait(self, deadline: Any) -> None:
        with self._lock:
            now = time.monotonic()
            delay = self._until - now
            if 0 < delay < deadline.remaining():
                # From the answer that asked for the pause (the retry's backoff included)
                # to its end; workers waiting at once wait the same seconds: count once.
                self._waited += self._until - max(self._since, self._waited_until)
                self._waited_until = self._until
        if delay > 0:
            if delay >= deadline.remaining():
                raise Unavailable("GitLab asked to wait longer than the deadline allows (429)")
            time.sleep(delay)

    def counts(self) -> RateLimits:
        with self._lock:
            return RateLimits(self._limited, round(self._waited, 3))


def transient_status(status: int) -> bool:
    """408 and every 5xx may heal by themselves; other 4xx need a person."""
    return status == 408 or 500 <= status <= 599


def retry_after(headers: Mapping[str, str]) -> Optional[float]:
    """Retry-After in seconds (a number or an HTTP-date), else RateLimit-Reset (epoch);
    None when neither gives a finite number."""
    value = (headers.get("Retry-After") or "").strip()
    seconds: Optional[float] = None
    if value:
        try:
            seconds = float(value)
        except ValueError:
            import email.utils  # only for the rare HTTP-date form: a start imports less

            try:
                parsed = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                parsed = None
            if parsed is not None:
                seconds = parsed.timestamp() - time.time()
    reset = (headers.get("RateLimit-Reset") or "").strip()
    if seconds is None and reset.isdigit():
        seconds = int(reset) - time.time()
    if seconds is None or not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def issued_or_none(answer: Any, runner_id: Optional[int] = None) -> Optional[Issued]:
    if not isinstance(answer, dict):
        return None
    token = answer.get("token")
    if not isinstance(token, str) or not re.fullmatch(r"[\x21-\x7e]+", token):
        return None
    runner = answer.get("id", runner_id)
    expires = answer.get("token_expires_at")
    return Issued(
        runner if isinstance(runner, int) and not isinstance(runner, bool) else None,
        Secret(token),
        parse_timestamp(expires) if isinstance(expires, str) else None,
    )


def message(raw: Any) -> str:
    """GitLab's words, as one scrubbed line: GitLab answers a string on POST /user/runners
    and a hash on PUT and legacy POST, and a proxy may echo the request back."""
    if isinstance(raw, dict):
        text = "; ".join(
            f"{key} {' '.join(map(str, v)) if isinstance(v, list) else v}" for key, v in raw.items()
        )
    elif isinstance(raw, bytes):
        text = raw.decode("utf-8", "replace")
    else:
        text = str(raw)
    text = " ".join(scrub(text).split())  # no newline from GitLab can forge a log line
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 3] + "..."


def refusal(url: str, what: str, status: int, raw: Any, needs: Optional[str]) -> Exception:
    """The failure a non-transient 4xx stands for; GitLab's words made safe to print."""
    said = message(raw)
    if status == 404:
        api = url + "/api/v4"
        return NotFound(
            f"GitLab at {url} answered 404 for {what}: check the url's path "
            f"(GitLab's API must be at {api})",
            url,
        )
    if status == 401:
        return AccessDenied(
            f"{url}: {what}: the access token was rejected (401): expired, revoked or mistyped",
            status=401,
        )
    if status == 403:
        if said == "insufficient_scope":
            return AccessDenied(
                f"{url}: {what}: the access token lacks the {needs or 'required'} scope",
                needs,
            )
        return AccessDenied(f"{url}: {what}: forbidden (403): {said}")
    if status == 410:
        return Gone(
            f"{url}: registration tokens are disabled on this GitLab (410 "
            "Gone); create an access token with the create_runner scope and set "
            "personal_access_token in the client_config"
        )
    return Rejected(f"{url}: {what}: GitLab refused it ({status}): {said}")
