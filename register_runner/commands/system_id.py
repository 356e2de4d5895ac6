"""``register-runner system-id``: print this host's system ID, creating it if missing."""

from __future__ import annotations

import argparse

from ..errors import InputError
from ..hostid import ensure_system_id


def run(args: argparse.Namespace) -> int:
    if not args.prefix.is_dir():
        raise InputError(f"{args.prefix}: no such folder (--prefix)")
    print(ensure_system_id(args.prefix))
    return 0
