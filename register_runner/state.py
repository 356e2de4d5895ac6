"""What this host remembers between runs, per instance: which runner it made for each
executor stem, what it last applied, and the journal of mutations not yet confirmed.

Tokens live in the output config (gitlab-runner rotates them there); this file holds the
mapping stem → runner id, so a runner whose token was lost is still known to be ours.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import InputError
from .files import atomic_write, json_lines, read_regular, state_dir
from .model import (
    PendingCreate,
    PendingDelete,
    PendingReset,
    State,
    StoredRunner,
    UnwrittenToken,
    typed,
)

VERSION = 1


def state_path(prefix: Path, instance: str) -> Path:
    return state_dir(prefix) / f"{instance}.json"


def load(prefix: Path, instance: str) -> State:
    path = state_path(prefix, instance)
    data = read_regular(path)
    if data is None:
        return State()
    try:
        raw = json.loads(data)
        loaded = State(
            system_id=typed(raw.get("system_id"), (str, type(None))),
            runners={
                typed(stem, str): StoredRunner.from_json(r)
                for stem, r in typed(raw.get("runners", {}), dict).items()
            },
            pending_creates={
                typed(stem, str): PendingCreate.from_json(stem, p)
                for stem, p in typed(raw.get("pending_creates", {}), dict).items()
            },
            pending_deletes=[
                PendingDelete.from_json(d) for d in typed(raw.get("pending_deletes", []), list)
            ],
            unwritten={
                typed(stem, str): UnwrittenToken.from_json(u)
                for stem, u in typed(raw.get("unwritten", {}), dict).items()
            },
            credentials_files={
                typed(stem, str): typed(file, str)
                for stem, file in typed(raw.get("credentials_files", {}), dict).items()
            },
            pending_resets={
                typed(stem, str): PendingReset.from_json(r)
                for stem, r in typed(raw.get("pending_resets", {}), dict).items()
            },
        )
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise InputError(
            f"{path}: register-runner's state is damaged ({type(error).__name__}); move it "
            "away to start over (its runners are then recreated, the old ones left in GitLab)"
        ) from None
    loaded._on_disk = loaded._value()
    return loaded


def save(prefix: Path, instance: str, state: State) -> None:
    value = state._value()
    if value == state._on_disk:
        return
    raw: dict[str, Any] = {
        "version": VERSION,
        "system_id": state.system_id,
        "runners": {stem: r.to_json() for stem, r in sorted(state.runners.items())},
        "pending_creates": {stem: p.to_json() for stem, p in sorted(state.pending_creates.items())},
        "pending_deletes": [d.to_json() for d in state.pending_deletes],
        "unwritten": {stem: u.to_json() for stem, u in sorted(state.unwritten.items())},
    }
    if state.credentials_files:
        raw["credentials_files"] = dict(sorted(state.credentials_files.items()))
    if state.pending_resets:
        raw["pending_resets"] = {
            stem: r.to_json() for stem, r in sorted(state.pending_resets.items())
        }
    data = json_lines(raw).encode()
    path = state_path(prefix, instance)
    # Unchanged on a steady start: spare the disk a write and two fsyncs.
    if read_regular(path) != data:
        state_dir(prefix, create=True)
        atomic_write(path, data)
    state._on_disk = value
