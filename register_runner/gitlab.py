"""The one module the rest of the code asks GitLab through: the endpoints it uses, each
mapped onto a few outcomes so that nothing else looks at status codes:

* a token verdict (valid / invalid / unknown),
* RefusedError subclasses for what a person must fix (401, 403, 404, 410, validation,
  a redirect),
* Unavailable (a TransientError) for what may heal: no connection, 408, 5xx, an HTML
  page where JSON was expected, 429 past the deadline.

How each request goes (retries, deadline, pacing, decoding) is calls.py; what goes over
the wire is transport.py.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from typing import Any, Callable, Optional, TypeVar

from .answers import (
    AccessDenied,
    Gone,
    Issued,
    NotFound,
    Redirected,
    Rejected,
    Unavailable,
    issued_or_none,
    retry_after,
)
from .calls import Calls, Connection
from .model import ClientConfig, Scope, Verdict
from .secret import Secret
from .transport import Deadline

__all__ = [
    "AccessDenied",
    "Connection",
    "Deadline",
    "GitLab",
    "Gone",
    "Issued",
    "NotFound",
    "Pool",
    "Redirected",
    "Rejected",
    "Unavailable",
    "retry_after",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


class Pool:
    """The clients of one run and the bounded pool of workers that use them: one deadline
    and one 429 pause for all. Results come back in the order of the work given, so what is
    written never depends on which call finished first."""

    def __init__(self, connection: Connection, jobs: int) -> None:
        self.connection = connection
        self.jobs = jobs
        self._clients: dict[str, GitLab] = {}
        self._lock = threading.Lock()  # workers ask for clients at once

    def client(self, config: ClientConfig) -> GitLab:
        with self._lock:
            if config.url not in self._clients:
                self._clients[config.url] = GitLab(config, self.connection)
            return self._clients[config.url]

    def map(self, work: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """Not reentrant: once the workers are done, their connections are closed."""
        items = list(items)
        if len(items) <= 1 or self.jobs <= 1:
            return [work(item) for item in items]
        try:
            with ThreadPoolExecutor(max_workers=min(self.jobs, len(items))) as pool:
                return list(pool.map(work, items))
        finally:
            self.close()

    def close(self) -> None:
        """Close every client's connections (a later call opens new ones)."""
        with self._lock:
            clients = list(self._clients.values())
        for client in clients:
            client.close()


class GitLab(Calls):
    """The endpoints register-runner uses on one GitLab instance."""

    # -- runners, with the access token --------------------------------------------------

    def create_runner(self, scope: Scope, attributes: Mapping[str, Any]) -> Issued:
        data = dict(attributes, **{k: v for k, v in scope.to_json().items() if v is not None})
        what = "create runner"
        answer = self._call(
            what, "post", "/user/runners", data=data, needs="create_runner", mutating=True
        )
        return self._issued(what, answer)

    def update_runner(self, runner_id: int, attributes: Mapping[str, Any]) -> None:
        self._call(
            f"update runner {runner_id}",
            "put",
            f"/runners/{runner_id}",
            data=dict(attributes),
            needs="manage_runner",
            mutating=True,
            expect=None,
        )

    def delete_runner(self, runner_id: int) -> bool:
        """Delete by id; False if it was already gone."""
        try:
            self._call(
                f"delete runner {runner_id}",
                "delete",
                f"/runners/{runner_id}",
                needs="manage_runner",
                mutating=True,
                expect=None,
            )
        except NotFound:
            return False
        return True

    def reset_token(self, runner_id: int) -> Issued:
        what = f"reset token of runner {runner_id}"
        answer = self._call(
            what,
            "post",
            f"/runners/{runner_id}/reset_authentication_token",
            needs="manage_runner",
            mutating=True,
        )
        return self._issued(what, answer, runner_id)

    def get_runner(self, runner_id: int) -> Optional[dict[str, Any]]:
        what = f"read runner {runner_id}"
        try:
            answer = self._call(what, "get", f"/runners/{runner_id}", needs="manage_runner")
        except NotFound:
            return None
        if not isinstance(answer, dict):
            raise Unavailable(f"{self.url}: {what}: GitLab's answer is not a runner")
        return answer

    def list_runners(self, scope: Scope, status: Optional[str] = None) -> list[dict[str, Any]]:
        """Every runner of ``scope``'s type that the token may see (all pages, each within
        the deadline), only those of GitLab's ``status`` (stale, offline, …) when given.
        Pages are followed on this origin only."""
        path = {
            "instance_type": "/runners/all",
            "group_type": f"/groups/{scope.group_id}/runners",
            "project_type": f"/projects/{scope.project_id}/runners",
        }[scope.runner_type]
        answer = self._call(
            "list runners",
            "get",
            path,
            query={"type": scope.runner_type, **({"status": status} if status else {})},
            needs="read_api",
            expect="pages",
        )
        if not all(isinstance(r, dict) for r in answer):
            raise Unavailable(f"{self.url}: list runners: GitLab's answer is not a list of runners")
        return answer

    # -- runners, with their own token ---------------------------------------------------

    def register_legacy(self, registration_token: Secret, attributes: Mapping[str, Any]) -> Issued:
        data = dict(attributes, token=registration_token.reveal())
        what = "register runner (registration token)"
        try:
            answer = self._call(what, "post", "/runners", data=data, anonymous=True, mutating=True)
        except AccessDenied:
            raise AccessDenied(f"{self.url}: the registration token was rejected (403)") from None
        return self._issued(what, answer)

    def verify(self, token: Secret, system_id: Optional[str]) -> tuple[Verdict, Optional[Issued]]:
        """Only a 403 proves a token invalid, and any other 2xx valid; anything that is
        not an answer (an HTML page from a captive portal, say) proves nothing."""
        data = {"token": token.reveal()}
        if system_id:
            data["system_id"] = system_id
        try:
            answer = self._call(
                "verify token", "post", "/runners/verify", data=data, anonymous=True, expect="any"
            )
        except AccessDenied:
            return Verdict.INVALID, None
        except (Unavailable, Rejected, NotFound) as error:
            log.debug("event=verify_unknown url=%s reason=%s", self.url, error)
            self.last_failure = str(error)
            return Verdict.UNKNOWN, None
        # GitLab before 15.10 answers a plain "200"; some proxies an empty {}.
        return Verdict.VALID, issued_or_none(answer)

    def delete_by_token(self, token: Secret) -> bool:
        try:
            self._call(
                "delete runner by token",
                "delete",
                "/runners",
                data={"token": token.reveal()},
                anonymous=True,
                mutating=True,
                expect=None,
            )
        except AccessDenied:
            return False
        return True

    def reset_by_token(self, token: Secret) -> Issued:
        what = "reset token"
        answer = self._call(
            what,
            "post",
            "/runners/reset_authentication_token",
            data={"token": token.reveal()},
            anonymous=True,
            mutating=True,
        )
        return self._issued(what, answer, need_id=False)  # this answer has no id

    # -- plumbing ------------------------------------------------------------------------

    def access_token_expires_at(self) -> Optional[date]:
        """When the access token itself expires (``GET /personal_access_tokens/self``,
        GitLab >= 15.5): a date, or None when it never expires or GitLab will not say (403
        on restricted instances, 404 before 15.5, an answer without a date). A 401 raises
        AccessDenied: the token was rejected. Asked once: the run can do without the
        answer, and the next run asks again."""
        try:
            answer = self._call(
                "read the access token's expiry",
                "get",
                "/personal_access_tokens/self",
                retried=False,
            )
        except NotFound:
            return None
        except AccessDenied as error:
            if error.status == 401:
                raise
            return None
        value = answer.get("expires_at") if isinstance(answer, dict) else None
        try:
            return date.fromisoformat(value[:10]) if isinstance(value, str) else None
        except ValueError:
            return None
