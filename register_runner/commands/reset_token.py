"""``register-runner reset-token``: rotate runner tokens now and save them in the config
(after a leak, say). Sync also rotates a token past 75% of its lifetime."""

from __future__ import annotations

import argparse

from .. import api, report


def run(args: argparse.Namespace) -> int:
    result = api.reset_token(
        args.prefix,
        args.instance,
        runners=args.runner,
        deadline=args.deadline,
        timeout=args.timeout,
        jobs=args.jobs,
        insecure_permissions=args.insecure_permissions,
        lock_timeout=args.lock_timeout,
    )
    report.emit_result(args.json, result, table_asked=args.table)
    return result.exit_status
