"""``register-runner gc``: list (``--yes``: delete) the runners of dead and re-imaged
hosts, as ``api.gc`` finds them."""

from __future__ import annotations

import argparse

from .. import api, report
from . import network_options


def run(args: argparse.Namespace) -> int:
    result = api.gc(
        args.prefix,
        args.instance,
        older_than=args.older_than,
        yes=args.yes,
        max_deletions=args.max_deletions,
        detailed_exitcode=args.detailed_exitcode,
        **network_options(args),
        lock_timeout=args.lock_timeout,
    )
    report.emit(
        args.json,
        {
            "command": "gc",
            "exit_status": result.exit_status,
            "changed": result.changed,
            "dry_run": result.dry_run,
            "deleted": result.deleted,
            "older_than_seconds": int(result.older_than.total_seconds()),
            "seconds": result.seconds,
        },
        [action.as_row() for action in result.actions],
        result.warnings,
        table_asked=args.table,
    )
    return result.exit_status
