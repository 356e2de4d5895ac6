"""``register-runner [sync]``: converge GitLab and config.<instance>.toml with the inputs."""

from __future__ import annotations

import argparse
import os
import time

from .. import report
from ..apply import Outcome, apply, recover
from ..files import exclusive_lock
from ..model import Plan, Verdict
from ..output import now_utc
from ..reconcile import reconcile
from ..workspace import (
    Options,
    Workspace,
    check_not_emptied,
    check_prefix,
    known_runners,
    load,
    lock_path,
    observe,
)


def run(args: argparse.Namespace) -> int:
    return sync(
        Options.from_args(args),
        lock_timeout=args.lock_timeout,
        prune=args.prune,
        max_deletions=args.max_deletions,
        as_json=args.json,
    )


def sync(
    options: Options, *, lock_timeout: float, prune: bool, max_deletions: int | None, as_json: bool
) -> int:
    started = time.monotonic()
    check_prefix(options)
    with exclusive_lock(lock_path(options), lock_timeout):
        workspace = load(options, os.environ)
        check_not_emptied(workspace)
        recover(workspace)
        observed = observe(workspace, known_runners(workspace), refresh=options.refresh)
        plan = reconcile(
            workspace.executors,
            observed,
            now=now_utc(),
            force=options.force,
            prune=prune,
            max_deletions=max_deletions,
        )
        for warning in plan.warnings:
            workspace.warn(warning)
        outcome = apply(workspace, plan, observed)
    status = exit_status(
        workspace,
        plan,
        outcome,
        any(r.verdict is Verdict.UNKNOWN for r in observed.runners.values()),
    )
    report.emit(
        as_json,
        {
            "command": "sync",
            "exit_status": status,
            "config": str(workspace.output),
            "config_written": outcome.wrote,
            "system_id": workspace.identity.system_id,
            "seconds": round(time.monotonic() - started, 3),
        },
        outcome.records,
        workspace.warnings,
    )
    return status


def exit_status(workspace: Workspace, plan: Plan, outcome: Outcome, unverified: bool) -> int:
    """1 when GitLab refused something a person must fix. When GitLab was failing: 0 if a
    good config is in place (the runner can start), 3 if not or under --strict."""
    if outcome.refused:
        return 1
    failing = outcome.failing or plan.held or unverified
    if failing and (workspace.options.strict or (workspace.executors and not outcome.entries)):
        return 3
    return 0
