"""``register-runner [sync]``: converge GitLab and config.<instance>.toml with the inputs."""

from __future__ import annotations

import argparse
from typing import Union

from .. import api, report
from . import converge_options, network_options


def run(args: argparse.Namespace) -> Union[int, api.Result]:
    result = api.sync(
        args.prefix,
        args.instance,
        **network_options(args),
        **converge_options(args),
        strict=args.strict,
        lock_timeout=args.lock_timeout,
        retry_only=args.retry_only,
    )
    if result.recorded is None:  # --retry-only, and nothing to retry: it ran nothing
        return 0
    report.emit_result(args.json, result, table_asked=args.table)
    return result  # with the run it recorded, for the metrics
