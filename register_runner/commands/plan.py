"""``register-runner plan``: what sync would do, from the same inputs and the same
reconcile; nothing is changed in GitLab or on disk."""

from __future__ import annotations

import argparse
import os

from .. import migrate, report
from ..apply import config_unchanged
from ..workspace import Options, check_prefix, load, plan_changes

CHANGES_PENDING = 4


def run(args: argparse.Namespace) -> int:
    return plan(
        Options.from_args(args), detailed_exitcode=args.detailed_exitcode, as_json=args.json
    )


def plan(options: Options, *, detailed_exitcode: bool, as_json: bool) -> int:
    check_prefix(options)
    workspace = load(options, os.environ, read_only=True)
    observed, result = plan_changes(workspace)
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
        write = "unchanged" if config_unchanged(workspace, observed) else "changes"
    status = 3 if observed.unverified else 0
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
        report.plan_rows(result, write) + migrate.plan_leftovers(workspace, observed.runners),
        workspace.warnings,
    )
    return status
