"""``register-runner plan``: what sync would do, from the same inputs and the same
reconcile; nothing is changed in GitLab or on disk."""

from __future__ import annotations

import argparse

from .. import api, report
from ..workspace import Options


def run(args: argparse.Namespace) -> int:
    result = api.plan(
        detailed_exitcode=args.detailed_exitcode, **Options.from_args(args).as_kwargs()
    )
    report.emit_result(args.json, result, table_asked=args.table)
    return result.exit_status
