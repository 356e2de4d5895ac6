"""``register-runner [sync]``: converge GitLab and config.<instance>.toml with the inputs."""

from __future__ import annotations

import argparse
import logging
from typing import Union

from .. import api, health, report
from . import converge_options, network_options

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> Union[int, api.Result]:
    if args.retry_only and not health.needs_retry(health.read_last_run(args.prefix, args.instance)):
        log.debug("event=retry_not_needed prefix=%s instance=%s", args.prefix, args.instance)
        return 0
    result = api.sync(
        args.prefix,
        args.instance,
        **network_options(args),
        **converge_options(args),
        strict=args.strict,
        lock_timeout=args.lock_timeout,
    )
    report.emit_result(args.json, result, table_asked=args.table)
    return result  # with the run it recorded, for the metrics
