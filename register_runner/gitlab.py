"""The one module that talks to GitLab. It maps GitLab's answers onto a few outcomes so the
rest of the code never looks at status codes:

* a token verdict (valid / invalid / unknown),
* RefusedError subclasses for what a person must fix (401, 403, 410, validation),
* Unavailable (a TransientError) for what may heal: no connection, 5xx, 429 past the deadline.

Retries are done here rather than by python-gitlab: its retry sleeps whatever Retry-After
says (GitLab answers 60 s during migrations, up to ten times), while a unit's ExecStartPre
has an overall deadline, and one 429 should pause every worker, not just one.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Callable, Optional, TypeVar

import gitlab
import gitlab.v4.objects  # python-gitlab imports it lazily: racy from worker threads
import requests

from . import __version__
from .errors import RefusedError, TransientError
from .model import ClientConfig, Scope, Verdict
from .output import parse_timestamp
from .secret import Secret

log = logging.getLogger(__name__)
T = TypeVar("T")

TRANSIENT_STATUS = frozenset({500, 502, 503, 504} | set(range(520, 531)))
# A create answered with one of these may have happened: retrying could make a duplicate.
# The journal finds such a runner on the next run instead.
AMBIGUOUS_STATUS = frozenset({502, 504} | set(range(520, 531)))
BACKOFF_BASE = 0.2
BACKOFF_CAP = 5.0


class Unavailable(TransientError):
    """GitLab could not be reached or kept failing until the deadline. ``ambiguous``: a
    create may have happened all the same (the answer was lost, or a gateway timed out)."""

    def __init__(self, message: str, ambiguous: bool = False) -> None:
        super().__init__(message)
        self.ambiguous = ambiguous


class AccessDenied(RefusedError):
    """The access token was rejected (401), or lacks the role or scope (403)."""

    def __init__(self, message: str, scope: Optional[str] = None) -> None:
        super().__init__(message)
        self.scope = scope


class Gone(RefusedError):
    """410: registration tokens are disabled on this GitLab."""


class Rejected(RefusedError):
    """400/422: GitLab refused the values sent."""


class NotFound(Exception):
    """404: no such runner (already deleted, say)."""


@dataclass(frozen=True)
class Issued:
    """A runner token GitLab just handed out: the only time it is shown."""

    id: Optional[int]
    token: Secret
    expires_at: Optional[datetime]


class Deadline:
    """One overall budget for a run's API calls, shared by every worker."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self.seconds = seconds

    def remaining(self) -> float:
        return self.end - time.monotonic()


class RatePause:
    """A 429 pauses the whole pool until Retry-After has passed."""

    def __init__(self) -> None:
        self._until = 0.0
        self._lock = threading.Lock()

    def extend(self, seconds: float) -> None:
        with self._lock:
            self._until = max(self._until, time.monotonic() + seconds)

    def wait(self, deadline: Deadline) -> None:
        with self._lock:
            delay = self._until - time.monotonic()
        if delay > 0:
            if delay >= deadline.remaining():
                raise Unavailable("GitLab asked to wait longer than the deadline allows (429)")
            time.sleep(delay)


@dataclass
class Connection:
    """Settings shared by every client of one run."""

    deadline: Deadline
    timeout: float = 10.0
    pause: Optional[RatePause] = None
    system_id: str = ""

    def __post_init__(self) -> None:
        if self.pause is None:
            self.pause = RatePause()

    @property
    def user_agent(self) -> str:
        # The system ID lets a GitLab admin tell which host sends what.
        return f"register-runner/{__version__} ({self.system_id or 'no system id'})"


class GitLab:
    """Calls to one GitLab instance, as one ClientConfig describes it. Thread-safe: each
    worker thread gets its own HTTP session."""

    def __init__(self, client: ClientConfig, connection: Connection) -> None:
        self.client = client
        self.url = client.url
        self.connection = connection
        self._local = threading.local()

    # -- runners, with the access token --------------------------------------------------

    def create_runner(self, scope: Scope, attributes: Mapping[str, Any]) -> Issued:
        data = dict(attributes, **{k: v for k, v in scope.to_json().items() if v is not None})
        answer = self._call(
            "create runner",
            lambda api, o: api.http_post("/user/runners", post_data=data, **o),
            needs="create_runner",
            idempotent=False,
        )
        return _issued(answer)

    def update_runner(self, runner_id: int, attributes: Mapping[str, Any]) -> None:
        self._call(
            f"update runner {runner_id}",
            lambda api, o: api.http_put(f"/runners/{runner_id}", post_data=dict(attributes), **o),
            needs="manage_runner",
        )

    def delete_runner(self, runner_id: int) -> bool:
        """Delete by id; False if it was already gone."""
        try:
            self._call(
                f"delete runner {runner_id}",
                lambda api, o: api.http_delete(f"/runners/{runner_id}", **o),
                needs="manage_runner",
            )
        except NotFound:
            return False
        return True

    def reset_token(self, runner_id: int) -> Issued:
        answer = self._call(
            f"reset token of runner {runner_id}",
            lambda api, o: api.http_post(f"/runners/{runner_id}/reset_authentication_token", **o),
            needs="manage_runner",
        )
        return _issued(answer, runner_id)

    def get_runner(self, runner_id: int) -> Optional[dict[str, Any]]:
        try:
            return self._call(
                f"read runner {runner_id}",
                lambda api, o: api.http_get(f"/runners/{runner_id}", **o),
                needs="manage_runner",
            )
        except NotFound:
            return None

    def list_runners(self, scope: Scope) -> list[dict[str, Any]]:
        """Every runner of ``scope``'s type that the token may see (all pages)."""
        path = {
            "instance_type": "/runners/all",
            "group_type": f"/groups/{scope.group_id}/runners",
            "project_type": f"/projects/{scope.project_id}/runners",
        }[scope.runner_type]
        return self._call(
            "list runners",
            lambda api, o: list(
                api.http_list(
                    path,
                    query_data={"type": scope.runner_type},
                    iterator=True,
                    per_page=100,
                    **o,
                )
            ),
            needs="read_api",
        )

    # -- runners, with their own token ---------------------------------------------------

    def register_legacy(self, registration_token: Secret, attributes: Mapping[str, Any]) -> Issued:
        data = dict(attributes, token=registration_token.reveal())
        try:
            answer = self._call(
                "register runner (registration token)",
                lambda api, o: api.http_post("/runners", post_data=data, **o),
                anonymous=True,
                idempotent=False,
            )
        except AccessDenied:
            raise AccessDenied(f"{self.url}: the registration token was rejected (403)") from None
        return _issued(answer)

    def verify(self, token: Secret, system_id: Optional[str]) -> tuple[Verdict, Optional[Issued]]:
        """Only a 403 proves a token invalid; anything that is not an answer proves nothing."""
        data = {"token": token.reveal()}
        if system_id:
            data["system_id"] = system_id
        try:
            answer = self._call(
                "verify token",
                lambda api, o: api.http_post("/runners/verify", post_data=data, **o),
                anonymous=True,
            )
        except AccessDenied:
            return Verdict.INVALID, None
        except (Unavailable, Rejected, NotFound) as error:
            log.debug("event=verify_unknown url=%s reason=%s", self.url, error)
            return Verdict.UNKNOWN, None
        # GitLab before 15.10 answers a plain "200".
        return Verdict.VALID, _issued(answer) if isinstance(answer, dict) else None

    def delete_by_token(self, token: Secret) -> bool:
        try:
            self._call(
                "delete runner by token",
                lambda api, o: api.http_delete(
                    "/runners", post_data={"token": token.reveal()}, **o
                ),
                anonymous=True,
            )
        except AccessDenied:
            return False
        return True

    def reset_by_token(self, token: Secret) -> Issued:
        answer = self._call(
            "reset token",
            lambda api, o: api.http_post(
                "/runners/reset_authentication_token",
                post_data={"token": token.reveal()},
                **o,
            ),
            anonymous=True,
        )
        return _issued(answer)

    # -- plumbing ------------------------------------------------------------------------

    def _call(
        self,
        what: str,
        request: Callable[[gitlab.Gitlab, dict[str, Any]], T],
        *,
        needs: Optional[str] = None,
        anonymous: bool = False,
        idempotent: bool = True,
    ) -> T:
        deadline = self.connection.deadline
        attempt = 0
        while True:
            self.connection.pause.wait(deadline)  # type: ignore[union-attr]
            remaining = deadline.remaining()
            if remaining <= 0:
                raise Unavailable(
                    f"{self.url}: {what}: no answer within the {deadline.seconds:g} s deadline"
                )
            api = self._api(anonymous)
            try:
                return request(
                    api,
                    {
                        "timeout": min(self.connection.timeout, remaining),
                        "obey_rate_limit": False,
                        "retry_transient_errors": False,
                    },
                )
            except gitlab.GitlabError as error:
                status = error.response_code or 0
                if status == 429:
                    self._rate_limited(what)
                    continue
                if status not in TRANSIENT_STATUS:
                    raise self._refusal(what, error, needs) from None
                if not idempotent and status in AMBIGUOUS_STATUS:
                    raise Unavailable(
                        f"{self.url}: {what}: GitLab answered {status}", ambiguous=True
                    ) from None
                reason = f"GitLab answered {status}"
            except requests.exceptions.SSLError as error:
                raise Unavailable(
                    f"{self.url}: {what}: TLS verification failed ({_short(error)});"
                    " set tls_ca_file in the client_config"
                ) from None
            except requests.exceptions.ConnectionError as error:
                # Refused or unresolvable: nothing was sent, retrying is always safe.
                reason = f"cannot connect ({_short(error)})"
            except (requests.exceptions.Timeout, requests.exceptions.ChunkedEncodingError) as e:
                if not idempotent:
                    raise Unavailable(
                        f"{self.url}: {what}: no answer ({_short(e)})", ambiguous=True
                    ) from None
                reason = f"no answer ({_short(e)})"
            attempt += 1
            delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            if delay >= deadline.remaining():
                raise Unavailable(
                    f"{self.url}: {what}: {reason}; gave up after {attempt} "
                    f"attempts within the {deadline.seconds:g} s deadline"
                )
            log.debug(
                "event=retry url=%s call=%r reason=%r in=%.2fs", self.url, what, reason, delay
            )
            time.sleep(delay)

    def _rate_limited(self, what: str) -> None:
        response = getattr(self._local, "last_response", None)
        delay = retry_after(response.headers if response is not None else {})
        if delay is None:
            self._local.backoff = min(BACKOFF_CAP * 4, getattr(self._local, "backoff", 0.5) * 2)
            delay = self._local.backoff * random.uniform(0.5, 1.0)
        log.info("event=rate_limited url=%s call=%r wait=%.1fs", self.url, what, delay)
        self.connection.pause.extend(delay)  # type: ignore[union-attr]

    def _refusal(self, what: str, error: gitlab.GitlabError, needs: Optional[str]) -> Exception:
        status = error.response_code
        message = _message(error.error_message)
        if status == 404:
            return NotFound(what)
        if status == 401:
            return AccessDenied(
                f"{self.url}: {what}: the access token was rejected (401): "
                "expired, revoked or mistyped"
            )
        if status == 403:
            if message == "insufficient_scope":
                return AccessDenied(
                    f"{self.url}: {what}: the access token lacks the {needs or 'required'} scope",
                    needs,
                )
            return AccessDenied(f"{self.url}: {what}: forbidden (403): {message}")
        if status == 410:
            return Gone(
                f"{self.url}: registration tokens are disabled on this GitLab (410 "
                "Gone); create an access token with the create_runner scope and set "
                "personal_access_token in the client_config"
            )
        return Rejected(f"{self.url}: {what}: GitLab refused it ({status}): {message}")

    def _api(self, anonymous: bool) -> gitlab.Gitlab:
        key = "anonymous" if anonymous else "authenticated"
        api = getattr(self._local, key, None)
        if api is None:
            session = requests.Session()
            session.hooks["response"].append(self._remember)
            token = (
                None
                if anonymous or self.client.access_token is None
                else self.client.access_token.reveal()
            )
            api = gitlab.Gitlab(
                self.url,
                private_token=token,
                session=session,
                ssl_verify=self.client.tls_ca_file or True,
                timeout=self.connection.timeout,
                user_agent=self.connection.user_agent,
                retry_transient_errors=False,
            )
            setattr(self._local, key, api)
        return api

    def _remember(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self._local.last_response = response
        request = response.request
        path = requests.utils.urlparse(request.url).path  # no query: nothing secret is logged
        log.debug(
            "event=api method=%s path=%s status=%s ms=%.0f",
            request.method,
            path,
            response.status_code,
            response.elapsed.total_seconds() * 1000,
        )

    def access_token_expires_at(self) -> Optional[date]:
        """When the access token itself expires (``GET /personal_access_tokens/self``,
        GitLab >= 15.5): a date, or None when it never expires or GitLab will not say (403
        on restricted instances, 404 before 15.5, an answer without a date). A 401 raises
        AccessDenied: the token was rejected."""

        def request(api: gitlab.Gitlab, options: dict[str, Any]) -> Any:
            try:
                return api.http_get("/personal_access_tokens/self", **options)
            except gitlab.GitlabError as error:
                if error.response_code in (403, 404):
                    return None
                raise

        answer = self._call("read the access token's expiry", request)
        value = answer.get("expires_at") if isinstance(answer, dict) else None
        try:
            return date.fromisoformat(value[:10]) if isinstance(value, str) else None
        except ValueError:
            return None


def retry_after(headers: Mapping[str, str]) -> Optional[float]:
    """Retry-After in seconds (a number or an HTTP-date), else RateLimit-Reset (epoch)."""
    value = headers.get("Retry-After")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                parsed = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                parsed = None
            if parsed is not None:
                return max(0.0, parsed.timestamp() - time.time())
    reset = headers.get("RateLimit-Reset")
    if reset and reset.isdigit():
        return max(0.0, int(reset) - time.time())
    return None


def _issued(answer: Any, runner_id: Optional[int] = None) -> Issued:
    if not isinstance(answer, dict) or not answer.get("token"):
        raise Rejected("GitLab's answer carried no runner token")
    expires = answer.get("token_expires_at")
    return Issued(
        answer.get("id", runner_id),
        Secret(answer["token"]),
        parse_timestamp(expires) if isinstance(expires, str) else None,
    )


def _message(raw: Any) -> str:
    """GitLab answers a string on POST /user/runners and a hash on PUT and legacy POST."""
    if isinstance(raw, dict):
        return "; ".join(
            f"{key} {' '.join(map(str, v)) if isinstance(v, list) else v}" for key, v in raw.items()
        )
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "replace")[:200]
    return str(raw)


def _short(error: Exception) -> str:
    text = str(error)
    return text if len(text) <= 160 else text[:157] + "..."
