"""Command line: argparse → ``commands.<name>.run(...)`` → exit status. No logic here.

Commands are imported only once chosen, so that ``--version``, ``--help`` and ``system-id``
never load python-gitlab or requests.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Optional

from . import __version__
from .errors import RegisterRunnerError
from .secret import scrub

PROG = "register-runner"
DEFAULT_PREFIX = "/etc/gitlab-runner"
COMMANDS = (
    "sync",
    "plan",
    "verify",
    "system-id",
    "unregister",
    "reset-token",
    "prune-legacy",
    "demo",
)
SYSLOG_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}

log = logging.getLogger("register_runner")


def main(argv: Optional[Sequence[str]] = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or (
        arguments[0] not in COMMANDS and arguments[0] not in ("-h", "--help", "--version")
    ):
        arguments.insert(0, "sync")
    args = build_parser().parse_args(arguments)
    configure_logging(args.verbose, args.quiet)
    with error_handler(args.verbose) as status:
        module = importlib.import_module(f".commands.{args.command.replace('-', '_')}", __package__)
        status.code = module.run(args)
    return status.code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Keep this host's GitLab runners registered and config.<instance>.toml "
        "correct. Without a command: sync.",
        epilog="Exit status: 0 done, 1 a person must act (GitLab refused), 2 bad input, "
        "3 try again later (GitLab unreachable, lock busy), 4 plan: changes pending "
        "(--detailed-exitcode).",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", help="log every API call (tokens masked)"
    )
    common.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    common.add_argument("--json", action="store_true", help="print a JSON summary on stdout")

    prefix = argparse.ArgumentParser(add_help=False)
    prefix.add_argument(
        "-p",
        "--prefix",
        type=Path,
        default=Path(DEFAULT_PREFIX),
        help=f"configuration folder (default {DEFAULT_PREFIX})",
    )
    prefix.add_argument(
        "--instance",
        "--service-instance",
        dest="instance",
        default="main",
        metavar="NAME",
        help="config.template.NAME.toml and NAME/ (default main)",
    )
    prefix.add_argument(
        "--insecure-permissions",
        action="store_true",
        help="accept a prefix writable by group or others (development only)",
    )

    network = argparse.ArgumentParser(add_help=False)
    network.add_argument(
        "--deadline",
        type=_seconds,
        default=30.0,
        metavar="S",
        help="overall time for GitLab calls, retries included (default 30)",
    )
    network.add_argument(
        "--timeout",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="time for one HTTP request (default 10)",
    )
    network.add_argument(
        "--jobs", type=_positive, default=16, metavar="N", help="API calls at once (default 16)"
    )

    changes = argparse.ArgumentParser(add_help=False)
    changes.add_argument(
        "--force",
        action="store_true",
        help="override the guards: empty executor folder, mass-invalid tokens, --max-deletions",
    )
    changes.add_argument(
        "--capture-tags",
        metavar="NAME",
        help="a module on PYTHONPATH (as in LLNL's gitlab-runner-auth) or a .py file whose "
        "capture_tags() returns tags or properties for the runners",
    )
    changes.add_argument(
        "--tag-schema",
        type=Path,
        metavar="FILE",
        help="a JSON schema each runner's tag list must match, checked before any API call",
    )
    changes.add_argument(
        "--refresh",
        action="store_true",
        help="read each runner's attributes from GitLab and correct changes made there "
        "(default: compare with what register-runner last applied; one API call less)",
    )
    changes.add_argument(
        "--no-prune",
        dest="prune",
        action="store_false",
        help="only add and update; delete no runner",
    )
    changes.add_argument(
        "--max-deletions",
        type=_count,
        default=None,
        metavar="N",
        help="refuse to delete more runners in one run (default: half of them, at least 1)",
    )

    locked = argparse.ArgumentParser(add_help=False)
    locked.add_argument(
        "--lock-timeout",
        type=_seconds,
        default=60.0,
        metavar="S",
        help="wait this long for another run on the prefix (default 60)",
    )
    locked.add_argument(
        "--strict",
        action="store_true",
        help="exit 3 on any GitLab failure instead of keeping the last config",
    )

    commands.add_parser(
        "sync",
        parents=[common, prefix, network, changes, locked],
        help="converge GitLab and the config with the inputs (the default)",
    )
    plan = commands.add_parser(
        "plan",
        parents=[common, prefix, network, changes],
        help="show what sync would do; change nothing",
    )
    plan.add_argument(
        "--detailed-exitcode", action="store_true", help="exit 4 when changes are pending"
    )

    verify = commands.add_parser(
        "verify",
        parents=[common, prefix, network],
        help="check one runner token (--url with --token/--token-file), or every token in "
        "the generated config",
    )
    verify.add_argument("--url", help="GitLab URL of the token to check")
    token = verify.add_mutually_exclusive_group()
    token.add_argument(
        "--token",
        help="the runner token, or - to read it from stdin (a file or stdin keeps it out of ps)",
    )
    token.add_argument(
        "--token-file", type=Path, metavar="PATH", help="read the runner token from this file"
    )
    verify.add_argument("--system-id", help="system ID to verify with (default: the prefix's)")
    verify.add_argument("--tls-ca-file", metavar="PATH", help="CA bundle for --url")

    commands.add_parser(
        "system-id",
        parents=[common, prefix],
        help="print this host's system ID (creating it if missing)",
    )

    selection = argparse.ArgumentParser(add_help=False)
    selection.add_argument(
        "--runner",
        action="append",
        metavar="NAME",
        help="only this executor (file stem); repeatable",
    )
    commands.add_parser(
        "unregister",
        parents=[common, prefix, network, locked, selection],
        help="delete this host's runners of the instance from GitLab and from the config",
    )
    commands.add_parser(
        "reset-token",
        parents=[common, prefix, network, locked, selection],
        help="rotate runner tokens now and save them in the config",
    )

    prune = commands.add_parser(
        "prune-legacy",
        parents=[common, prefix, network, locked],
        help="list (--yes: delete) the runners gitlab-runner-auth left in GitLab for this "
        "host and instance",
    )
    prune.add_argument("--yes", action="store_true", help="delete them (default: only list)")

    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="try it: plan and sync an example prefix against a built-in fake GitLab",
    )
    demo.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="build the demo prefix in DIR (must not exist) and keep it",
    )
    return parser


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


class _Status:
    code = 0


@contextlib.contextmanager
def error_handler(verbose: bool) -> Iterator[_Status]:
    """Expected failures become one line and their exit status; anything else one line
    too, with the traceback only under --verbose. Secrets are scrubbed from both."""
    status = _Status()
    try:
        yield status
    except RegisterRunnerError as error:
        print(f"{PROG}: error: {scrub(str(error))}", file=sys.stderr)
        status.code = error.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        status.code = 130
    except Exception as error:
        if verbose:
            print(scrub(traceback.format_exc()), file=sys.stderr, end="")
        print(
            f"{PROG}: internal error: {type(error).__name__}: {scrub(str(error))} "
            "(please report it; --verbose shows the traceback)",
            file=sys.stderr,
        )
        status.code = 1


class ScrubbingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


class JournalFormatter(ScrubbingFormatter):
    """Under systemd: no timestamp (journald adds one) and a <N> priority prefix."""

    def format(self, record: logging.LogRecord) -> str:
        return f"<{SYSLOG_PRIORITY.get(record.levelno, 6)}>{super().format(record)}"


def configure_logging(verbose: bool, quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(
            ScrubbingFormatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S")
        )
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
