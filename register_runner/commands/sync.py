"""``register-runner [sync]``: converge GitLab and config.<instance>.toml with the inputs."""

from __future__ import annotations

import argparse
import logging
from typing import Union

from .. import api, health, report

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> Union[int, api.Result]:
    if args.retry_only and not health.needs_retry(health.read_last_run(args.prefix, args.instance)):
        log.debug("event=retry_not_needed prefix=%s instance=%s", args.prefix, args.instance)
        return 0
    result = api.sync(
        args.prefix,
        args.instance,
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
        strict=args.strict,
        lock_timeout=args.lock_timeout,
    )
    report.emit_result(args.json, result, table_asked=args.table)
    return result  # with the run it recorded, for the metrics
