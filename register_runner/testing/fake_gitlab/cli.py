"""``fake-gitlab`` / ``python -m register_runner.testing.fake_gitlab``."""

from __future__ import annotations

import argparse
import re
import signal
import ssl
import sys
import threading
from datetime import date
from typing import Any, Optional

from .fake import FakeGitLab
from .misbehave import KINDS
from .server import TLSFiles


def _misbehaviour(text: str) -> tuple[str, Optional[str], Optional[str]]:
    """KIND[:METHOD[:PATH]] (an empty METHOD matches any method)."""
    kind, method, path = ([*text.split(":", 2), None, None])[:3]
    if kind not in KINDS:
        raise argparse.ArgumentTypeError(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")
    return kind, method or None, path or None


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _add_additions(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls-cert", metavar="FILE", help="serve https with this certificate")
    parser.add_argument("--tls-key", metavar="FILE", help="the certificate's private key")
    parser.add_argument(
        "--tls-client-ca", metavar="FILE", help="require client certificates from this CA"
    )
    parser.add_argument(
        "--runner-details-token",
        action="store_true",
        help="GET /runners/:id includes the token (LLNL's runner_details.rb patch)",
    )
    parser.add_argument(
        "--token-lifetime",
        type=float,
        metavar="SECONDS",
        help="runner tokens expire this long after they are issued",
    )
    parser.add_argument(
        "--misbehave",
        type=_misbehaviour,
        action="append",
        default=[],
        metavar="KIND[:METHOD[:PATH]]",
        help=(
            "misbehave once on the first matching request (PATH: a regex searched in the "
            f"path without /api/v4); repeatable. KIND: {', '.join(KINDS)}"
        ),
    )
    parser.add_argument(
        "--endless-pagination",
        action="store_true",
        help='list endpoints always announce a next page (Link rel="next")',
    )
    parser.add_argument(
        "--token-expires-at",
        type=_date,
        metavar="DATE",
        help="expiry date of the admin access token (YYYY-MM-DD)",
    )


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
    _add_additions(parser)
    args = parser.parse_args(argv)
    if args.latency < 0:
        parser.error("--latency must not be negative")
    if args.rate_limit is not None and args.rate_limit < 1:
        parser.error("--rate-limit must be at least 1")
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if args.tls_client_ca is not None and args.tls_cert is None:
        parser.error("--tls-client-ca needs --tls-cert and --tls-key")
    if args.token_lifetime is not None and args.token_lifetime <= 0:
        parser.error("--token-lifetime must be positive")
    scopes = [s for s in re.split(r"[\s,]+", args.scopes) if s]
    if not scopes:
        parser.error("--scopes needs at least one scope")

    tls = None
    if args.tls_cert is not None:
        tls = TLSFiles(args.tls_cert, args.tls_key, args.tls_client_ca)
    gl = FakeGitLab(host=args.host, port=args.port, tls=tls)
    gl.latency = args.latency
    gl.runner_details_token = args.runner_details_token
    gl.runner_token_lifetime = args.token_lifetime
    if args.endless_pagination:
        gl.endless_pagination()
    for kind, method, path in args.misbehave:
        gl.misbehave(kind, method=method, path=path)
    gl.allow_registration_tokens = not args.disallow_registration_tokens
    if args.rate_limit is not None:
        gl.rate_limit(per_minute=args.rate_limit)
    token = gl.add_access_token(
        scopes=scopes, admin=True, token=args.token, expires_at=args.token_expires_at
    )
    registration = gl.registration_token("instance_type")
    try:
        gl.start()
    except (OSError, ssl.SSLError) as exc:
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
