"""What the state file holds (state.py reads and writes it): the runner made for each
executor stem, and the journal of mutations not yet confirmed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional

from ..secret import Secret
from .runners import Scope


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


# -- each read back strictly: a damaged file is refused, never half-believed (a string id
# must never reach DELETE /runners/…).


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
class PendingReset:
    """Written before a token reset: if its answer is lost (or a 5xx), GitLab may have
    issued a new token and killed the one this host holds. The next run settles it by
    the old token's verdict and the runner's marker (``observe.settle_resets``)."""

    id: int
    url: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "url": self.url}

    @classmethod
    def from_json(cls, data: Any) -> PendingReset:
        return cls(typed(data["id"], int), typed(data["url"], str))


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


@dataclass
class State:
    system_id: Optional[str] = None
    runners: dict[str, StoredRunner] = field(default_factory=dict)
    pending_creates: dict[str, PendingCreate] = field(default_factory=dict)
    pending_deletes: list[PendingDelete] = field(default_factory=list)
    unwritten: dict[str, UnwrittenToken] = field(default_factory=dict)
    # stem → the credentials file written for a runner that is not gitlab-runner: removed
    # with its runner, also once its executor file (which named it) is gone.
    credentials_files: dict[str, str] = field(default_factory=dict)
    pending_resets: dict[str, PendingReset] = field(default_factory=dict)  # by stem
    # What the file holds, as loaded or last saved: saving an unchanged state neither
    # encodes nor reads it again (a run saves several times). The values are frozen and
    # never changed in place, so copies of the containers are a faithful record.
    _on_disk: Optional[tuple] = field(default=None, init=False, repr=False, compare=False)

    def copy(self) -> State:
        """A state a phase may change, leaving this one as it was."""
        copied = State(*self._value())  # the fields in their order, containers copied
        copied._on_disk = self._on_disk
        return copied

    def _value(self) -> tuple:
        return (
            self.system_id,
            dict(self.runners),
            dict(self.pending_creates),
            list(self.pending_deletes),
            dict(self.unwritten),
            dict(self.credentials_files),
            dict(self.pending_resets),
        )
