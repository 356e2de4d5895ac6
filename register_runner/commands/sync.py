"""``register-runner [sync]``: converge GitLab and config.<instance>.toml with the inputs."""

from __future__ import annotations

import argparse
import logging

from .. import api, health, report
from ..workspace import Options

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    if args.retry_only and not health.needs_retry(health.read_last_run(args.prefix, args.instance)):
        log.debug("event=retry_not_needed prefix=%s instance=%s", args.prefix, args.instance)
        return 0
    result = api.sync(lock_timeout=args.lock_timeout, **Options.from_args(args).as_kwargs())
    report.emit_result(args.json, result)
    return result.exit_status
