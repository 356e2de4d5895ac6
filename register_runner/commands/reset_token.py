"""``register-runner reset-token``: rotate runner tokens now and save them in the config
(after a leak, say). Sync also rotates a token past 75% of its lifetime."""

from __future__ import annotations

import argparse

from .. import api, report
from . import network_options


def run(args: argparse.Namespace) -> api.Result:
    result = api.reset_token(
        args.prefix,
        args.instance,
        runners=args.runner,
        **network_options(args),
        lock_timeout=args.lock_timeout,
    )
    report.emit_result(args.json, result, table_asked=args.table)
    return result  # with the run it recorded, for the metrics
