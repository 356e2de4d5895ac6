"""``register-runner [sync]``: converge GitLab and config.<instance>.toml with the inputs."""

from __future__ import annotations

import argparse
import os
import time

from .. import health, report
from ..apply import Outcome, apply, recover
from ..files import exclusive_lock
from ..model import Observed, Plan
from ..workspace import Options, Workspace, check_prefix, load, lock_path, plan_changes


def run(args: argparse.Namespace) -> int:
    return sync(Options.from_args(args), lock_timeout=args.lock_timeout, as_json=args.json)


def sync(options: Options, *, lock_timeout: float, as_json: bool) -> int:
    started = time.monotonic()
    check_prefix(options)
    with exclusive_lock(lock_path(options), lock_timeout):
        workspace = load(options, os.environ)
        recover(workspace)
        observed, plan = plan_changes(workspace)
        outcome = apply(workspace, plan, observed)
    status = exit_status(workspace, plan, observed, outcome)
    # -- health (service helper): the access tokens' expiry and the last-run record --
    failing = outcome.failing or plan.held or observed.unverified
    access = None if failing else health.check_access_tokens(workspace)
    health.record_run(
        options.prefix,
        options.instance,
        exit_status=status,
        runners=health.runner_rows(
            options.prefix,
            options.instance,
            health.sync_verdicts(observed, outcome),
            [e.stem for e in workspace.executors],
        ),
        warnings=[*workspace.warnings, *outcome.refused],
        access_tokens=access,
    )
    # -- end health --
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


def exit_status(workspace: Workspace, plan: Plan, observed: Observed, outcome: Outcome) -> int:
    """1 when GitLab refused something a person must fix. When GitLab was failing: 0 if a
    good config is in place (the runner can start), 3 if not or under --strict."""
    if outcome.refused:
        return 1
    failing = outcome.failing or plan.held or observed.unverified
    if failing and (workspace.options.strict or (workspace.executors and not outcome.entries)):
        return 3
    return 0
