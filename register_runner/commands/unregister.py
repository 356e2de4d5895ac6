"""``register-runner unregister``: delete this host's runners of an instance from GitLab and
drop them from the config, for decommissioning a host (or one executor). Deletions that
cannot happen now stay journaled and are retried by the next run."""

from __future__ import annotations

import argparse
import logging

from .. import api, report
from . import network_options

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> api.Result:
    result = api.unregister(
        args.prefix,
        args.instance,
        runners=args.runner,
        **network_options(args),
        lock_timeout=args.lock_timeout,
    )
    report.emit_result(args.json, result, table_asked=args.table)
    folder = args.prefix / args.instance
    for stem in sorted(args.runner or (p.stem for p in folder.glob("*.toml"))):
        if (folder / f"{stem}.toml").is_file():
            log.warning(
                "%s still exists: the next sync (or start of gitlab-runner) registers a new "
                "runner for it; remove or move the file to keep it unregistered",
                folder / f"{stem}.toml",
            )
    return result  # with the run it recorded, for the metrics
