"""The fake GitLab's data: runners, users, requests, and GitLab's validation rules."""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from http import HTTPStatus
from typing import Any, Optional
from urllib.parse import parse_qsl

VERSION = "17.5.0-fake"
RUNNER_TYPES = ("instance_type", "group_type", "project_type")
ACCESS_LEVELS = ("not_protected", "ref_protected")
STATUSES = ("online", "offline", "stale", "never_contacted")
DEPRECATED_STATUSES = ("active", "paused")
# The deprecated ``scope`` of the list endpoints: Ci::Runner::AVAILABLE_SCOPES.
LEGACY_TYPES = ("specific", "shared")
SCOPES = LEGACY_TYPES + RUNNER_TYPES + DEPRECATED_STATUSES + STATUSES
ONLINE_WINDOW = 2 * 3600
STALE_AFTER = 7 * 86400
MAX_TAGS = 50
MAX_NOTE = 1024
MIN_TIMEOUT = 600
DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 100
LEGACY_SYSTEM_ID = "<legacy>"

SCOPE_READ = ("api", "read_api")
SCOPE_CREATE = ("api", "create_runner")
SCOPE_MANAGE_READ = ("api", "read_api", "manage_runner")
SCOPE_MANAGE_WRITE = ("api", "manage_runner")

_INSUFFICIENT_SCOPE = "The request requires higher privileges than provided by the access token."
_NOT_MUTATING = frozenset({"/runners/verify", "/jobs/request"})
_TRUE = frozenset({"true", "1", "t", "yes", "y", "on"})
_FALSE = frozenset({"false", "0", "f", "no", "n", "off"})


# --------------------------------------------------------------------------- data


@dataclass
class Runner:
    """A snapshot (copy) of one runner as the fake GitLab stores it.

    ``created_at`` and ``contacted_at`` (here and in ``managers``) are POSIX
    timestamps (float seconds); ``token_expires_at`` is the ISO 8601 string
    the API returns, or None.
    """

    id: int
    token: str
    token_expires_at: Optional[str]
    description: str
    tag_list: list[str]
    run_untagged: bool
    locked: bool
    paused: bool
    access_level: str
    maximum_timeout: Optional[int]
    maintenance_note: Optional[str]
    runner_type: str
    group_id: Optional[int]
    project_id: Optional[int]
    created_at: float
    contacted_at: Optional[float]
    managers: dict[str, dict[str, Any]] = field(default_factory=dict)
    token_valid: bool = True


@dataclass
class Request:
    """One request as the fake GitLab received it (``path`` has no /api/v4, no query)."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    form: dict[str, Any]
    headers: dict[str, str]

    @property
    def mutating(self) -> bool:
        return _is_mutating(self.method, self.path)


def _is_mutating(method: str, path: str) -> bool:
    if method in ("PUT", "DELETE", "PATCH"):
        return True
    return method == "POST" and path not in _NOT_MUTATING


class _ApiError(Exception):
    def __init__(self, status: int, body: Any = None, headers: Optional[list] = None):
        super().__init__(status)
        self.status = status
        self.body = _message(status) if body is None else body
        self.headers = headers or []


# Phrases for codes that proxies and load balancers send but http.HTTPStatus lacks.
_EXTRA_PHRASES = {
    499: "Client Closed Request",
    520: "Web Server Returned an Unknown Error",
    521: "Web Server Is Down",
    522: "Connection Timed Out",
    523: "Origin Is Unreachable",
    524: "A Timeout Occurred",
    598: "Network Read Timeout Error",
    599: "Network Connect Timeout Error",
}
_CLASS_PHRASES = {
    1: "Informational",
    2: "Success",
    3: "Redirection",
    4: "Client Error",
    5: "Server Error",
}


def _phrase(status: int) -> str:
    """The reason phrase of ``status``; a generic one for a code nobody named."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        pass
    return _EXTRA_PHRASES.get(status) or _CLASS_PHRASES.get(status // 100, "Unknown Status")


def _message(status: int) -> dict[str, Any]:
    return {"message": f"{status} {_phrase(status)}"}


def _bad(error: str) -> _ApiError:
    """A parameter error as Grape reports it: 400 {"error": ...}."""
    return _ApiError(400, {"error": error})


class _User:
    """A user with its one personal access token (the token's id is the user's id)."""

    __slots__ = (
        "admin",
        "created_at",
        "expires_at",
        "groups",
        "id",
        "last_used_at",
        "projects",
        "revoked",
        "scopes",
        "token",
        "username",
    )

    def __init__(
        self,
        uid: int,
        username: str,
        token: str,
        scopes: Iterable[str],
        admin: bool,
        groups: Iterable[int],
        projects: Iterable[int],
        expires_at: Optional[date] = None,
    ) -> None:
        self.id = uid
        self.username = username
        self.token = token
        self.scopes = frozenset(scopes)
        self.admin = bool(admin)
        self.groups = frozenset(int(g) for g in groups)
        self.projects = frozenset(int(p) for p in projects)
        self.revoked = False
        self.created_at = time.time()
        self.last_used_at: Optional[float] = None
        self.expires_at: Optional[date] = expires_at

    @property
    def expired(self) -> bool:
        # GitLab: a token is no longer valid on its expiry date (from 00:00 UTC).
        today = datetime.now(timezone.utc).date()
        return self.expires_at is not None and self.expires_at <= today

    def token_info(self) -> dict[str, Any]:
        """GET /personal_access_tokens/self."""
        return {
            "id": self.id,
            "name": f"{self.username}-token",
            "revoked": self.revoked,
            "created_at": _iso(self.created_at),
            "scopes": sorted(self.scopes),
            "user_id": self.id,
            "last_used_at": _iso(self.last_used_at),
            "active": not (self.revoked or self.expired),
            "expires_at": None if self.expires_at is None else self.expires_at.isoformat(),
        }


class _RunnerState:
    __slots__ = (
        "access_level",
        "contacted_at",
        "created_at",
        "description",
        "expires",
        "group_id",
        "id",
        "locked",
        "maintenance_note",
        "managers",
        "maximum_timeout",
        "paused",
        "prefix",
        "project_id",
        "run_untagged",
        "runner_type",
        "tags",
        "token",
        "token_valid",
    )
    access_level: str
    contacted_at: Optional[float]
    created_at: float
    description: str
    expires: Optional[float]
    group_id: Optional[int]
    id: int
    locked: bool
    maintenance_note: Optional[str]
    managers: dict[str, dict[str, Any]]
    maximum_timeout: Optional[int]
    paused: bool
    prefix: str
    project_id: Optional[int]
    run_untagged: bool
    runner_type: str
    tags: list[str]
    token: str
    token_valid: bool

    def snapshot(self) -> Runner:
        return Runner(
            id=self.id,
            token=self.token,
            token_expires_at=_iso(self.expires),
            description=self.description,
            tag_list=list(self.tags),
            run_untagged=self.run_untagged,
            locked=self.locked,
            paused=self.paused,
            access_level=self.access_level,
            maximum_timeout=self.maximum_timeout,
            maintenance_note=self.maintenance_note,
            runner_type=self.runner_type,
            group_id=self.group_id,
            project_id=self.project_id,
            created_at=self.created_at,
            contacted_at=self.contacted_at,
            managers={k: dict(v) for k, v in self.managers.items()},
            token_valid=self.token_valid,
        )

    def status(self, now: float) -> str:
        if self.contacted_at is None:
            return "stale" if now - self.created_at > STALE_AFTER else "never_contacted"
        age = now - self.contacted_at
        if age > STALE_AFTER:
            return "stale"
        return "online" if age <= ONLINE_WINDOW else "offline"


class _Ctx:
    """What a route handler needs to know about the request."""

    __slots__ = ("fields", "headers", "host", "method", "path", "query_pairs")

    def __init__(
        self,
        method: str,
        path: str,
        query_pairs: list[tuple[str, str]],
        fields: dict[str, Any],
        headers: Any,
        host: str,
    ) -> None:
        self.method = method
        self.path = path
        self.query_pairs = query_pairs
        self.fields = fields
        self.headers = headers
        self.host = host


# ------------------------------------------------------------------ value helpers


def _iso(ts: Optional[float]) -> Optional[str]:
    if ts is None:
        return None
    ms = round((ts - math.floor(ts)) * 1000)
    base = math.floor(ts)
    if ms >= 1000:
        base, ms = base + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base)) + f".{ms:03d}Z"


def _to_ts(value: Any) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        return _to_ts(datetime.fromisoformat(text))
    raise TypeError(f"not a timestamp: {value!r}")


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        low = value.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    raise _bad(f"{name} is invalid")


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise _bad(f"{name} is invalid")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise _bad(f"{name} is invalid")


def _as_str(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def _as_tags(value: Any) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else _as_str(value).split(",")
    tags: list[str] = []
    seen = set()
    for item in items:
        for part in _as_str(item).split(","):
            tag = part.strip()
            if tag and tag not in seen:
                seen.add(tag)
                tags.append(tag)
    return tags


def _access_token(headers: Any, fields: dict[str, Any]) -> Optional[str]:
    """The personal access token of a request, wherever GitLab accepts it."""
    token = headers.get("PRIVATE-TOKEN")
    if not token:
        auth = headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            token = auth[7:].strip()
    if not token:
        token = fields.get("private_token")
    return token if isinstance(token, str) and token else None


def _parse_form(text: str) -> dict[str, Any]:
    """Form or query fields: ``k[]`` collects a list, ``k[sub]`` a dict, else last value."""
    out: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        if key.endswith("[]"):
            name = key[:-2]
            cur = out.get(name)
            if not isinstance(cur, list):
                cur = out[name] = []
            cur.append(value)
        elif key.endswith("]") and "[" in key:
            name, _, sub = key[:-1].partition("[")
            cur = out.get(name)
            if not isinstance(cur, dict):
                cur = out[name] = {}
            cur[sub] = value
        else:
            out[key] = value
    return out


def _parse_body(raw: bytes, content_type: str) -> dict[str, Any]:
    if not raw or not raw.strip():
        return {}
    ctype = content_type.split(";", 1)[0].strip().lower()
    if (
        ctype == "application/json"
        or ctype.endswith("+json")
        or (not ctype and raw.lstrip()[:1] == b"{")
    ):
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise _ApiError(400, {"message": f"400 Bad request - invalid JSON: {exc}"}) from None
        if not isinstance(data, dict):
            raise _ApiError(400, {"message": "400 Bad request - JSON body must be an object"})
        return data
    return _parse_form(raw.decode("utf-8", "replace"))


def _model_errors(
    tags: list[str], run_untagged: bool, maximum_timeout: Optional[int], note: Optional[str]
) -> list[tuple[str, str, str]]:
    """Ci::Runner validations: (attribute, message, full message)."""
    errors = []
    if not run_untagged and not tags:
        short = "can not be empty when runner is not allowed to pick untagged jobs"
        errors.append(("tags_list", short, "Tags list " + short))
    if len(tags) > MAX_TAGS:
        short = f"Too many tags specified. Please limit the number of tags to {MAX_TAGS}"
        errors.append(("tags_list", short, short))
    if maximum_timeout is not None and maximum_timeout < MIN_TIMEOUT:
        short = "needs to be at least 10 minutes"
        errors.append(("maximum_timeout", short, "Maximum timeout " + short))
    if note is not None and len(note) > MAX_NOTE:
        short = f"is too long (maximum is {MAX_NOTE} characters)"
        errors.append(("maintenance_note", short, "Maintenance note " + short))
    return errors


def _string_error(errors: list[tuple[str, str, str]]) -> _ApiError:
    return _ApiError(400, {"message": ", ".join(full for _, _, full in errors)})


def _hash_error(errors: list[tuple[str, str, str]]) -> _ApiError:
    body: dict[str, list[str]] = {}
    for attr, short, _ in errors:
        body.setdefault(attr, []).append(short)
    return _ApiError(400, {"message": body})


_ATTR_KEYS = (
    "description",
    "paused",
    "active",
    "locked",
    "run_untagged",
    "tag_list",
    "access_level",
    "maximum_timeout",
    "maintenance_note",
)


def _active_or_paused(fields: dict[str, Any]) -> None:
    """Grape's ``mutually_exclusive :active, :paused`` (PUT /runners/:id, POST /runners)."""
    if "active" in fields and "paused" in fields:
        raise _bad("active, paused are mutually exclusive")


def _runner_attrs(fields: dict[str, Any]) -> dict[str, Any]:
    """The registration attributes present in ``fields`` (400 on a bad value)."""
    attrs: dict[str, Any] = {}
    if "description" in fields:
        attrs["description"] = _as_str(fields["description"])
    if "paused" in fields:
        attrs["paused"] = _as_bool("paused", fields["paused"])
    elif "active" in fields:
        attrs["paused"] = not _as_bool("active", fields["active"])
    for name in ("locked", "run_untagged"):
        if name in fields:
            attrs[name] = _as_bool(name, fields[name])
    if "tag_list" in fields:
        attrs["tags"] = _as_tags(fields["tag_list"])
    if "access_level" in fields:
        level = _as_str(fields["access_level"])
        if level not in ACCESS_LEVELS:
            raise _bad("access_level does not have a valid value")
        attrs["access_level"] = level
    if "maximum_timeout" in fields:
        value = fields["maximum_timeout"]
        attrs["maximum_timeout"] = (
            None if value is None or value == "" else _as_int("maximum_timeout", value)
        )
    if "maintenance_note" in fields:
        value = fields["maintenance_note"]
        attrs["maintenance_note"] = None if value is None else _as_str(value)
    return attrs


def _new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(15)


def _json(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")
