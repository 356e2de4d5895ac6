"""A fake GitLab (REST API v4) for end-to-end tests, demos and benchmarks.

It is a real HTTP server on 127.0.0.1 that implements everything a runner
registration tool touches: ``POST /user/runners``, the legacy ``POST /runners``,
the runner-token endpoints (verify, delete, managers, reset), the PAT runner
endpoints (lists with filters and GitLab's pagination, details, update, delete,
managers, reset) and ``POST /jobs/request``. Access-token scopes and roles
(admin, group Owner, project Maintainer) are enforced the way GitLab does, and
faults can be injected: latency, failing requests, an unreachable server,
requests held in flight, rate limiting.

Python API::

    with FakeGitLab() as gl:
        pat = gl.add_access_token(scopes=("api",), admin=True)
        ...  # talk to gl.url over HTTP
        gl.runners(), gl.requests, gl.mutating_requests()

Command line::

    python -m register_runner.testing.fake_gitlab --port 8080

Standard library only; runs on Python 3.9.
"""

from __future__ import annotations

import argparse
import contextlib
import email.utils
import json
import math
import re
import secrets
import signal
import socket
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional
from urllib.parse import parse_qsl, urlencode

__all__ = ["Block", "FakeGitLab", "Request", "Runner", "main"]

VERSION = "17.5.0-fake"
RUNNER_TYPES = ("instance_type", "group_type", "project_type")
ACCESS_LEVELS = ("not_protected", "ref_protected")
STATUSES = ("online", "offline", "stale", "never_contacted")
DEPRECATED_STATUSES = ("active", "paused")
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


class _ApiError(Exception):
    def __init__(self, status: int, body: Any = None, headers: Optional[list] = None):
        super().__init__(status)
        self.status = status
        self.body = _message(status) if body is None else body
        self.headers = headers or []


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _message(status: int) -> dict[str, Any]:
    return {"message": f"{status} {_phrase(status)}"}


def _bad(error: str) -> _ApiError:
    """A parameter error as Grape reports it: 400 {"error": ...}."""
    return _ApiError(400, {"error": error})


class _User:
    __slots__ = ("admin", "groups", "id", "projects", "revoked", "scopes", "token", "username")

    def __init__(self, uid, username, token, scopes, admin, groups, projects):
        self.id = uid
        self.username = username
        self.token = token
        self.scopes = frozenset(scopes)
        self.admin = bool(admin)
        self.groups = frozenset(int(g) for g in groups)
        self.projects = frozenset(int(p) for p in projects)
        self.revoked = False


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


class _Ctx:
    """What a route handler needs to know about the request."""

    __slots__ = ("fields", "headers", "host", "method", "path", "query_pairs")

    def __init__(self, method, path, query_pairs, fields, headers, host):
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


# ------------------------------------------------------------------------- server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    fake: FakeGitLab

    def handle_error(self, request, client_address):  # quiet: clients hang up all the time
        exc = sys.exc_info()[1]
        if not isinstance(exc, (OSError, ValueError)):
            traceback.print_exc()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeGitLab/" + VERSION
    sys_version = ""
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.fake._track(self.connection, False)

    def handle(self) -> None:
        # A reset connection, or one closed by down()/stop(), is not an error.
        with contextlib.suppress(OSError, ValueError):
            super().handle()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        body = self._read_body()
        fake = self.server.fake
        status, payload, headers = fake._serve(
            self.command, self.path, self.headers, body, self.client_address[0]
        )
        if fake._closing:
            self.close_connection = True
        data = b"" if status in (204, 304) or payload is None else _json(payload)
        lines = [
            f"HTTP/1.1 {status} {_phrase(status)}",
            "Server: " + self.server_version,
            "Date: " + email.utils.formatdate(usegmt=True),
        ]
        if status not in (204, 304):
            lines.append("Content-Type: application/json")
            lines.append(f"Content-Length: {len(data)}")
        for key, value in headers:
            lines.append(f"{key}: {value}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch


def _json(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


# ----------------------------------------------------------------------- the fake


class FakeGitLab:
    """A fake GitLab REST API v4 served over HTTP on ``host:port`` (0 = a free port)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self.port = port
        self.latency = 0.0
        self.allow_registration_tokens = True
        self.runner_token_lifetime: Optional[float] = None

        self._lock = threading.Lock()
        self._runners: dict[int, _RunnerState] = {}
        self._by_token: dict[str, int] = {}
        self._next_runner_id = 1
        self._next_manager_id = 1
        self._users: dict[str, _User] = {}
        self._next_user_id = 1
        self._reg_tokens: dict[tuple, str] = {}
        self._reg_scopes: dict[str, tuple] = {}
        self._log: list[Request] = []
        self._stats: dict[str, int] = {"requests": 0, "max_in_flight": 0, "connections": 0}
        self._in_flight = 0
        self._fails: list[_Fail] = []
        self._blocks: list[Block] = []
        self._rate_limit: Optional[int] = None
        self._rate_key = "ip"
        self._rate_windows: dict[str, deque] = {}

        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self._conns: set = set()
        self._conn_lock = threading.Lock()
        self._closing = False
        self._started = False

    # ---------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def api_url(self) -> str:
        return self.url + "/api/v4"

    @property
    def is_up(self) -> bool:
        return self._server is not None

    def start(self) -> FakeGitLab:
        """Listen and serve in a background thread."""
        if self._started:
            return self
        self._started = True
        self.up()
        return self

    def stop(self) -> None:
        """Stop serving, drop every connection and let held requests go."""
        self.down()
        with self._lock:
            blocks = list(self._blocks)
        for block in blocks:
            block.release()
        self._started = False

    def __enter__(self) -> FakeGitLab:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def down(self) -> None:
        """Close the listening socket and every open connection (connection refused)."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._closing = True
        self._server = self._thread = None
        server.shutdown()
        server.server_close()
        with self._conn_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join(5)

    def up(self) -> None:
        """Listen again (on the same port after :meth:`down`)."""
        if self._server is not None:
            return
        server = _Server((self.host, self.port), _Handler)
        server.fake = self
        self.port = server.server_address[1]
        self._closing = False
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-gitlab-{self.port}",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()

    def _track(self, conn: Any, add: bool) -> None:
        with self._conn_lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)
        if add:
            with self._lock:
                self._stats["connections"] = self._stats.get("connections", 0) + 1
        if add and self._closing:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    # ----------------------------------------------------------- users, tokens

    def add_access_token(
        self,
        scopes: Any = ("api",),
        admin: bool = False,
        groups: Any = (),
        projects: Any = (),
        token: Optional[str] = None,
        username: Optional[str] = None,
    ) -> str:
        """A new user with a personal access token.

        ``groups``: ids of the groups the user owns; ``projects``: ids of the
        projects the user maintains. Returns the token (``glpat-…``).
        """
        if isinstance(scopes, str):
            scopes = [s for s in re.split(r"[\s,]+", scopes) if s]
        token = token or _new_token("glpat-")
        with self._lock:
            uid = self._next_user_id
            self._next_user_id += 1
            name = username or ("root" if admin and uid == 1 else f"user{uid}")
            self._users[token] = _User(uid, name, token, scopes, admin, groups, projects)
        return token

    def revoke_access_token(self, token: str) -> None:
        with self._lock:
            user = self._users.get(token)
            if user is None:
                raise KeyError("unknown access token")
            user.revoked = True

    def registration_token(
        self,
        runner_type: str = "instance_type",
        group_id: Optional[int] = None,
        project_id: Optional[int] = None,
    ) -> str:
        """The legacy registration token of the instance, a group or a project (stable)."""
        key = self._scope_key(runner_type, group_id, project_id)
        with self._lock:
            token = self._reg_tokens.get(key)
            if token is None:
                token = _new_token("GR1348941")
                self._reg_tokens[key] = token
                self._reg_scopes[token] = key
            return token

    @staticmethod
    def _scope_key(runner_type: str, group_id: Any, project_id: Any) -> tuple:
        if runner_type not in RUNNER_TYPES:
            raise ValueError(f"runner_type must be one of {RUNNER_TYPES}")
        if runner_type == "group_type":
            if group_id is None:
                raise ValueError("group_type needs a group_id")
            return (runner_type, int(group_id), None)
        if runner_type == "project_type":
            if project_id is None:
                raise ValueError("project_type needs a project_id")
            return (runner_type, None, int(project_id))
        return (runner_type, None, None)

    # ----------------------------------------------------------------- runners

    def add_runner(
        self,
        runner_type: str = "instance_type",
        description: str = "",
        tag_list: Any = (),
        group_id: Optional[int] = None,
        project_id: Optional[int] = None,
        **attrs: Any,
    ) -> Runner:
        """Create a runner out of band (no request is logged).

        ``attrs``: run_untagged, locked, paused, access_level, maximum_timeout,
        maintenance_note, token, created_at, contacted_at (POSIX time, datetime
        or ISO string).
        """
        allowed = {
            "run_untagged",
            "locked",
            "paused",
            "access_level",
            "maximum_timeout",
            "maintenance_note",
            "token",
            "created_at",
            "contacted_at",
        }
        unknown = set(attrs) - allowed
        if unknown:
            raise TypeError(f"unknown runner attributes: {sorted(unknown)}")
        rtype, gid, pid = self._scope_key(runner_type, group_id, project_id)
        with self._lock:
            r = self._create(
                rtype,
                gid,
                pid,
                {
                    "description": description,
                    "tags": _as_tags(list(tag_list)),
                    **{k: v for k, v in attrs.items() if k not in ("token", "created_at")},
                },
                prefix="glrt-",
                token=attrs.get("token"),
            )
            if "created_at" in attrs:
                r.created_at = _to_ts(attrs["created_at"])
            r.contacted_at = _to_ts(attrs.get("contacted_at"))
            return r.snapshot()

    def runner(self, runner_id: int) -> Optional[Runner]:
        with self._lock:
            r = self._runners.get(int(runner_id))
            return r.snapshot() if r else None

    def runners(self) -> list[Runner]:
        with self._lock:
            return [r.snapshot() for r in self._runners.values()]

    def revoke_runner_token(self, runner_id: int) -> None:
        """The runner's token stops working (verify: 403); the runner stays."""
        with self._lock:
            r = self._get_state(runner_id)
            self._by_token.pop(r.token, None)
            r.token_valid = False

    def expire_runner_token(self, runner_id: int) -> None:
        """Set the runner's token_expires_at to now: the token no longer works."""
        with self._lock:
            r = self._get_state(runner_id)
            r.expires = time.time() - 0.001

    def rotate_runner_token(self, runner_id: int) -> str:
        """What gitlab-runner's automatic rotation does: a new token, the old one dead."""
        with self._lock:
            return self._reset_token(self._get_state(runner_id))

    def _get_state(self, runner_id: int) -> _RunnerState:
        r = self._runners.get(int(runner_id))
        if r is None:
            raise KeyError(f"no runner {runner_id}")
        return r

    # ------------------------------------------------------------- request log

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return [
                Request(q.method, q.path, dict(q.query), q.status, dict(q.form), dict(q.headers))
                for q in self._log
            ]

    def clear_requests(self) -> None:
        with self._lock:
            self._log.clear()

    def mutating_requests(self) -> list[Request]:
        return [q for q in self.requests if q.mutating]

    @property
    def stats(self) -> dict[str, int]:
        """Counts: "requests" (total), one key per answered status ("201", "429"…),
        "max_in_flight" (most requests being handled at once), "connections" (accepted)."""
        with self._lock:
            return dict(self._stats)

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = {"requests": 0, "max_in_flight": self._in_flight, "connections": 0}

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

    # ------------------------------------------------------------ request flow

    def _serve(
        self, method: str, target: str, headers: Any, raw: bytes, client_ip: str
    ) -> tuple[int, Any, list]:
        path_part, _, qs = target.partition("?")
        if path_part.startswith(("http://", "https://")):  # absolute-form target
            path_part = "/" + path_part.split("/", 3)[-1]
        if path_part == "/api/v4" or path_part.startswith("/api/v4/"):
            path, api = path_part[7:], True
        else:
            path, api = path_part, False
        query_pairs = parse_qsl(qs, keep_blank_values=True)
        early: Optional[_ApiError] = None
        try:
            form = _parse_body(raw, headers.get("Content-Type", ""))
        except _ApiError as exc:
            form, early = {}, exc
        record = Request(method, path, dict(query_pairs), 0, form, dict(headers.items()))

        fail: Optional[_Fail] = None
        limited: Optional[_ApiError] = None
        with self._lock:
            self._log.append(record)
            self._stats["requests"] += 1
            self._in_flight += 1
            if self._in_flight > self._stats.get("max_in_flight", 0):
                self._stats["max_in_flight"] = self._in_flight
            for f in self._fails:
                if f.count > 0 and f.matches(method, path):
                    f.count -= 1
                    fail = f
                    break
            if fail is not None:
                self._fails = [f for f in self._fails if f.count > 0]
            elif self._rate_limit is not None:
                who = client_ip if self._rate_key == "ip" else headers.get("User-Agent", "")
                limited = self._rate_check(who)

        status = 500
        try:
            if self.latency:
                time.sleep(self.latency)
            if fail is not None:
                extra = []
                if fail.retry_after is not None:
                    extra.append(("Retry-After", str(fail.retry_after)))
                status = fail.status
                with self._lock:
                    self._finish(record, status)
                return status, _message(status), extra
            if limited is not None:
                status = limited.status
                with self._lock:
                    self._finish(record, status)
                return status, limited.body, limited.headers

            self._hold(method, path, "before")
            with self._lock:
                if early is not None:
                    status, payload, extra = early.status, early.body, early.headers
                elif not api:
                    status, payload, extra = 404, _message(404), []
                else:
                    fields = _parse_form(qs) if qs else {}
                    fields.update(form)
                    host = headers.get("Host") or f"{self.host}:{self.port}"
                    ctx = _Ctx(method, path, query_pairs, fields, headers, host)
                    status, payload, extra = self._route(ctx)
                self._finish(record, status)
            self._hold(method, path, "after")
            return status, payload, extra
        finally:
            with self._lock:
                self._in_flight -= 1

    def _finish(self, record: Request, status: int) -> None:
        record.status = status
        key = str(status)
        self._stats[key] = self._stats.get(key, 0) + 1

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

    def _route(self, ctx: _Ctx) -> tuple[int, Any, list]:
        try:
            for method, pattern, handler in _ROUTES:
                m = pattern.match(ctx.path)
                if m is not None and method == ctx.method:
                    return handler(self, ctx, m)
            return 404, _message(404), []
        except _ApiError as exc:
            return exc.status, exc.body, exc.headers
        except Exception as exc:  # a bug in the fake: say so loudly
            traceback.print_exc()
            return 500, {"message": "500 Internal Server Error", "exception": repr(exc)}, []

    # ------------------------------------------------------------ auth helpers

    def _user(self, ctx: _Ctx, allowed: tuple[str, ...]) -> _User:
        token = ctx.headers.get("PRIVATE-TOKEN")
        if not token:
            auth = ctx.headers.get("Authorization", "")
            if auth[:7].lower() == "bearer ":
                token = auth[7:].strip()
        if not token:
            token = ctx.fields.get("private_token")
        user = self._users.get(token) if isinstance(token, str) else None
        if user is None or user.revoked:
            raise _ApiError(401, {"message": "401 Unauthorized"})
        if not user.scopes.intersection(allowed):
            raise _ApiError(
                403,
                {
                    "error": "insufficient_scope",
                    "error_description": _INSUFFICIENT_SCOPE,
                    "scope": " ".join(allowed),
                },
            )
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
        next_page = page + 1 if page < pages else None
        prev_page = page - 1 if page > 1 else None

        base = f"http://{ctx.host}/api/v4{ctx.path}"
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
        links.append(link(pages, "last"))
        headers = [
            ("X-Page", str(page)),
            ("X-Per-Page", str(per_page)),
            ("X-Next-Page", "" if next_page is None else str(next_page)),
            ("X-Prev-Page", "" if prev_page is None else str(prev_page)),
            ("X-Total", str(total)),
            ("X-Total-Pages", str(pages)),
            ("Link", ", ".join(links)),
        ]
        return 200, body, headers

    def _filtered(self, ctx: _Ctx, keep: Callable[[_RunnerState], bool]) -> list[_RunnerState]:
        fields = ctx.fields
        rtype = fields.get("type")
        if rtype not in (None, "") and rtype not in RUNNER_TYPES:
            raise _bad("type does not have a valid value")
        status = fields.get("status")
        if status not in (None, "") and status not in STATUSES + DEPRECATED_STATUSES:
            raise _bad("status does not have a valid value")
        paused = None
        if fields.get("paused") not in (None, ""):
            paused = _as_bool("paused", fields["paused"])
        tags = _as_tags(fields.get("tag_list")) if "tag_list" in fields else []
        if "version_prefix" in fields:
            prefix = _as_str(fields["version_prefix"])
            if prefix and not re.match(r"^[\d.]+$", prefix):
                raise _bad("version_prefix is invalid")
        now = time.time()
        out = []
        for r in self._runners.values():
            if not keep(r):
                continue
            if rtype and r.runner_type != rtype:
                continue
            if paused is not None and r.paused != paused:
                continue
            if status:
                if status == "active":
                    if r.paused:
                        continue
                elif status == "paused":
                    if not r.paused:
                        continue
                elif r.status(now) != status:
                    continue
            if tags and not all(t in r.tags for t in tags):
                continue
            out.append(r)
        return out

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
        attrs = _runner_attrs(fields)
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

        return self._paginate(ctx, self._filtered(ctx, visible))

    def _r_list_all(self, ctx: _Ctx, m: Any) -> tuple[int, Any, list]:
        user = self._user(ctx, SCOPE_READ)
        if not user.admin:
            raise _ApiError(403)
        return self._paginate(ctx, self._filtered(ctx, lambda r: True))

    def _r_list_group(self, ctx: _Ctx, m: Any) -> tuple[int, Any, list]:
        user = self._user(ctx, SCOPE_READ)
        gid = int(m.group(1))
        if not (user.admin or gid in user.groups):
            raise _ApiError(403)

        def visible(r: _RunnerState) -> bool:
            return r.runner_type == "instance_type" or (
                r.runner_type == "group_type" and r.group_id == gid
            )

        return self._paginate(ctx, self._filtered(ctx, visible))

    def _r_list_project(self, ctx: _Ctx, m: Any) -> tuple[int, Any, list]:
        user = self._user(ctx, SCOPE_READ)
        pid = int(m.group(1))
        if not (user.admin or pid in user.projects):
            raise _ApiError(403)

        def visible(r: _RunnerState) -> bool:
            return r.runner_type == "project_type" and r.project_id == pid

        return self._paginate(ctx, self._filtered(ctx, visible))

    def _r_get(self, ctx: _Ctx, m: Any) -> tuple[int, Any, list]:
        user = self._user(ctx, SCOPE_MANAGE_READ)
        r = self._runner_for(ctx, m, user, update=False)
        return 200, self._details(r, self._can_update(user, r)), []

    def _r_update(self, ctx: _Ctx, m: Any) -> tuple[int, Any, list]:
        user = self._user(ctx, SCOPE_MANAGE_WRITE)
        attrs = _runner_attrs(ctx.fields)
        if not any(k in ctx.fields for k in _ATTR_KEYS):
            raise _bad(
                "description, active, paused, tag_list, run_untagged, locked, access_level, "
                "maximum_timeout, maintenance_note are missing, "
                "at least one parameter must be provided"
            )
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
    ("GET", re.compile(r"^/version$"), FakeGitLab._r_version),
    ("GET", re.compile(r"^/user$"), FakeGitLab._r_user),
    ("POST", re.compile(r"^/user/runners$"), FakeGitLab._r_create),
    ("POST", re.compile(r"^/runners$"), FakeGitLab._r_register),
    ("DELETE", re.compile(r"^/runners$"), FakeGitLab._r_unregister),
    ("POST", re.compile(r"^/runners/verify$"), FakeGitLab._r_verify),
    ("DELETE", re.compile(r"^/runners/managers$"), FakeGitLab._r_delete_manager),
    ("POST", re.compile(r"^/runners/reset_authentication_token$"), FakeGitLab._r_reset_by_token),
    ("POST", re.compile(r"^/jobs/request$"), FakeGitLab._r_jobs_request),
    ("GET", re.compile(r"^/runners$"), FakeGitLab._r_list_owned),
    ("GET", re.compile(r"^/runners/all$"), FakeGitLab._r_list_all),
    ("GET", re.compile(r"^/groups/(\d+)/runners$"), FakeGitLab._r_list_group),
    ("GET", re.compile(r"^/projects/(\d+)/runners$"), FakeGitLab._r_list_project),
    ("GET", re.compile(r"^/runners/(\d+)$"), FakeGitLab._r_get),
    ("PUT", re.compile(r"^/runners/(\d+)$"), FakeGitLab._r_update),
    ("DELETE", re.compile(r"^/runners/(\d+)$"), FakeGitLab._r_delete),
    ("GET", re.compile(r"^/runners/(\d+)/managers$"), FakeGitLab._r_managers),
    ("GET", re.compile(r"^/runners/(\d+)/jobs$"), FakeGitLab._r_jobs),
    (
        "POST",
        re.compile(r"^/runners/(\d+)/reset_authentication_token$"),
        FakeGitLab._r_reset_by_id,
    ),
]


# -------------------------------------------------------------------- command line


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fake-gitlab",
        description="Serve a fake GitLab REST API v4 (runner endpoints) for tests and demos.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port (0: any free port)")
    parser.add_argument(
        "--latency", type=float, default=0.0, metavar="SECONDS", help="delay every answer"
    )
    parser.add_argument(
        "--rate-limit",
        type=int,
        default=None,
        metavar="PER_MINUTE",
        help="answer 429 beyond this many requests per minute and client address",
    )
    parser.add_argument("--token", default=None, help="the admin access token (default: random)")
    parser.add_argument(
        "--scopes", default="api", help="scopes of that token, comma-separated (default: api)"
    )
    parser.add_argument(
        "--disallow-registration-tokens",
        action="store_true",
        help="answer 410 Gone to legacy registration (POST /runners)",
    )
    args = parser.parse_args(argv)
    if args.latency < 0:
        parser.error("--latency must not be negative")
    if args.rate_limit is not None and args.rate_limit < 1:
        parser.error("--rate-limit must be at least 1")
    scopes = [s for s in re.split(r"[\s,]+", args.scopes) if s]
    if not scopes:
        parser.error("--scopes needs at least one scope")

    gl = FakeGitLab(host=args.host, port=args.port)
    gl.latency = args.latency
    gl.allow_registration_tokens = not args.disallow_registration_tokens
    if args.rate_limit is not None:
        gl.rate_limit(per_minute=args.rate_limit)
    token = gl.add_access_token(scopes=scopes, admin=True, token=args.token)
    registration = gl.registration_token("instance_type")
    try:
        gl.start()
    except OSError as exc:
        print(f"fake-gitlab: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"url: {gl.url}")
    print(f"access_token: {token}")
    print(f"scopes: {','.join(scopes)}")
    print(f"registration_token: {registration}")
    sys.stdout.flush()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        gl.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
