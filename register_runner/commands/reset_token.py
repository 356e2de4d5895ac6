"""``register-runner reset-token``: rotate runner tokens now and save them in the config
(after a leak, say). Sync also rotates a token past 75% of its lifetime."""

from __future__ import annotations

import argparse

from ..model import Kind
from ..workspace import Options
from .selected import act_on_runners


def run(args: argparse.Namespace) -> int:
    return act_on_runners(
        Options.from_args(args),
        Kind.ROTATE,
        command="reset-token",
        names=args.runner,
        lock_timeout=args.lock_timeout,
        as_json=args.json,
    )
