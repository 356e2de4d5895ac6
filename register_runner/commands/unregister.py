"""``register-runner unregister``: delete this host's runners of an instance from GitLab and
drop them from the config, for decommissioning a host (or one executor). Deletions that
cannot happen now stay journaled and are retried by the next run."""

from __future__ import annotations

import argparse

from ..model import Kind
from ..workspace import Options
from .selected import act_on_runners


def run(args: argparse.Namespace) -> int:
    return act_on_runners(
        Options.from_args(args),
        Kind.DELETE,
        command="unregister",
        names=args.runner,
        lock_timeout=args.lock_timeout,
        as_json=args.json,
    )
