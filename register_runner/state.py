"""What this host remembers between runs, per instance: which runner it made for each
executor stem, what it last applied, and the journal of mutations not yet confirmed.

Tokens live in the output config (gitlab-runner rotates them there); this file holds the
mapping stem → runner id, so a runner whose token was lost is still known to be ours.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from .errors import InputError
from .files import atomic_write, read_regular, state_dir
from .model import PendingDelete, Scope
from .secret import Secret

VERSION = 1


@dataclass(frozen=True)
class StoredRunner:
    id: int
    url: str
    scope: Scope
    applied: dict[str, Any]


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


@dataclass(frozen=True)
class UnwrittenToken:
    """A token GitLab issued (create, rotation, recovery) that has not reached the config
    yet: kept here first, so that a config write that fails (full disk, a directory in the
    way) never loses it. Dropped once the config holds it."""

    id: int
    url: str
    token: Secret
    obtained_at: Optional[datetime]
    expires_at: Optional[datetime]


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


def state_path(prefix: Path, instance: str) -> Path:
    return state_dir(prefix) / f"{instance}.json"


def load(prefix: Path, instance: str) -> State:
    path = state_path(prefix, instance)
    data = read_regular(path)
    if data is None:
        return State()
    try:
        raw = json.loads(data)
        return State(
            system_id=_typed(raw.get("system_id"), (str, type(None))),
            runners={
                _typed(stem, str): StoredRunner(
                    _typed(r["id"], int),
                    _typed(r["url"], str),
                    _scope(r["scope"]),
                    dict(_typed(r["applied"], dict)),
                )
                for stem, r in _typed(raw.get("runners", {}), dict).items()
            },
            pending_creates={
                _typed(stem, str): PendingCreate(
                    stem,
                    _typed(p["url"], str),
                    _scope(p["scope"]),
                    _typed(p["description"], str),
                    _typed(p["marker"], str),
                    dict(_typed(p.get("attributes", {}), dict)),
                )
                for stem, p in _typed(raw.get("pending_creates", {}), dict).items()
            },
            pending_deletes=[
                PendingDelete(
                    _typed(d["id"], int),
                    _typed(d["url"], str),
                    _typed(d["stem"], str),
                    Secret(_typed(d["token"], str)) if d.get("token") else None,
                )
                for d in _typed(raw.get("pending_deletes", []), list)
            ],
            unwritten={
                _typed(stem, str): UnwrittenToken(
                    _typed(u["id"], int),
                    _typed(u["url"], str),
                    Secret(_typed(u["token"], str)),
                    _when(u.get("obtained_at")),
                    _when(u.get("expires_at")),
                )
                for stem, u in _typed(raw.get("unwritten", {}), dict).items()
            },
            credentials_files={
                _typed(stem, str): _typed(file, str)
                for stem, file in _typed(raw.get("credentials_files", {}), dict).items()
            },
        )
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise InputError(
            f"{path}: register-runner's state is damaged ({type(error).__name__}); move it "
            "away to start over (its runners are then recreated, the old ones left in GitLab)"
        ) from None


def _typed(value: Any, kind: Any) -> Any:
    # bool is an int to Python, never a runner id.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"unexpected {type(value).__name__}")
    return value


def _when(raw: Any) -> Optional[datetime]:
    return None if raw is None else datetime.fromisoformat(_typed(raw, str))


def _scope(raw: Any) -> Scope:
    scope = Scope.from_json(_typed(raw, dict))
    _typed(scope.runner_type, str)
    for value in (scope.group_id, scope.project_id):
        _typed(value, (int, type(None)))
    return scope


def save(prefix: Path, instance: str, state: State) -> None:
    raw = {
        "version": VERSION,
        "system_id": state.system_id,
        "runners": {
            stem: {"id": r.id, "url": r.url, "scope": r.scope.to_json(), "applied": r.applied}
            for stem, r in sorted(state.runners.items())
        },
        "pending_creates": {
            stem: {
                "url": p.url,
                "scope": p.scope.to_json(),
                "description": p.description,
                "marker": p.marker,
                "attributes": p.attributes,
            }
            for stem, p in sorted(state.pending_creates.items())
        },
        "pending_deletes": [
            {
                "id": d.id,
                "url": d.url,
                "stem": d.stem,
                "token": d.token.reveal() if d.token else None,
            }
            for d in state.pending_deletes
        ],
        "unwritten": {
            stem: {
                "id": u.id,
                "url": u.url,
                "token": u.token.reveal(),
                "obtained_at": u.obtained_at.isoformat() if u.obtained_at else None,
                "expires_at": u.expires_at.isoformat() if u.expires_at else None,
            }
            for stem, u in sorted(state.unwritten.items())
        },
    }
    if state.credentials_files:
        raw["credentials_files"] = dict(sorted(state.credentials_files.items()))
    data = (json.dumps(raw, indent=1, sort_keys=True) + "\n").encode()
    path = state_path(prefix, instance)
    # Unchanged on a steady start: spare the disk a write and two fsyncs.
    if read_regular(path) != data:
        state_dir(prefix, create=True)
        atomic_write(path, data)
