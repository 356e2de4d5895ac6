"""``register-runner unregister``: delete this host's runners of an instance from GitLab and
drop them from the config, for decommissioning a host (or one executor)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Optional

from .. import report
from ..apply import apply
from ..errors import InputError
from ..files import exclusive_lock
from ..model import Action, Kind, Observed, Plan, RunnerState
from ..workspace import Options, Workspace, check_prefix, known_runners, load, lock_path


def run(args: argparse.Namespace) -> int:
    return unregister(
        Options.from_args(args),
        runners=args.runner,
        lock_timeout=args.lock_timeout,
        as_json=args.json,
    )


def unregister(
    options: Options, *, runners: Optional[Sequence[str]], lock_timeout: float, as_json: bool
) -> int:
    check_prefix(options)
    with exclusive_lock(lock_path(options), lock_timeout):
        workspace = load(options, os.environ)
        known = known_runners(workspace)
        chosen = select(workspace, known, runners)
        plan = Plan(
            tuple(Action(Kind.DELETE, stem, "unregister", known[stem].id) for stem in chosen)
        )
        outcome = apply(
            workspace, plan, Observed(dict(known), list(workspace.state.pending_deletes))
        )
    status = 1 if outcome.refused else 3 if outcome.failing else 0
    report.emit(
        as_json,
        {"command": "unregister", "exit_status": status, "config": str(workspace.output)},
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
