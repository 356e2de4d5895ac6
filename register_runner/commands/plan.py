"""``register-runner plan``: what sync would do, from the same inputs and the same
reconcile; nothing is changed in GitLab or on disk."""

from __future__ import annotations

import argparse
import os

from .. import report
from ..apply import expected_config
from ..model import Verdict
from ..output import now_utc, same_content
from ..reconcile import reconcile
from ..workspace import Options, check_not_emptied, known_runners, load, observe

CHANGES_PENDING = 4


def run(args: argparse.Namespace) -> int:
    return plan(
        Options.from_args(args),
        prune=args.prune,
        max_deletions=args.max_deletions,
        detailed_exitcode=args.detailed_exitcode,
        as_json=args.json,
    )


def plan(
    options: Options,
    *,
    prune: bool,
    max_deletions: int | None,
    detailed_exitcode: bool,
    as_json: bool,
) -> int:
    workspace = load(options, os.environ, read_only=True)
    check_not_emptied(workspace)
    observed = observe(workspace, known_runners(workspace), refresh=options.refresh)
    result = reconcile(
        workspace.executors,
        observed,
        now=now_utc(),
        force=options.force,
        prune=prune,
        max_deletions=max_deletions,
    )
    for warning in result.warnings:
        workspace.warn(warning)
    pending = workspace.state.pending_creates
    if pending:
        workspace.warn(
            f"an interrupted run may have left {len(pending)} runner(s) in GitLab "
            f"({', '.join(sorted(pending))}); sync will look for them"
        )
    if result.held:
        write = "kept (held)"
    elif any(a.kind.value in ("create", "recreate", "delete", "rotate") for a in result.actions):
        write = "changes"
    else:
        expected = expected_config(workspace, observed)
        write = "unchanged" if same_content(workspace.config.raw, expected) else "changes"
    unreachable = any(r.verdict is Verdict.UNKNOWN for r in observed.runners.values())
    status = 3 if unreachable else 0
    if status == 0 and detailed_exitcode and (result.mutates or write == "changes"):
        status = CHANGES_PENDING
    report.emit(
        as_json,
        {
            "command": "plan",
            "exit_status": status,
            "config": str(workspace.output),
            "system_id": workspace.identity.system_id,
        },
        report.plan_rows(result, write),
        workspace.warnings,
    )
    return status
