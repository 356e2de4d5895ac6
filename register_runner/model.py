"""The values everything else passes around: inputs, what is observed, and the plan."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional

from .secret import Secret

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


class Kind(enum.Enum):
    CREATE = "create"
    KEEP = "keep"
    UPDATE = "update"
    ROTATE = "rotate"
    RECREATE = "recreate"
    DELETE = "delete"
    WAIT = "wait"  # an earlier create's outcome is unknown: nothing is sent until it is


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


@dataclass(frozen=True)
class ActionResult:
    """One action of a run: ``kind`` (create, keep, update, rotate, recreate, delete,
    wait), ``runner`` (the executor file stem), ``id`` (the runner it acted on; for a
    create or recreate ``new_id`` is the new one), ``result`` ("planned" for plan; else
    done, kept, waiting, refused, skipped, forgotten, …)."""

    kind: str
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
        return self.result in ("done", "old runner deleted") and self.kind not in ("keep", "wait")

    def as_row(self) -> dict[str, Any]:
        """The row ``--json`` and the table print."""
        row: dict[str, Any] = {
            "action": self.kind,
            "runner": self.runner,
            "id": self.id,
            "reason": self.reason,
            "result": self.result,
            "changes": [{"attribute": k, "old": old, "new": new} for k, old, new in self.changes],
        }
        if self.new_id is not None:
            row["new_id"] = self.new_id
        if self.error is not None:
            row["error"] = self.error
        if self.token is not None:
            row["token"] = self.token
        return row


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    warnings: tuple[str, ...] = ()
    held: bool = False  # the mass-invalid guard stopped every create and delete

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

    @property
    def unverified(self) -> bool:
        """Some token could not be checked: GitLab was failing."""
        return any(r.verdict is Verdict.UNKNOWN for r in self.runners.values())

    @property
    def failing(self) -> bool:
        """GitLab failed this run: a token could not be checked, or a create's outcome is
        still unknown (exit as for "GitLab failing", never 1)."""
        return self.unverified or bool(self.unresolved)
