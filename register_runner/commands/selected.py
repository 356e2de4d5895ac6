"""What ``unregister`` and ``reset-token`` share: one kind of action on some (or all) of
this host's runners of an instance, applied like a sync's plan."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Optional

from .. import report
from ..apply import apply
from ..errors import InputError
from ..files import exclusive_lock
from ..model import Action, Kind, Observed, Plan, RunnerState
from ..workspace import Options, Workspace, check_prefix, known_runners, load, lock_path


def act_on_runners(
    options: Options,
    kind: Kind,
    *,
    command: str,
    names: Optional[Sequence[str]],
    lock_timeout: float,
    as_json: bool,
) -> int:
    check_prefix(options)
    with exclusive_lock(lock_path(options), lock_timeout):
        workspace = load(options, os.environ)
        known = known_runners(workspace)
        chosen = select(workspace, known, names)
        if kind is Kind.ROTATE:
            chosen = [stem for stem in chosen if any(e.stem == stem for e in workspace.executors)]
            tokenless = [stem for stem in chosen if known[stem].token is None]
            if tokenless:
                raise InputError(f"no token in the config for {', '.join(tokenless)}; run sync")
        plan = Plan(tuple(Action(kind, stem, command, known[stem].id) for stem in chosen))
        outcome = apply(workspace, plan, Observed(dict(known)))
    status = 1 if outcome.refused else 3 if outcome.failing else 0
    report.emit(
        as_json,
        {"command": command, "exit_status": status, "config": str(workspace.output)},
        outcome.records,
        workspace.warnings,
    )
    return status


def select(
    workspace: Workspace, known: dict[str, RunnerState], names: Optional[Sequence[str]]
) -> list[str]:
    """The stems named (all this host's runners when none is), each one known."""
    if not names:
        return sorted(known)
    missing = sorted(set(names) - set(known))
    if missing:
        raise InputError(
            f"no runner of this host for {', '.join(missing)} in instance "
            f"{workspace.options.instance} (known: {', '.join(sorted(known)) or 'none'})"
        )
    return sorted(set(names))
