"""The values everything else passes around: inputs, what is observed, and the plan."""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Optional

from .secret import Secret
from .timeutil import NEVER, now_utc

log = logging.getLogger(__name__)

# Sent to GitLab, never written into config.toml (gitlab-api.md §9).
REGISTRATION_ATTRIBUTES = (
    "description",
    "tag_list",
    "run_untagged",
    "locked",
    "paused",
    "access_level",
    "maximum_timeout",
    "maintenance_note",
)
RUNNER_TYPES = ("instance_type", "group_type", "project_type")

# A runner is known by its GitLab and its id together: two GitLabs hand out the same ids,
# and a GitLab restored from a backup hands old ids out again.
RunnerKey = tuple[str, int]


def normalize_url(url: str) -> str:
    """The one spelling of a GitLab url that runners are keyed by."""
    return url.strip().rstrip("/")


@dataclass(frozen=True)
class Scope:
    """Where a runner lives in GitLab. A change of scope means a new runner."""

    runner_type: str = "instance_type"
    group_id: Optional[int] = None
    project_id: Optional[int] = None

    def describe(self) -> str:
        if self.runner_type == "group_type":
            return f"group {self.group_id}"
        if self.runner_type == "project_type":
            return f"project {self.project_id}"
        return "instance"

    def to_json(self) -> dict[str, Any]:
        return {
            "runner_type": self.runner_type,
            "group_id": self.group_id,
            "project_id": self.project_id,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Scope:
        return cls(
            data.get("runner_type", "instance_type"), data.get("group_id"), data.get("project_id")
        )


# How every marker this tool writes begins, whatever its version, host or prefix.
MARKER_START = "[register-runner "


def carries_marker(note: Any) -> bool:
    """Whether a runner's maintenance note holds a marker of this tool (any host's)."""
    return isinstance(note, str) and MARKER_START in note


@dataclass(frozen=True)
class Identity:
    """Who this host is, for default names and the marker stored in GitLab.

    ``prefix_key`` tells apart two prefixes of one host that use the same instance name
    (same host, instance, stems and system ID): neither may take the other's runners for
    its own. Empty, the marker is the one releases before the key wrote.
    """

    host: str
    instance: str
    system_id: str
    prefix_key: str = ""

    def default_name(self, stem: str) -> str:
        return f"{self.host}-{self.instance}-{stem}"

    def marker(self, stem: str) -> str:
        key = f" prefix={self.prefix_key}" if self.prefix_key else ""
        return (
            f"{MARKER_START}host={self.host} instance={self.instance} "
            f"executor={stem} system_id={self.system_id}{key}]"
        )


_PREFIX_KEY = re.compile(r" prefix=[0-9a-f]+\]\Z")


def earlier_marker(note: str) -> str:
    """``note`` (a maintenance_note ending in a marker) as releases before the prefix key
    wrote it: what the runners an existing host already has carry."""
    return _PREFIX_KEY.sub("]", note)


@dataclass(frozen=True)
class Credentials:
    """A runner's token and its timestamps, as the config holds them."""

    token: Secret
    obtained_at: Optional[datetime]
    expires_at: Optional[datetime]  # None: never expires

    def as_entry(self) -> dict[str, Any]:
        return {
            "token": self.token.reveal(),
            "token_obtained_at": self.obtained_at or now_utc(),
            "token_expires_at": self.expires_at or NEVER,
        }


@dataclass(frozen=True)
class ClientConfig:
    """One GitLab instance from the template's ``client_configs``."""

    url: str
    scope: Scope
    access_token: Optional[Secret] = None
    registration_token: Optional[Secret] = None
    tls_ca_file: Optional[str] = None
    tls_cert_file: Optional[str] = None  # a client certificate, for fronts that require one
    tls_key_file: Optional[str] = None


@dataclass(frozen=True)
class Executor:
    """One executor file: the runner this host should have under that file's stem."""

    stem: str
    path: str
    url: str
    scope: Scope
    name: str
    attributes: Mapping[str, Any]  # registration attributes to send, marker included
    settings: Mapping[str, Any]  # pass-through keys for the [[runners]] entry, in file order
    # A runner that is not gitlab-runner: its credentials go to this file, not the config.
    credentials_file: Optional[str] = None
    credentials_owner: Optional[str] = None  # the user a new credentials file is given to


class Verdict(enum.Enum):
    """What ``POST /runners/verify`` said of a token."""

    VALID = "valid"
    INVALID = "invalid"  # a 403: the only answer that proves a token dead
    UNKNOWN = "unknown"  # timeout, 5xx, 429: proves nothing
    UNCHECKED = "unchecked"


class Evidence(enum.Enum):
    """What ``GET /runners/:id`` said of a runner whose token GitLab rejected, when the
    mass-invalid guard asks: whether the 403s are real."""

    GONE = "gone"  # 404: GitLab lost it (restored from a backup, deleted by hand)
    REPLACED = "replaced"  # the id is another runner's now (another marker, or none)
    LISTED = "listed"  # still there with this host's marker: the 403s are GitLab-side
    UNREADABLE = "unreadable"  # the access token may not read it
    UNKNOWN = "unknown"  # GitLab did not answer


@dataclass(frozen=True)
class AccessTokenCheck:
    """What ``GET /personal_access_tokens/self`` said of a client_config's access token."""

    answered: bool  # False: GitLab could not be asked (unreachable, failing)
    expires_at: Optional[date] = None  # None: never, or GitLab would not say
    rejected: bool = False  # 401: expired, revoked or mistyped


@dataclass(frozen=True)
class RunnerState:
    """What this host knows of the runner it made for one executor stem."""

    stem: str
    id: int
    url: str
    scope: Scope
    applied: Mapping[str, Any]  # registration attributes last sent to GitLab
    token: Optional[Secret] = None  # None: the output config lost it
    token_obtained_at: Optional[datetime] = None
    token_expires_at: Optional[datetime] = None
    verdict: Verdict = Verdict.UNCHECKED


@dataclass(frozen=True)
class PendingDelete:
    """A runner dropped from the config whose deletion in GitLab has not been confirmed."""

    id: int
    url: str
    stem: str
    token: Optional[Secret] = None

    def to_json(self) -> dict[str, Any]:
        token = self.token.reveal() if self.token else None
        return {"id": self.id, "url": self.url, "stem": self.stem, "token": token}

    @classmethod
    def from_json(cls, data: Any) -> PendingDelete:
        token = data.get("token")
        return cls(
            typed(data["id"], int),
            typed(data["url"], str),
            typed(data["stem"], str),
            Secret(typed(token, str)) if token else None,
        )


# -- what the state file journals (state.py), each read back strictly: a damaged file is
# refused, never half-believed (a string id must never reach DELETE /runners/…).


def typed(value: Any, kind: Any) -> Any:
    """``value`` if it is of ``kind``; bool is an int to Python, never a runner id."""
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"unexpected {type(value).__name__}")
    return value


def _scope(raw: Any) -> Scope:
    scope = Scope.from_json(typed(raw, dict))
    typed(scope.runner_type, str)
    for value in (scope.group_id, scope.project_id):
        typed(value, (int, type(None)))
    return scope


def _when(raw: Any) -> Optional[datetime]:
    return None if raw is None else datetime.fromisoformat(typed(raw, str))


@dataclass(frozen=True)
class StoredRunner:
    """The runner this host made for an executor stem, and what it last applied."""

    id: int
    url: str
    scope: Scope
    applied: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "scope": self.scope.to_json(),
            "applied": self.applied,
        }

    @classmethod
    def from_json(cls, data: Any) -> StoredRunner:
        return cls(
            typed(data["id"], int),
            typed(data["url"], str),
            _scope(data["scope"]),
            dict(typed(data["applied"], dict)),
        )


@dataclass(frozen=True)
class PendingCreate:
    """Written before ``POST /user/runners``: if the answer never reaches disk, the next run
    searches GitLab for the runner by this description and the marker."""

    stem: str
    url: str
    scope: Scope
    description: str
    marker: str
    attributes: dict[str, Any] = field(default_factory=dict)  # as sent: applied if adopted

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "scope": self.scope.to_json(),
            "description": self.description,
            "marker": self.marker,
            "attributes": self.attributes,
        }

    @classmethod
    def from_json(cls, stem: str, data: Any) -> PendingCreate:
        return cls(
            stem,
            typed(data["url"], str),
            _scope(data["scope"]),
            typed(data["description"], str),
            typed(data["marker"], str),
            dict(typed(data.get("attributes", {}), dict)),
        )


@dataclass(frozen=True)
class UnwrittenToken:
    """A token GitLab issued (create, rotation, recovery) that has not reached the config
    yet: kept in the state first, so that a config write that fails (full disk, a folder
    in the way) never loses it. Dropped once the config holds it."""

    id: int
    url: str
    token: Secret
    obtained_at: Optional[datetime]
    expires_at: Optional[datetime]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "token": self.token.reveal(),
            "obtained_at": self.obtained_at.isoformat() if self.obtained_at else None,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
        }

    @classmethod
    def from_json(cls, data: Any) -> UnwrittenToken:
        return cls(
            typed(data["id"], int),
            typed(data["url"], str),
            Secret(typed(data["token"], str)),
            _when(data.get("obtained_at")),
            _when(data.get("expires_at")),
        )


class Kind(str, enum.Enum):
    """What an action does. A str, so that ``kind == "create"`` holds and JSON carries the
    value."""

    CREATE = "create"
    KEEP = "keep"
    UPDATE = "update"
    ROTATE = "rotate"
    RECREATE = "recreate"
    DELETE = "delete"
    WAIT = "wait"  # an earlier create's outcome is unknown: nothing is sent until it is
    # Rows of a report only, never in a Plan:
    WRITE = "write"  # the config, or a custom runner's credentials file
    LEFTOVER = "leftover"  # a runner gitlab-runner-auth left (plan)
    VERIFY = "verify"  # a token checked


@dataclass(frozen=True)
class Action:
    kind: Kind
    stem: str
    reason: str = ""
    runner_id: Optional[int] = None  # the existing runner kept, updated, replaced or deleted
    changes: tuple[tuple[str, Any, Any], ...] = ()  # (attribute, old, new): UPDATE, ROTATE

    @property
    def mutates(self) -> bool:
        return self.kind not in (Kind.KEEP, Kind.WAIT)


# The runner column of the row about the output config itself, in plan and sync alike.
CONFIG_ROW = "(config)"


@dataclass(frozen=True)
class ActionResult:
    """One action of a run: ``kind`` (create, keep, update, rotate, recreate, delete,
    wait), ``runner`` (the executor file stem), ``id`` (the runner it acted on; for a
    create or recreate ``new_id`` is the new one), ``result`` ("planned" for plan; else
    done, kept, waiting, refused, skipped, forgotten, …)."""

    kind: Kind
    runner: str
    id: Optional[int]
    result: str
    reason: str = ""
    new_id: Optional[int] = None
    error: Optional[str] = None
    changes: tuple[tuple[str, Any, Any], ...] = ()
    token: Optional[str] = None  # the new token, masked

    @property
    def mutated(self) -> bool:
        return self.result in ("done", "old runner deleted") and self.kind not in (
            Kind.KEEP,
            Kind.WAIT,
        )

    def as_row(self) -> dict[str, Any]:
        """The row ``--json`` and the table print: the same keys for every kind of row
        and every command (None where a key does not apply), a stable interface."""
        return {
            "action": self.kind.value,
            "runner": self.runner,
            "id": self.id,
            "new_id": self.new_id,
            "reason": self.reason,
            "result": self.result,
            "error": self.error,
            "changes": [{"attribute": k, "old": old, "new": new} for k, old, new in self.changes],
            "token": self.token,
        }


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    warnings: tuple[str, ...] = ()
    held: bool = False  # the mass-invalid guard stopped every create and delete
    refusals: tuple[str, ...] = ()  # what a person must fix before this plan can converge
    # GitLabs whose access token was rejected: nothing that needs it is sent there.
    blocked: frozenset[str] = frozenset()

    def of_kind(self, *kinds: Kind) -> list[Action]:
        return [a for a in self.actions if a.kind in kinds]

    @property
    def mutates(self) -> bool:
        return any(a.mutates for a in self.actions)


@dataclass
class Observed:
    """Everything reconcile needs to know about the present, gathered by I/O beforehand."""

    runners: dict[str, RunnerState] = field(default_factory=dict)
    pending_deletes: list[PendingDelete] = field(default_factory=list)
    # Stems whose create may have happened without this host learning the outcome.
    unresolved: frozenset[str] = frozenset()
    # Asked only when the mass-invalid guard would hold: stem → what GitLab said.
    evidence: dict[str, Evidence] = field(default_factory=dict)
    access_tokens: dict[str, AccessTokenCheck] = field(default_factory=dict)  # by url
    warnings: tuple[str, ...] = ()

    @property
    def unverified(self) -> bool:
        """Some token could not be checked: GitLab was failing."""
        return any(r.verdict is Verdict.UNKNOWN for r in self.runners.values())

    @property
    def failing(self) -> bool:
        """GitLab failed this run: a token could not be checked, or a create's outcome is
        still unknown (exit as for "GitLab failing", never 1)."""
        return self.unverified or bool(self.unresolved)


class Warnings:
    """One phase's warnings, in order and each once, logged as they are said; the phase
    returns ``said`` in its value."""

    def __init__(self) -> None:
        self._said: list[str] = []

    def warn(self, message: str) -> None:
        if message not in self._said:
            self._said.append(message)
            log.warning("%s", message)

    @property
    def said(self) -> tuple[str, ...]:
        return tuple(self._said)
