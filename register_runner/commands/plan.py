"""``register-runner plan``: what sync would do, from the same inputs and the same
reconcile; nothing is changed in GitLab or on disk."""

from __future__ import annotations

import argparse

from .. import api, report


def run(args: argparse.Namespace) -> int:
    result = api.plan(
        args.prefix,
        args.instance,
        detailed_exitcode=args.detailed_exitcode,
        deadline=args.deadline,
        timeout=args.timeout,
        jobs=args.jobs,
        insecure_permissions=args.insecure_permissions,
        fresh_deadline=args.fresh_deadline,
        force=args.force,
        refresh=args.refresh,
        prune=args.prune,
        max_deletions=args.max_deletions,
        capture_tags=args.capture_tags,
        tag_schema=args.tag_schema,
    )
    report.emit_result(args.json, result, table_asked=args.table)
    return result.exit_status
