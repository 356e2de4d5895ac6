"""One module per command, each with ``run(args) -> int``."""

from __future__ import annotations

import argparse
from typing import Any


def network_options(args: argparse.Namespace) -> dict[str, Any]:
    """The API keywords of the options every command that calls GitLab takes."""
    return {
        "deadline": args.deadline,
        "timeout": args.timeout,
        "jobs": args.jobs,
        "insecure_permissions": args.insecure_permissions,
    }


def converge_options(args: argparse.Namespace) -> dict[str, Any]:
    """The API keywords of the options sync and plan share, beyond ``network_options``."""
    return {
        "fresh_deadline": args.fresh_deadline,
        "force": args.force,
        "refresh": args.refresh,
        "prune": args.prune,
        "max_deletions": args.max_deletions,
        "capture_tags": args.capture_tags,
        "tag_schema": args.tag_schema,
    }
