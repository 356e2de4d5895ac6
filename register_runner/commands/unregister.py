"""``register-runner unregister``: delete this host's runners of an instance from GitLab and
drop them from the config, for decommissioning a host (or one executor). Deletions that
cannot happen now stay journaled and are retried by the next run."""

from __future__ import annotations

import argparse

from .. import api, report
from ..model import Kind
from ..workspace import Options


def run(args: argparse.Namespace) -> int:
    result = api.act_on_runners(
        Kind.DELETE,
        names=args.runner,
        lock_timeout=args.lock_timeout,
        **Options.from_args(args).as_kwargs(),
    )
    report.emit_result(args.json, result)
    return result.exit_status
