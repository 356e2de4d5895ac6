"""The REST API v4 endpoints, one method each, and the table that maps paths to them."""

from __future__ import annotations

import re
import secrets
import time
import traceback
from typing import Any, Callable

from .model import (
    _ATTR_KEYS,
    DEPRECATED_STATUSES,
    ONLINE_WINDOW,
    RUNNER_TYPES,
    SCOPE_CREATE,
    SCOPE_MANAGE_READ,
    SCOPE_MANAGE_WRITE,
    SCOPE_READ,
    SCOPES,
    STALE_AFTER,
    STATUSES,
    VERSION,
    _active_or_paused,
    _ApiError,
    _as_bool,
    _as_int,
    _as_str,
    _bad,
    _Ctx,
    _hash_error,
    _iso,
    _model_errors,
    _runner_attrs,
    _RunnerState,
    _string_error,
)
from .store import _Store


class _Routes(_Store):
    def _route(self, ctx: _Ctx) -> tuple[int, Any, list]:
        try:
            for method, pattern, handler in _ROUTES:
                m = pattern.match(ctx.path)
                if m is not None and method == ctx.method:
                    return handler(self, ctx, m)
            # Grape's catch-all route (`error!("404 Not Found", 404)`): "error", not "message".
            return 404, {"error": "404 Not Found"}, []
        except _ApiError as exc:
            return exc.status, exc.body, exc.headers
        except Exception as exc:  # a bug in the fake: say so loudly
            traceback.print_exc()
            return 500, {"message": "500 Internal Server Error", "exception": repr(exc)}, []

    # ------------------------------------------------------------------ routes

    def _r_version(self, ctx: _Ctx, m: Any) -> tuple[int, Any, list]:
        self._user(ctx, SCOPE_READ)
        return 200, {"version": VERSION, "revision": "fake", "kas": {"enabled": False}}, []

    def _r_user(self, ctx: _Ctx, m: Any) -> tuple[int, Any, list]:
        user = self._user(ctx, SCOPE_READ)
        body = {
            "id": user.id,
            "username": user.username,
            "name": user.username,
            "state": "active",
            "is_admin": user.admin,
        }
        return 200, body, []

    def _r_token_self(self, ctx: _Ctx, m: Any) -> tuple[int, Any, list]:
        return 200, self._user(ctx, None).token_info(), []

    def _r_create(self, ctx: _Ctx, m: Any) -> tuple[int, Any, list]:
        user = self._user(ctx, SCOPE_CREATE)
        fields = ctx.fields
        rtype = fields.get("runner_type")
        if rtype in (None, ""):
            raise _bad("runner_type is missing")
        if rtype not in RUNNER_TYPES:
            raise _bad("runner_type does not have a valid value")
        gid = _as_int("group_id", fields["group_id"]) if "group_id" in fields else None
        pid = _as_int("project_id", fields["project_id"]) if "project_id" in fields else None
        if rtype == "group_type":
            if gid is None:
                raise _ApiError(400, {"message": "400 Bad request - group_id is missing"})
            allowed = user.admin or gid in user.groups
            pid = None
        elif rtype == "project_type":
            if pid is None:
                raise _ApiError(400, {"message": "400 Bad request - project_id is missing"})
            allowed = user.admin or pid in user.projects
            gid = None
        else:
            allowed = user.admin
            gid = pid = None
        # POST /user/runners declares paused only: Grape drops the deprecated active.
        attrs = _runner_attrs({k: v for k, v in fields.items() if k != "active"})
        if not allowed:
            raise _ApiError(403)
        errors = _model_errors(
            attrs.get("tags", []),
            attrs.get("run_untagged", True),
            attrs.get("maximum_timeout"),
            attrs.get("maintenance_note"),
        )
        if errors:
            raise _string_error(errors)
        r = self._create(rtype, gid, pid, attrs, prefix="glrt-")
        return 201, self._token_body(r, with_id=True), []

    def _r_register(self, ctx: _Ctx, m: Any) -> tuple[int, Any, list]:
        token = ctx.fields.get("token")
        if token is None or token == "":
            raise _bad("token is missing")
        _active_or_paused(ctx.fields)
        if not self.allow_registration_tokens:
            raise _ApiError(410)
        scope = self._reg_scopes.get(_as_str(token))
        if scope is None:
            raise _ApiError(403)
        attrs = _runner_attrs(ctx.fields)
        errors = _model_errors(
            attrs.get("tags", []),
            attrs.get("run_untagged", True),
            attrs.get("maximum_timeout"),
            attrs.get("maintenance_note"),
        )
        if errors:
            raise _hash_error(errors)
        rtype, gid, pid = scope
        r = self._create(rtype, gid, pid, attrs, prefix="glrtr-")
        return 201, self._token_body(r, with_id=True), []

    def _r_verify(self, ctx: _Ctx, m: Any) -> tuple[int, Any, list]:
        r = self._runner_by_token(ctx)
        self._touch_manager(r, ctx)
        return 200, self._token_body(r, with_id=True), []

    def _r_unregister(self, ctx: _Ctx, m: Any) -> tuple[int, Any, list]:
        r = self._runner_by_token(ctx)
        self._delete(r)
        return 204, None, []

    def _r_delete_manager(self, ctx: _Ctx, m: Any) -> tuple[int, Any, list]:
        if ctx.fields.get("token") in (None, ""):
            raise _bad("token is missing")
        system_id = ctx.fields.get("system_id")
        if system_id in (None, ""):
            raise _bad("system_id is missing")
        r = self._runner_by_token(ctx)
        if r.managers.pop(_as_str(system_id), None) is None:
            raise _ApiError(404, {"message": "404 Runner Manager Not Found"})
        if not r.managers:
            r.contacted_at = None
        return 204, None, []

    def _r_reset_by_token(self, ctx: _Ctx, m: Any) -> tuple[int, Any, list]:
        r = self._runner_by_token(ctx)
        self._reset_token(r)
        return 201, self._token_body(r, with_id=False), []

    def _r_jobs_request(self, ctx: _Ctx, m: Any) -> tuple[int, Any, list]:
        r = self._runner_by_token(ctx)
        self._touch_manager(r, ctx)
        return 204, None, [("X-GitLab-Last-Update", secrets.token_hex(16))]

    def _r_list_owned(self, ctx: _Ctx, m: Any) -> tuple[int, Any, list]:
        user = self._user(ctx, SCOPE_READ)

        def visible(r: _RunnerState) -> bool:
            if r.runner_type == "instance_type":
                return False
            return self._can_update(user, r)

        # GET /runners declares every scope but filters by the statuses only.
        scopes = DEPRECATED_STATUSES + STATUSES
        return self._paginate(ctx, self._filtered(ctx, visible, scopes))

    def _r_list_all(self, ctx: _Ctx, m: Any) -> tuple[int, Any, list]:
        user = self._user(ctx, SCOPE_READ)
        if not user.admin:
            raise _ApiError(403)
        return self._paginate(ctx, self._filtered(ctx, lambda r: True, SCOPES))

    def _r_list_group(self, ctx: _Ctx, m: Any) -> tuple[int, Any, list]:
        user = self._user(ctx, SCOPE_READ)
        gid = int(m.group(1))
        if not (user.admin or gid in user.groups):
            raise _ApiError(403)

        def visible(r: _RunnerState) -> bool:
            return r.runner_type == "instance_type" or (
                r.runner_type == "group_type" and r.group_id == gid
            )

        # GET /groups/:id/runners declares no scope: Grape drops the parameter.
        return self._paginate(ctx, self._filtered(ctx, visible, None))

    def _r_list_project(self, ctx: _Ctx, m: Any) -> tuple[int, Any, list]:
        user = self._user(ctx, SCOPE_READ)
        pid = int(m.group(1))
        if not (user.admin or pid in user.projects):
            raise _ApiError(403)

        # GitLab's Ci::Runner.owned_or_instance_wide: the project's own runners, its
        # groups' (the fake has no project-group hierarchy) and the instance runners.
        def visible(r: _RunnerState) -> bool:
            return r.runner_type == "instance_type" or (
                r.runner_type == "project_type" and r.project_id == pid
            )

        return self._paginate(ctx, self._filtered(ctx, visible, SCOPES))

    def _r_get(self, ctx: _Ctx, m: Any) -> tuple[int, Any, list]:
        user = self._user(ctx, SCOPE_MANAGE_READ)
        projects = ctx.fields.get("include_projects")
        with_projects = projects in (None, "") or _as_bool("include_projects", projects)
        r = self._runner_for(ctx, m, user, update=False)
        body = self._details(r, self._can_update(user, r))
        if not with_projects:
            del body["projects"]
        if self.runner_details_token:  # LLNL's runner_details.rb patch
            body["token"] = r.token
        return 200, body, []

    def _r_update(self, ctx: _Ctx, m: Any) -> tuple[int, Any, list]:
        user = self._user(ctx, SCOPE_MANAGE_WRITE)
        attrs = _runner_attrs(ctx.fields)
        if not any(k in ctx.fields for k in _ATTR_KEYS):
            raise _bad(
                "description, active, paused, tag_list, run_untagged, locked, access_level, "
                "maximum_timeout, maintenance_note are missing, "
                "at least one parameter must be provided"
            )
        _active_or_paused(ctx.fields)
        r = self._runner_for(ctx, m, user, update=True)
        errors = _model_errors(
            attrs.get("tags", r.tags),
            attrs.get("run_untagged", r.run_untagged),
            attrs.get("maximum_timeout", r.maximum_timeout),
            attrs.get("maintenance_note", r.maintenance_note),
        )
        if errors:
            raise _hash_error(errors)
        for key, value in attrs.items():
            setattr(r, key, list(value) if key == "tags" else value)
        return 200, self._details(r, True), []

    def _r_delete(self, ctx: _Ctx, m: Any) -> tuple[int, Any, list]:
        user = self._user(ctx, SCOPE_MANAGE_WRITE)
        r = self._runner_for(ctx, m, user, update=True)
        self._delete(r)
        return 204, None, []

    def _r_managers(self, ctx: _Ctx, m: Any) -> tuple[int, Any, list]:
        user = self._user(ctx, SCOPE_MANAGE_READ)
        r = self._runner_for(ctx, m, user, update=False)
        now = time.time()
        body = []
        for mgr in r.managers.values():
            age = now - mgr["contacted_at"]
            status = "online" if age <= ONLINE_WINDOW else "offline"
            if age > STALE_AFTER:
                status = "stale"
            body.append(
                {
                    "id": mgr["id"],
                    "system_id": mgr["system_id"],
                    "version": mgr["version"],
                    "revision": mgr["revision"],
                    "platform": mgr["platform"],
                    "architecture": mgr["architecture"],
                    "created_at": _iso(mgr["created_at"]),
                    "contacted_at": _iso(mgr["contacted_at"]),
                    "ip_address": None,
                    "status": status,
                }
            )
        return 200, body, []

    def _r_jobs(self, ctx: _Ctx, m: Any) -> tuple[int, Any, list]:
        user = self._user(ctx, SCOPE_MANAGE_READ)
        self._runner_for(ctx, m, user, update=False)
        return self._paginate(ctx, [])

    def _r_reset_by_id(self, ctx: _Ctx, m: Any) -> tuple[int, Any, list]:
        user = self._user(ctx, SCOPE_MANAGE_WRITE)
        r = self._runner_for(ctx, m, user, update=True)
        self._reset_token(r)
        return 201, self._token_body(r, with_id=False), []


_ROUTES: list[tuple[str, Any, Callable[..., Any]]] = [
    ("GET", re.compile(r"^/version$"), _Routes._r_version),
    ("GET", re.compile(r"^/user$"), _Routes._r_user),
    ("GET", re.compile(r"^/personal_access_tokens/self$"), _Routes._r_token_self),
    ("POST", re.compile(r"^/user/runners$"), _Routes._r_create),
    ("POST", re.compile(r"^/runners$"), _Routes._r_register),
    ("DELETE", re.compile(r"^/runners$"), _Routes._r_unregister),
    ("POST", re.compile(r"^/runners/verify$"), _Routes._r_verify),
    ("DELETE", re.compile(r"^/runners/managers$"), _Routes._r_delete_manager),
    ("POST", re.compile(r"^/runners/reset_authentication_token$"), _Routes._r_reset_by_token),
    ("POST", re.compile(r"^/jobs/request$"), _Routes._r_jobs_request),
    ("GET", re.compile(r"^/runners$"), _Routes._r_list_owned),
    ("GET", re.compile(r"^/runners/all$"), _Routes._r_list_all),
    ("GET", re.compile(r"^/groups/(\d+)/runners$"), _Routes._r_list_group),
    ("GET", re.compile(r"^/projects/(\d+)/runners$"), _Routes._r_list_project),
    ("GET", re.compile(r"^/runners/(\d+)$"), _Routes._r_get),
    ("PUT", re.compile(r"^/runners/(\d+)$"), _Routes._r_update),
    ("DELETE", re.compile(r"^/runners/(\d+)$"), _Routes._r_delete),
    ("GET", re.compile(r"^/runners/(\d+)/managers$"), _Routes._r_managers),
    ("GET", re.compile(r"^/runners/(\d+)/jobs$"), _Routes._r_jobs),
    (
        "POST",
        re.compile(r"^/runners/(\d+)/reset_authentication_token$"),
        _Routes._r_reset_by_id,
    ),
]
