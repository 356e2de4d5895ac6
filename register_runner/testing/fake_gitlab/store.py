"""State edits, authorisation and payloads shared by the routes."""

from __future__ import annotations

import math
import re
import threading
import time
from typing import Any, Callable, Optional
from urllib.parse import urlencode

from .model import (
    _INSUFFICIENT_SCOPE,
    DEFAULT_PER_PAGE,
    DEPRECATED_STATUSES,
    LEGACY_SYSTEM_ID,
    MAX_PER_PAGE,
    RUNNER_TYPES,
    SCOPES,
    STATUSES,
    _access_token,
    _ApiError,
    _as_bool,
    _as_int,
    _as_str,
    _as_tags,
    _bad,
    _Ctx,
    _iso,
    _new_token,
    _RunnerState,
    _User,
)
from .server import TLSFiles


class _Store:
    """Part of FakeGitLab (which holds the state these methods read and change)."""

    # Set by FakeGitLab.__init__.
    tls: Optional[TLSFiles]
    allow_registration_tokens: bool
    runner_token_lifetime: Optional[float]
    runner_details_token: bool
    _lock: threading.Lock
    _runners: dict[int, _RunnerState]
    _by_token: dict[str, int]
    _users: dict[str, _User]
    _reg_scopes: dict[str, tuple]
    _next_runner_id: int
    _next_manager_id: int
    _endless_pagination: bool
    _endless_origin: Optional[str]

    @property
    def _scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    # ------------------------------------------------------------ auth helpers

    def _user(self, ctx: _Ctx, allowed: Optional[tuple[str, ...]]) -> _User:
        """The user of the request's access token, with one of the ``allowed`` scopes
        (None: any scope)."""
        token = _access_token(ctx.headers, ctx.fields)
        user = self._users.get(token) if token is not None else None
        if user is None or user.revoked:
            raise _ApiError(401, {"message": "401 Unauthorized"})
        if user.expired:
            raise _ApiError(
                401, {"error": "invalid_token", "error_description": "Token has expired."}
            )
        if allowed is not None and not user.scopes.intersection(allowed):
            raise _ApiError(
                403,
                {
                    "error": "insufficient_scope",
                    "error_description": _INSUFFICIENT_SCOPE,
                    "scope": " ".join(allowed),
                },
            )
        user.last_used_at = time.time()
        return user

    @staticmethod
    def _can_update(user: _User, r: _RunnerState) -> bool:
        if user.admin:
            return True
        if r.runner_type == "group_type":
            return r.group_id in user.groups
        if r.runner_type == "project_type":
            return r.project_id in user.projects
        return False

    def _can_read(self, user: _User, r: _RunnerState) -> bool:
        return r.runner_type == "instance_type" or self._can_update(user, r)

    def _runner_for(self, ctx: _Ctx, m: Any, user: _User, update: bool) -> _RunnerState:
        r = self._runners.get(int(m.group(1)))
        if r is None:
            raise _ApiError(404, {"message": "404 Runner Not Found"})
        if not (self._can_update(user, r) if update else self._can_read(user, r)):
            raise _ApiError(403)
        return r

    def _runner_by_token(self, ctx: _Ctx) -> _RunnerState:
        token = ctx.fields.get("token")
        if token is None or token == "":
            raise _bad("token is missing")
        rid = self._by_token.get(_as_str(token))
        r = self._runners.get(rid) if rid is not None else None
        if r is None or (r.expires is not None and r.expires <= time.time()):
            raise _ApiError(403)
        return r

    # ------------------------------------------------------------- state edits

    def _create(
        self,
        runner_type: str,
        group_id: Optional[int],
        project_id: Optional[int],
        attrs: dict[str, Any],
        prefix: str,
        token: Optional[str] = None,
    ) -> _RunnerState:
        r = _RunnerState()
        # After reset_ids() the sequence may run into runners that are still there:
        # skip them, as a database sequence behind a unique key would have to.
        while self._next_runner_id in self._runners:
            self._next_runner_id += 1
        r.id = self._next_runner_id
        self._next_runner_id += 1
        r.runner_type = runner_type
        r.group_id = group_id
        r.project_id = project_id
        r.description = attrs.get("description", "")
        r.tags = list(attrs.get("tags", []))
        r.run_untagged = attrs.get("run_untagged", True)
        r.locked = attrs.get("locked", False)
        r.paused = attrs.get("paused", False)
        r.access_level = attrs.get("access_level", "not_protected")
        r.maximum_timeout = attrs.get("maximum_timeout")
        r.maintenance_note = attrs.get("maintenance_note")
        r.created_at = time.time()
        r.contacted_at = None
        r.managers = {}
        r.prefix = prefix
        r.token = token or _new_token(prefix)
        r.token_valid = True
        r.expires = self._expiry()
        self._runners[r.id] = r
        self._by_token[r.token] = r.id
        return r

    def _expiry(self) -> Optional[float]:
        lifetime = self.runner_token_lifetime
        if lifetime is None:
            return None
        return float(math.ceil(time.time()) + math.ceil(lifetime))

    def _reset_token(self, r: _RunnerState) -> str:
        self._by_token.pop(r.token, None)
        r.token = _new_token(r.prefix)
        r.token_valid = True
        r.expires = self._expiry()
        self._by_token[r.token] = r.id
        return r.token

    def _delete(self, r: _RunnerState) -> None:
        self._runners.pop(r.id, None)
        self._by_token.pop(r.token, None)

    def _touch_manager(self, r: _RunnerState, ctx: _Ctx) -> None:
        now = time.time()
        system_id = _as_str(ctx.fields.get("system_id")) or LEGACY_SYSTEM_ID
        mgr = r.managers.get(system_id)
        if mgr is None:
            mgr = r.managers[system_id] = {
                "id": self._next_manager_id,
                "system_id": system_id,
                "created_at": now,
                "contacted_at": now,
                "version": None,
                "revision": None,
                "platform": None,
                "architecture": None,
            }
            self._next_manager_id += 1
        mgr["contacted_at"] = now
        info = ctx.fields.get("info")
        if isinstance(info, dict):
            for key in ("version", "revision", "platform", "architecture"):
                if info.get(key) is not None:
                    mgr[key] = _as_str(info[key])
        r.contacted_at = now

    # ---------------------------------------------------------------- payloads

    @staticmethod
    def _item(r: _RunnerState, now: float) -> dict[str, Any]:
        status = r.status(now)
        return {
            "id": r.id,
            "description": r.description,
            "ip_address": None,
            "active": not r.paused,
            "paused": r.paused,
            "is_shared": r.runner_type == "instance_type",
            "runner_type": r.runner_type,
            "name": None,
            "online": status == "online",
            "status": status,
        }

    def _details(self, r: _RunnerState, can_update: bool) -> dict[str, Any]:
        now = time.time()
        d = self._item(r, now)
        latest = None
        for mgr in r.managers.values():
            if latest is None or mgr["contacted_at"] >= latest["contacted_at"]:
                latest = mgr
        d.update(
            {
                "tag_list": list(r.tags),
                "run_untagged": r.run_untagged,
                "locked": r.locked,
                "maximum_timeout": r.maximum_timeout,
                "access_level": r.access_level,
                "version": latest["version"] if latest else None,
                "revision": latest["revision"] if latest else None,
                "platform": latest["platform"] if latest else None,
                "architecture": latest["architecture"] if latest else None,
                "created_at": _iso(r.created_at),
                "contacted_at": _iso(r.contacted_at),
                "maintenance_note": r.maintenance_note if can_update else None,
                "projects": [],
                "groups": [],
            }
        )
        if r.project_id is not None:
            pid = r.project_id
            d["projects"] = [
                {
                    "id": pid,
                    "name": f"project-{pid}",
                    "name_with_namespace": f"fake / project-{pid}",
                    "path": f"project-{pid}",
                    "path_with_namespace": f"fake/project-{pid}",
                }
            ]
        if r.group_id is not None:
            gid = r.group_id
            d["groups"] = [{"id": gid, "name": f"group-{gid}", "web_url": f"/groups/{gid}"}]
        return d

    @staticmethod
    def _token_body(r: _RunnerState, with_id: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"token": r.token, "token_expires_at": _iso(r.expires)}
        if with_id:
            body = {"id": r.id, **body}
        return body

    def _paginate(self, ctx: _Ctx, items: list[_RunnerState]) -> tuple[int, Any, list]:
        fields = ctx.fields
        page = _as_int("page", fields["page"]) if fields.get("page") not in (None, "") else 1
        per_page = DEFAULT_PER_PAGE
        if fields.get("per_page") not in (None, ""):
            per_page = _as_int("per_page", fields["per_page"])
        page = max(page, 1)
        per_page = DEFAULT_PER_PAGE if per_page < 1 else min(per_page, MAX_PER_PAGE)
        total = len(items)
        pages = max(1, math.ceil(total / per_page))
        start = (page - 1) * per_page
        now = time.time()
        body = [self._item(r, now) for r in items[start : start + per_page]]
        # Endless: a next page forever, without the totals that would contradict it
        # (GitLab itself leaves them out beyond 10,000 results).
        endless = self._endless_pagination
        next_page = page + 1 if page < pages or endless else None
        prev_page = page - 1 if page > 1 else None

        origin = self._endless_origin if endless and self._endless_origin else None
        base = f"{origin or self._scheme + '://' + ctx.host}/api/v4{ctx.path}"
        keep = [(k, v) for k, v in ctx.query_pairs if k not in ("page", "per_page")]

        def link(p: int, rel: str) -> str:
            query = urlencode([*keep, ("page", str(p)), ("per_page", str(per_page))])
            return f'<{base}?{query}>; rel="{rel}"'

        links = []
        if prev_page is not None:
            links.append(link(prev_page, "prev"))
        if next_page is not None:
            links.append(link(next_page, "next"))
        links.append(link(1, "first"))
        if not endless:
            links.append(link(pages, "last"))
        headers = [
            ("X-Page", str(page)),
            ("X-Per-Page", str(per_page)),
            ("X-Next-Page", "" if next_page is None else str(next_page)),
            ("X-Prev-Page", "" if prev_page is None else str(prev_page)),
        ]
        if not endless:
            headers += [("X-Total", str(total)), ("X-Total-Pages", str(pages))]
        headers.append(("Link", ", ".join(links)))
        return 200, body, headers

    def _filtered(
        self,
        ctx: _Ctx,
        keep: Callable[[_RunnerState], bool],
        scopes: Optional[tuple[str, ...]],
    ) -> list[_RunnerState]:
        """The runners ``keep`` lets through that match the request's filters; ``scopes``:
        the values of the deprecated ``scope`` the endpoint filters by (None: it has no
        ``scope`` parameter)."""
        fields = ctx.fields
        rtype = fields.get("type")
        if rtype not in (None, "") and rtype not in RUNNER_TYPES:
            raise _bad("type does not have a valid value")
        status = fields.get("status")
        if status not in (None, "") and status not in STATUSES + DEPRECATED_STATUSES:
            raise _bad("status does not have a valid value")
        scope = fields.get("scope") if scopes is not None else None
        if scope not in (None, "") and scope not in SCOPES:
            raise _bad("scope does not have a valid value")
        paused = None
        if fields.get("paused") not in (None, ""):
            paused = _as_bool("paused", fields["paused"])
        tags = _as_tags(fields.get("tag_list")) if "tag_list" in fields else []
        prefix = None
        if "version_prefix" in fields:
            prefix = _as_str(fields["version_prefix"])
            # Grape's `regexp: /^[\d+.]+/`: Ruby's ^ is any line's start, and nothing
            # anchors the end.
            if not re.search(r"^[\d+.]+", prefix, re.MULTILINE):
                raise _bad("version_prefix is invalid")
        # Past Grape's validation, the endpoint refuses a declared scope it does not filter by.
        if scope and scopes is not None and scope not in scopes:
            raise _ApiError(400, {"message": "Scope contains invalid value"})
        now = time.time()
        out = []
        for r in self._runners.values():
            if not keep(r):
                continue
            if scope and not _in_scope(r, scope, now):
                continue
            if rtype and r.runner_type != rtype:
                continue
            if status and not _in_scope(r, status, now):
                continue
            if paused is not None and r.paused != paused:
                continue
            if prefix is not None and not any(
                _version_matches(mgr["version"], prefix) for mgr in r.managers.values()
            ):
                continue
            if tags and not all(t in r.tags for t in tags):
                continue
            out.append(r)
        return out


def _in_scope(r: _RunnerState, scope: str, now: float) -> bool:
    """Whether ``r`` is in the list scope (a type, a status, a legacy type) named ``scope``."""
    if scope == "specific":
        return r.runner_type != "instance_type"
    if scope == "shared":
        return r.runner_type == "instance_type"
    if scope in RUNNER_TYPES:
        return r.runner_type == scope
    if scope == "active":
        return not r.paused
    if scope == "paused":
        return r.paused
    return r.status(now) == scope


def _version_matches(version: Optional[str], prefix: str) -> bool:
    """Ci::RunnerManager.with_version_prefix: "17" and "17." match 17.x.y, "17.5" and
    "17.5." match 17.5.y (not 17.50.0), "17.5.1" matches 17.5.1 and its pre-releases."""
    if re.search(r"\d+\.\d+\.\d+", prefix):
        head = r"\d+\.\d+\.\d+"
    else:
        head = r"\d+\.\d+\." if re.search(r"\d+\.\d+", prefix) else r"\d+\."
        if not prefix.endswith("."):
            prefix += "."
    m = re.match(head, version or "")
    return m is not None and m.group(0) == prefix
