"""``register-runner prune-legacy``: delete the runners LLNL's gitlab-runner-auth left in
GitLab for this host and instance (it registered new ones on every restart against a
GitLab that no longer returns tokens in ``GET /runners/:id``). Without ``--yes`` it only
lists them.

A runner is deleted only when this host provably owns it: gitlab-runner-auth's
description with this host's name and this instance, not a runner of this host's state or
config, and, read again by id right before the deletion, still so described, without a
register-runner marker and not online (a runner that talked to GitLab within the last
hours may be in use by another machine of the same name). Needs read_api (to list) and
manage_runner (to read and delete by id).
"""

from __future__ import annotations

import argparse

from .. import api, report
from . import network_options


def run(args: argparse.Namespace) -> int:
    result = api.prune_legacy(
        args.prefix,
        args.instance,
        yes=args.yes,
        **network_options(args),
        lock_timeout=args.lock_timeout,
    )
    report.emit(
        args.json,
        {
            "command": "prune-legacy",
            "exit_status": result.exit_status,
            "deleted": result.deleted,
            "dry_run": result.dry_run,
        },
        [row.as_row() for row in result.actions],
        result.warnings,
        table_asked=args.table,
    )
    return result.exit_status
