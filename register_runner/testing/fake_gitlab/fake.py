"""FakeGitLab: the public object (lifecycle, out-of-band state, request log)."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any, Optional
from urllib.parse import parse_qsl

from .faults import _Faults
from .model import (
    RUNNER_TYPES,
    Request,
    Runner,
    _ApiError,
    _as_tags,
    _Ctx,
    _message,
    _new_token,
    _parse_body,
    _parse_form,
    _RunnerState,
    _to_ts,
    _User,
)
from .routes import _Routes
from .server import TLSFiles, _Answer, _Handler, _Server

# ----------------------------------------------------------------------- the fake


class FakeGitLab(_Faults, _Routes):
    """A fake GitLab REST API v4 served over HTTP on ``host:port`` (0 = a free port),
    or over HTTPS with ``tls=TLSFiles(certfile, keyfile, client_ca=None)``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, tls: Optional[TLSFiles] = None):
        self.host = host
        self.port = port
        self.tls = tls
        self.latency = 0.0
        self.allow_registration_tokens = True
        self.runner_token_lifetime: Optional[float] = None
        # LLNL's runner_details.rb patch: GET /runners/:id includes the runner's token.
        self.runner_details_token = False
        self._endless_pagination = False
        self._endless_origin: Optional[str] = None
        self._port_holder: Optional[socket.socket] = None  # while down

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
        self._idle = threading.Condition(self._lock)
        self._init_faults()

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
        return f"{self._scheme}://{host}:{self.port}"

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
        self._release_port()
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
        """Close the listening socket and every open connection (connection refused). The
        port stays bound, not listening: another server (another test's fake, under
        pytest-xdist) is not given it meanwhile, and sent this one's requests."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._closing = True
        self._server = self._thread = None
        server.shutdown()
        server.server_close()
        self._port_holder = socket.socket(server.address_family, socket.SOCK_STREAM)
        self._port_holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._port_holder.bind((self.host, self.port))
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
        self._release_port()
        context = self.tls.context() if self.tls is not None else None
        server = _Server((self.host, self.port), _Handler)
        server.fake = self
        server.ssl_context = context
        self.port = server.server_address[1]
        self._closing = False
        thread = threading.Thread(
            target=server.serve_forever,
            # down() and stop() wait for the loop to see the shutdown: every test does.
            kwargs={"poll_interval": 0.01},
            name=f"fake-gitlab-{self.port}",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()

    def _release_port(self) -> None:
        if self._port_holder is not None:
            self._port_holder.close()
            self._port_holder = None

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
        expires_at: Any = None,
    ) -> str:
        """A new user with a personal access token.

        ``groups``: ids of the groups the user owns; ``projects``: ids of the
        projects the user maintains; ``expires_at``: the token's expiry date
        ("2027-01-31" or a date; from that day on it answers 401). Returns the
        token (``glpat-…``).
        """
        if isinstance(scopes, str):
            scopes = [s for s in re.split(r"[\s,]+", scopes) if s]
        token = token or _new_token("glpat-")
        if isinstance(expires_at, str):
            expires_at = date.fromisoformat(expires_at[:10])
        elif isinstance(expires_at, datetime):
            expires_at = expires_at.date()
        with self._lock:
            uid = self._next_user_id
            self._next_user_id += 1
            name = username or ("root" if admin and uid == 1 else f"user{uid}")
            user = _User(uid, name, token, scopes, admin, groups, projects, expires_at)
            self._users[token] = user
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
            created = _to_ts(attrs.get("created_at"))
            if created is not None:
                r.created_at = created
            r.contacted_at = _to_ts(attrs.get("contacted_at"))
            return r.snapshot()

    def runner(self, runner_id: int) -> Optional[Runner]:
        with self._lock:
            r = self._runners.get(int(runner_id))
            return r.snapshot() if r else None

    def runners(self) -> list[Runner]:
        with self._lock:
            return [r.snapshot() for r in self._runners.values()]

    def age_runner(self, runner_id: int, days: float) -> None:
        """Move a runner's creation and every contact ``days`` into the past, as if its
        host had been silent since: a dead host's runner, for GitLab's ``status`` and
        ``contacted_at`` alike."""
        shift = days * 86400
        with self._lock:
            r = self._get_state(runner_id)
            r.created_at -= shift
            if r.contacted_at is not None:
                r.contacted_at -= shift
            for manager in r.managers.values():
                manager["created_at"] -= shift
                manager["contacted_at"] -= shift

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

    def forget_runners(self, ids: Optional[Iterable[int]] = None) -> list[int]:
        """Drop runners (all by default) out of band, as a GitLab restored from an
        older backup has; no request is logged. Returns the ids dropped."""
        with self._lock:
            wanted = list(self._runners) if ids is None else [int(i) for i in ids]
            gone = [i for i in wanted if i in self._runners]
            for runner_id in gone:
                self._delete(self._runners[runner_id])
            return gone

    def reset_ids(self, next_id: int = 1) -> None:
        """The next runners created get ids from ``next_id`` on again (a GitLab restored
        from a backup hands out ids it already gave); ids still in use are skipped."""
        with self._lock:
            self._next_runner_id = int(next_id)

    def endless_pagination(self, origin: Optional[str] = None, enabled: bool = True) -> None:
        """List endpoints always announce a next page (``Link: rel="next"`` and
        ``X-Next-Page`` = page + 1, forever; pages past the end are empty), with links
        on ``origin`` (e.g. another listener's url) instead of this fake when given."""
        with self._lock:
            self._endless_pagination = enabled
            self._endless_origin = origin.rstrip("/") if origin else None

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

    def wait_idle(self, timeout: float = 30) -> bool:
        """Wait until no request is being handled; whether that came within ``timeout``.
        A request whose client was killed is still acted on once a block lets it go, as
        GitLab would: a test that reruns after the kill waits for that first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

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

    # ------------------------------------------------------------ request flow

    def _serve(
        self,
        method: str,
        target: str,
        headers: Any,
        raw: bytes,
        client_ip: str,
        request_line: str = "",
    ) -> _Answer:
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

        limited: Optional[_ApiError] = None
        with self._lock:
            self._log.append(record)
            self._stats["requests"] += 1
            self._in_flight += 1
            if self._in_flight > self._stats.get("max_in_flight", 0):
                self._stats["max_in_flight"] = self._in_flight
            # Injected faults are not counted by the rate limiter (they stand for
            # something else answering), but they carry its headers like any answer.
            fail, odd = self._pick_fault(method, path)
            who = self._rate_who(headers, form, client_ip)
            if fail is None and odd is None and self._rate_limit is not None:
                limited = self._rate_check(who)

        try:
            if self.latency:
                time.sleep(self.latency)
            if fail is not None:
                extra = []
                if fail.retry_after is not None:
                    extra.append(("Retry-After", str(fail.retry_after)))
                answer = _Answer(fail.status, _message(fail.status), extra)
            elif limited is not None:
                answer = _Answer(limited.status, limited.body, limited.headers)
            elif odd is not None and not odd.handled:
                answer = odd.instead(request_line or f"{method} {target}", target, headers, raw)
            else:
                answer = self._handle(record, qs, query_pairs, headers, early, api)
                if odd is not None:
                    answer = odd.after(answer)
            with self._lock:
                if not record.status:  # not routed: _handle logs routed requests
                    self._finish(record, answer.status)
                answer.headers += self._rate_headers(who)
            return answer
        finally:
            with self._lock:
                self._in_flight -= 1
                self._idle.notify_all()

    def _handle(
        self,
        record: Request,
        qs: str,
        query_pairs: list,
        headers: Any,
        early: Optional[_ApiError],
        api: bool,
    ) -> _Answer:
        """Route the request (with any held blocks around it); its state changes."""
        method, path = record.method, record.path
        self._hold(method, path, "before")
        with self._lock:
            if early is not None:
                status, payload, extra = early.status, early.body, early.headers
            elif not api:
                status, payload, extra = 404, _message(404), []
            else:
                fields = _parse_form(qs) if qs else {}
                fields.update(record.form)
                host = headers.get("Host") or f"{self.host}:{self.port}"
                ctx = _Ctx(method, path, query_pairs, fields, headers, host)
                status, payload, extra = self._route(ctx)
            # The log keeps the handler's status, also when a misbehaviour then garbles
            # or drops the answer: it says what GitLab did.
            self._finish(record, status)
        self._hold(method, path, "after")
        return _Answer(status, payload, extra)

    def _finish(self, record: Request, status: int) -> None:
        record.status = status
        key = str(status)
        self._stats[key] = self._stats.get(key, 0) + 1
