"""``register-runner [sync]``: converge GitLab and config.<instance>.toml with the inputs."""

from __future__ import annotations

import argparse

from .. import api, report
from ..workspace import Options


def run(args: argparse.Namespace) -> int:
    result = api.sync(lock_timeout=args.lock_timeout, **Options.from_args(args).as_kwargs())
    report.emit_result(args.json, result)
    return result.exit_status
