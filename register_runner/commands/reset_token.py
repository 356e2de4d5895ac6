"""``register-runner reset-token``: rotate runner tokens now and save them in the config
(after a leak, say). Sync also rotates a token past 75% of its lifetime."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Optional

from .. import report
from ..apply import apply
from ..errors import InputError
from ..files import exclusive_lock
from ..model import Action, Kind, Observed, Plan
from ..workspace import Options, check_prefix, known_runners, load, lock_path
from .unregister import select


def run(args: argparse.Namespace) -> int:
    return reset_token(
        Options.from_args(args),
        runners=args.runner,
        lock_timeout=args.lock_timeout,
        as_json=args.json,
    )


def reset_token(
    options: Options, *, runners: Optional[Sequence[str]], lock_timeout: float, as_json: bool
) -> int:
    check_prefix(options)
    with exclusive_lock(lock_path(options), lock_timeout):
        workspace = load(options, os.environ)
        known = known_runners(workspace)
        executors = {e.stem for e in workspace.executors}
        chosen = [stem for stem in select(workspace, known, runners) if stem in executors]
        tokenless = [stem for stem in chosen if known[stem].token is None]
        if tokenless:
            raise InputError(f"no token in the config for {', '.join(tokenless)}; run sync")
        plan = Plan(
            tuple(Action(Kind.ROTATE, stem, "reset-token", known[stem].id) for stem in chosen)
        )
        outcome = apply(workspace, plan, Observed(dict(known)))
    status = 1 if outcome.refused else 3 if outcome.failing else 0
    report.emit(
        as_json,
        {"command": "reset-token", "exit_status": status, "config": str(workspace.output)},
        outcome.records,
        workspace.warnings,
    )
    return status
