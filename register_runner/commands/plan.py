"""``register-runner plan``: what sync would do, from the same inputs and the same
reconcile; nothing is changed in GitLab or on disk."""

from __future__ import annotations

import argparse

from .. import api, report
from . import converge_options, network_options


def run(args: argparse.Namespace) -> int:
    result = api.plan(
        args.prefix,
        args.instance,
        detailed_exitcode=args.detailed_exitcode,
        **network_options(args),
        **converge_options(args),
    )
    report.emit_result(args.json, result, table_asked=args.table)
    return result.exit_status
