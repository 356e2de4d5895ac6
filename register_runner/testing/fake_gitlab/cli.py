"""``fake-gitlab`` / ``python -m register_runner.testing.fake_gitlab``."""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
from typing import Any, Optional

from .fake import FakeGitLab

# -------------------------------------------------------------------- command line


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fake-gitlab",
        description="Serve a fake GitLab REST API v4 (runner endpoints) for tests and demos.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port (0: any free port)")
    parser.add_argument(
        "--latency", type=float, default=0.0, metavar="SECONDS", help="delay every answer"
    )
    parser.add_argument(
        "--rate-limit",
        type=int,
        default=None,
        metavar="PER_MINUTE",
        help="answer 429 beyond this many requests per minute and client address",
    )
    parser.add_argument("--token", default=None, help="the admin access token (default: random)")
    parser.add_argument(
        "--scopes", default="api", help="scopes of that token, comma-separated (default: api)"
    )
    parser.add_argument(
        "--disallow-registration-tokens",
        action="store_true",
        help="answer 410 Gone to legacy registration (POST /runners)",
    )
    args = parser.parse_args(argv)
    if args.latency < 0:
        parser.error("--latency must not be negative")
    if args.rate_limit is not None and args.rate_limit < 1:
        parser.error("--rate-limit must be at least 1")
    scopes = [s for s in re.split(r"[\s,]+", args.scopes) if s]
    if not scopes:
        parser.error("--scopes needs at least one scope")

    gl = FakeGitLab(host=args.host, port=args.port)
    gl.latency = args.latency
    gl.allow_registration_tokens = not args.disallow_registration_tokens
    if args.rate_limit is not None:
        gl.rate_limit(per_minute=args.rate_limit)
    token = gl.add_access_token(scopes=scopes, admin=True, token=args.token)
    registration = gl.registration_token("instance_type")
    try:
        gl.start()
    except OSError as exc:
        print(f"fake-gitlab: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"url: {gl.url}")
    print(f"access_token: {token}")
    print(f"scopes: {','.join(scopes)}")
    print(f"registration_token: {registration}")
    sys.stdout.flush()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        gl.stop()
    return 0
