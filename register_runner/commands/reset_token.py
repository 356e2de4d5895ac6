"""``register-runner reset-token``: rotate runner tokens now and save them in the config
(after a leak, say). Sync also rotates a token past 75% of its lifetime."""

from __future__ import annotations

import argparse

from .. import api, report
from ..model import Kind
from ..workspace import Options


def run(args: argparse.Namespace) -> int:
    result = api.act_on_runners(
        Kind.ROTATE,
        names=args.runner,
        lock_timeout=args.lock_timeout,
        **Options.from_args(args).as_kwargs(),
    )
    report.emit_result(args.json, result, table_asked=args.table)
    return result.exit_status
