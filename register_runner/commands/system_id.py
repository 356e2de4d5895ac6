"""``register-runner system-id``: print this host's system ID, creating it if missing."""

from __future__ import annotations

import argparse

from .. import api


def run(args: argparse.Namespace) -> int:
    print(api.system_id(args.prefix))
    return 0
