"""Command line: argparse → ``commands.<name>.run(...)`` → exit status. No logic here.

Commands are imported only once chosen, so that ``--version``, ``--help`` and ``system-id``
never load the HTTP stack.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import importlib
import json
import logging
import os
import re
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Optional

from . import __version__, report
from .errors import InputError, RegisterRunnerError
from .secret import learned_within, scrub

if TYPE_CHECKING:
    from .model import Run

PROG = "register-runner"
DEFAULT_PREFIX = "/etc/gitlab-runner"
# Commands whose outcome `status` and the metrics report.
RECORDED = ("sync", "unregister", "reset-token")
SYSLOG_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}

log = logging.getLogger("register_runner")


def run() -> NoReturn:
    """The process's entry point (the console script, ``python -m register_runner``, the
    zipapp): ``main()``, with the cycle collector told what a run is, the watchdog armed,
    and no teardown."""
    code = main(own_process=True)
    with _ending:  # a watchdog that fired holds it until it has ended the process
        _returned.set()
    # Tearing the interpreter down frees every object one by one, ~10 ms after a sync of
    # 200 runners, for nothing: files are written and closed by now, the lock goes with
    # the process. What is left is to flush the log and the standard streams.
    logging.shutdown()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        sys.exit(code)  # Python's own report and exit status for output it cannot write
    os._exit(code)


def main(argv: Optional[Sequence[str]] = None, *, own_process: bool = False) -> int:
    """``own_process``: the process is this run's alone (``run()``). What the imports make
    then lives as long as the process, yet the collector scanned it again and again: for
    a steady sync of 200 runners ~20 ms of collections stalling every worker, and ~50 ms
    at exit. So the collector is off until the command is imported; then everything made
    so far is frozen (never scanned) and the collector runs, less often than by default:
    a run that retries for minutes still frees its cyclic garbage. Called in-process,
    ``main()`` leaves the collector alone."""
    if own_process:
        gc.disable()
    with learned_within():  # also while the error handler and the record scrub
        return _main(argv, own_process)


def _main(argv: Optional[Sequence[str]], own_process: bool) -> int:
    arguments = command_first(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser(arguments[0] if arguments and arguments[0] in COMMANDS else None)
    status = _Status(as_json="--json" in arguments)
    args = None
    with error_handler(status):
        args = parser.parse_args(arguments)
        status.as_json, status.verbose = args.json, args.verbose
        configure_logging(args.verbose, args.quiet)
        status.warnings = _capture_warnings()
        if own_process and hasattr(args, "deadline"):
            _arm_watchdog(args, status)
        if getattr(args, "credentials_directory", None) is not None:
            # What systemd sets for the unit; *_credential settings read it.
            os.environ["CREDENTIALS_DIRECTORY"] = str(args.credentials_directory)
        module = importlib.import_module(f".commands.{args.command.replace('-', '_')}", __package__)
        if own_process:
            gc.freeze()
            gc.set_threshold(20_000, 10, 10)
            gc.enable()
        ended = module.run(args)
        if isinstance(ended, int):
            status.code = ended
        else:  # a run the command recorded itself (api.sync)
            status.code, status.recorded = ended.exit_status, ended.recorded
    if args is not None and hasattr(args, "prefix"):
        with error_handler(status):
            _record(args, status)
    return status.code


def command_first(arguments: list[str]) -> list[str]:
    """The command word first, so that global options may come before it
    (``register-runner -v plan``); ``sync`` when there is none."""
    index = 0
    while index < len(arguments):
        word = arguments[index]
        if word in COMMANDS:
            return [word, *arguments[:index], *arguments[index + 1 :]]
        if not word.startswith("-") or word == "--":
            # Not a command: let argparse name it ("invalid choice").
            return arguments
        index += 2 if word in OPTIONS_WITH_VALUES else 1
    if any(word in ("-h", "--help", "--version") for word in arguments):
        return arguments
    return ["sync", *arguments]


# The options that take a value, of every command (one --prefix's value may be "plan"):
# what command_first skips, without building every parser (a test checks the list).
OPTIONS_WITH_VALUES = frozenset(
    {"-p", "--prefix", "--instance", "--service-instance", "--metrics-file", "--keep"}
    | {"--credentials-directory", "--deadline", "--timeout", "--jobs", "--capture-tags"}
    | {"--tag-schema", "--max-deletions", "--lock-timeout", "--runner", "--url", "--token"}
    | {"--token-file", "--system-id", "--tls-ca-file", "--fresh-deadline", "--older-than"}
)


def _record(args: argparse.Namespace, status: _Status) -> None:
    """Record the run of a command that changes runners (unless the command recorded it
    itself), then write the metrics file, on every exit path."""
    from . import health

    if _retry_not_needed(args, status):
        return
    if args.command in RECORDED and status.recorded is None:
        status.recorded = health.record_run(
            args.prefix,
            args.instance,
            exit_status=status.code,
            # After an error the runners are as the last run left them, unchecked.
            runners=None if status.error else health.runner_rows(args.prefix, args.instance, {}),
            warnings=[*status.warnings, *([status.error] if status.error else [])],
            access_tokens=None,
            config_kept=status.config_kept,
        )
    if getattr(args, "metrics_file", None) is not None:
        health.report_metrics(args.metrics_file, args.prefix, args.instance, status.recorded)


def _retry_not_needed(args: argparse.Namespace, status: _Status) -> bool:
    """``sync --retry-only`` that found nothing to retry: it ran nothing, so it records
    nothing, and the metrics go on describing the run that did."""
    return bool(getattr(args, "retry_only", False)) and (
        status.recorded is None and status.code == 0 and status.error is None
    )


# Past the deadline (and --lock-timeout, for a command that waits for the lock) what is
# left of a run is local and quick: writing the config, the state, the record.
GRACE = 5.0
# The record of a run that overran may hang as the run did (on the same NFS mount).
RECORD_WAIT = 2.0
# The run that returned and the watchdog that fired: whichever comes first ends the process.
_ending = threading.Lock()
_returned = threading.Event()


def _arm_watchdog(args: argparse.Namespace, status: _Status) -> None:
    """End the process at the deadline plus GRACE, whatever the run is stuck on that no
    timeout of its own ends (a read from a hung NFS mount, a getaddrinfo that never
    returns). Only for a process of its own: a library caller of the API is never ended."""
    # A fresh host's run may take --fresh-deadline: which one applies is known only later.
    deadline = max(args.deadline, getattr(args, "fresh_deadline", None) or 0.0)
    limit = deadline + getattr(args, "lock_timeout", 0.0) + GRACE
    timer = threading.Timer(limit, _overrun, (args, status, limit))
    timer.daemon = True
    timer.start()


def _overrun(args: argparse.Namespace, status: _Status, limit: float) -> None:
    """One error line and exit 3, as for a GitLab that kept failing: every file is
    replaced atomically, so the config on disk is the last good one. The run is recorded
    for ``status`` and the metrics if that can be done in RECORD_WAIT."""
    with _ending:
        if not _returned.is_set():
            _end_overrun(args, status, limit)


def _end_overrun(args: argparse.Namespace, status: _Status, limit: float) -> NoReturn:
    fresh = getattr(args, "fresh_deadline", None) or 0.0
    waited = "--fresh-deadline" if fresh > args.deadline else "--deadline"
    waited += " and --lock-timeout" if hasattr(args, "lock_timeout") else ""
    # A sync ends as one with GitLab failing does: exit 0 when gitlab-runner has a config
    # to start with (3 under --strict, or when there is none, or it cannot be told in time).
    kept = args.command == "sync" and bool(_within(RECORD_WAIT, _config_to_keep, args))
    _fail(
        status,
        0 if kept and not args.strict else 3,
        f"the run passed its deadline ({waited} plus {GRACE:g} s, {limit:g} s in all) "
        "and was ended while still waiting (on GitLab, DNS or a local file); the config "
        "on disk is the last good one",
    )
    status.config_kept = kept
    if hasattr(args, "prefix"):
        _within(RECORD_WAIT, _record_quietly, args, status)
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(status.code)


def _within(seconds: float, work: Callable[..., Any], *arguments: Any) -> Any:
    """``work(*arguments)`` on a thread of its own, given up on (None) after ``seconds``:
    what the watchdog still does may hang as the run did (on the same NFS mount)."""
    done: list[Any] = []
    worker = threading.Thread(target=lambda: done.append(work(*arguments)), daemon=True)
    worker.start()
    worker.join(seconds)
    return done[0] if done else None


def _config_to_keep(args: argparse.Namespace) -> bool:
    """Whether the config on disk has runners gitlab-runner can start with."""
    from .model import output_path
    from .output import read_config

    try:
        return bool(read_config(output_path(args.prefix, args.instance)).entries)
    except RegisterRunnerError:
        return False


def _record_quietly(args: argparse.Namespace, status: _Status) -> None:
    with contextlib.suppress(Exception):
        _record(args, status)


# Once per process (parsing leaves the parser as it was): the tests run main() hundreds of
# times in one process, and building it is a third of a short run's time there.
@functools.cache
def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The whole command line, or with ``only`` that command's: a run builds the one it
    runs (a tenth of the ~13 ms that every command's parser takes)."""
    parser = _Parser(
        prog=PROG,
        description="Keep this host's GitLab runners registered and config.<instance>.toml "
        "correct. Without a command: sync.",
        epilog="Exit status: 0 done, 1 a person must act (GitLab refused), 2 bad input, "
        "3 try again later (GitLab unreachable, lock busy), 4 plan: changes pending "
        "(--detailed-exitcode).",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, *options) in COMMANDS.items():
        if only in (None, name):
            command = commands.add_parser(name, help=help_text)
            for add in options:
                add(command)
    return parser


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log every API call (tokens masked)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    parser.add_argument(
        "--table",
        action="store_true",
        help="print the table on stdout under systemd too (by default only to a terminal "
        "there: stdout is the journal)",
    )


def _prefix(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-p",
        "--prefix",
        type=Path,
        default=Path(DEFAULT_PREFIX),
        help=f"configuration folder (default {DEFAULT_PREFIX})",
    )
    parser.add_argument(
        "--instance",
        "--service-instance",
        dest="instance",
        default="main",
        metavar="NAME",
        help="config.template.NAME.toml and NAME/ (default main)",
    )
    parser.add_argument(
        "--metrics-file",
        type=_optional_path,
        metavar="PATH",
        help="write the last run's metrics there for node_exporter's textfile collector "
        "(on every exit, atomically; empty: none)",
    )
    parser.add_argument(
        "--credentials-directory",
        type=Path,
        metavar="DIR",
        help="where *_credential settings are read from (default $CREDENTIALS_DIRECTORY, "
        "else the LoadCredential= source named in the systemd units)",
    )
    parser.add_argument(
        "--insecure-permissions",
        action="store_true",
        help="accept a prefix writable by group or others (development only)",
    )


def _network(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--deadline",
        type=_seconds,
        default=30.0,
        metavar="S",
        help="overall time for GitLab calls, retries included (default 30)",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="time for one HTTP request (default 10)",
    )
    parser.add_argument(
        "--jobs",
        type=_positive,
        default=None,
        metavar="N",
        help="API calls at once (default: one per runner, up to 64)",
    )


def _changes(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--force",
        action="store_true",
        help="override the guards: empty executor folder, mass-invalid tokens, --max-deletions",
    )
    _tags(parser)
    parser.add_argument(
        "--refresh",
        action="store_true",
        help="read each runner's attributes from GitLab and correct changes made there "
        "(default: compare with what register-runner last applied; one API call less)",
    )
    parser.add_argument(
        "--no-prune",
        dest="prune",
        action="store_false",
        help="only add and update; delete no runner",
    )
    parser.add_argument(
        "--max-deletions",
        type=_count,
        default=None,
        metavar="N",
        help="refuse to delete more runners in one run (default: half of them, at least 1)",
    )


def _tags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--capture-tags",
        metavar="NAME",
        help="a module on PYTHONPATH (as in LLNL's gitlab-runner-auth) or a .py file whose "
        "capture_tags() returns tags or properties for the runners",
    )
    parser.add_argument(
        "--tag-schema",
        type=Path,
        metavar="FILE",
        help="a JSON schema each runner's tag list must match, checked before any API call",
    )


def _locked(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lock-timeout",
        type=_seconds,
        default=60.0,
        metavar="S",
        help="wait this long for another run on the prefix (default 60)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 3 on any GitLab failure instead of keeping the last config",
    )


def _fresh(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fresh-deadline",
        type=_seconds,
        default=None,
        metavar="S",
        help="the deadline instead when there is no config to keep (a fresh host, whose "
        "runners cannot start without GitLab): to wait out a long Retry-After "
        "(default: --deadline)",
    )


def _retry(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--retry-only",
        action="store_true",
        help="sync only if the last run left something to try again (it exited 3, or "
        "GitLab failed before every runner was registered) or no run is recorded; "
        "else exit 0 at once, calling and writing nothing (register-runner-retry.timer)",
    )


def _selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runner",
        action="append",
        metavar="NAME",
        help="only this executor (file stem); repeatable",
    )


def _plan(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--detailed-exitcode", action="store_true", help="exit 4 when changes are pending"
    )


def _verify(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="GitLab URL of the token to check")
    token = parser.add_mutually_exclusive_group()
    token.add_argument(
        "--token",
        help="the runner token, or - to read it from stdin (a file or stdin keeps it out of ps)",
    )
    token.add_argument(
        "--token-file", type=Path, metavar="PATH", help="read the runner token from this file"
    )
    parser.add_argument("--system-id", help="system ID to verify with (default: the prefix's)")
    parser.add_argument("--tls-ca-file", metavar="PATH", help="CA bundle for --url")


def _prune_legacy(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--yes", action="store_true", help="delete them (default: only list)")


def _gc(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--older-than",
        type=_age,
        default=timedelta(days=30),
        metavar="AGE",
        help="runners silent for longer than this: 30d (the default), 12h, 2w; at least 2h",
    )
    parser.add_argument("--yes", action="store_true", help="delete them (default: only list)")
    parser.add_argument(
        "--max-deletions",
        type=_count,
        default=None,
        metavar="N",
        help="refuse to delete more runners in one run (default 20)",
    )
    parser.add_argument(
        "--lock-timeout",
        type=_seconds,
        default=60.0,
        metavar="S",
        help="wait this long for another run on the prefix (default 60)",
    )


def _demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="build the demo prefix in DIR (must not exist) and keep it",
    )


# The command words (each run by the module of its name under commands/, "-" read as
# "_"), each with its help line and the options it takes, in the order --help shows them.
COMMANDS: dict[str, tuple[Any, ...]] = {
    "sync": (
        "converge GitLab and the config with the inputs (the default)",
        *(_common, _prefix, _network, _fresh, _changes, _locked, _retry),
    ),
    "plan": (
        "show what sync would do; change nothing",
        *(_common, _prefix, _network, _fresh, _changes, _plan),
    ),
    "status": (
        "what the last run did (from the state; no API call); exits 0 when every runner "
        "can take jobs, 1 when a person must act, 3 when it is not known",
        *(_common, _prefix),
    ),
    "verify": (
        "check one runner token (--url with --token/--token-file), or every token in "
        "the generated config",
        *(_common, _prefix, _network, _verify),
    ),
    "system-id": (
        "print this host's system ID (creating it if missing)",
        *(_common, _prefix),
    ),
    "unregister": (
        "delete this host's runners of the instance from GitLab and from the config",
        *(_common, _prefix, _network, _locked, _selection),
    ),
    "reset-token": (
        "rotate runner tokens now and save them in the config",
        *(_common, _prefix, _network, _locked, _selection),
    ),
    "prune-legacy": (
        "list (--yes: delete) the runners gitlab-runner-auth left in GitLab for this "
        "host and instance",
        *(_common, _prefix, _network, _locked, _tags, _prune_legacy),
    ),
    "gc": (
        "list (--yes: delete) the runners of dead or re-imaged hosts: this tool's, silent "
        "for longer than --older-than, in every GitLab of the template",
        *(_common, _prefix, _network, _plan, _gc),
    ),
    "demo": (
        "try it: plan and sync an example prefix against a built-in fake GitLab",
        *(_common, _demo),
    ),
}


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _age(text: str) -> timedelta:
    match = re.fullmatch(r"(\d+)([smhdw])", text.strip())
    if match is None:
        raise argparse.ArgumentTypeError("a number and a unit: 30d, 12h, 90m, 2w")
    try:
        return timedelta(seconds=int(match[1]) * _AGE_UNITS[match[2]])
    except OverflowError:
        raise argparse.ArgumentTypeError("too long") from None


def _optional_path(text: str) -> Optional[Path]:
    # Empty: a unit's ${VARIABLE} set to nothing turns the file off.
    return Path(text) if text else None


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
    """The exit status and what the run said, for the record and ``--json``."""

    def __init__(self, as_json: bool) -> None:
        self.code = 0
        self.as_json = as_json
        self.verbose = False
        self.error: Optional[str] = None
        self.warnings: list[str] = []
        # The run the command recorded: the metrics describe it, also when the record
        # could not be written (a read-only state folder).
        self.recorded: Optional[Run] = None
        # A sync the watchdog ended, with a config on disk for gitlab-runner to start with.
        self.config_kept = False


class _Parser(argparse.ArgumentParser):
    """Usage errors go through the error handler: one line (with a priority under
    systemd), exit 2, and the error object under --json."""

    _for_output = False

    def error(self, message: str) -> NoReturn:
        raise InputError(f"{message} (see {self.prog} --help)")

    def format_usage(self) -> str:
        return self._formatted(super().format_usage)

    def format_help(self) -> str:
        return self._formatted(super().format_help)

    def _formatted(self, text: Callable[[], str]) -> str:
        self._for_output = True
        try:
            return text()
        finally:
            self._for_output = False

    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse makes a formatter for each option it adds, to check its metavar. Only
        # text that is shown needs the terminal's width, and asking for it imports shutil
        # (with zlib, bz2 and lzma): ~5 ms of every start.
        if self._for_output:
            return super()._get_formatter()
        # Every argparse formatter takes width; typeshed's protocol for them names only prog.
        return self.formatter_class(prog=self.prog, width=80)  # type: ignore[call-arg]


@contextlib.contextmanager
def error_handler(status: _Status) -> Iterator[None]:
    """Expected failures become one line and their exit status; anything else one line
    too, with the traceback only under --verbose. Secrets are scrubbed from both. With
    --json, the error is also printed on stdout as ``{"exit_status", "error"}``."""
    try:
        yield
    except RegisterRunnerError as error:
        _fail(status, error.exit_code, scrub(str(error)))
    except KeyboardInterrupt:
        _fail(status, 130, "interrupted")
    except BrokenPipeError:
        # Whatever reads the output stopped (``status --json | head``): no traceback, and
        # nothing more is written to that pipe, on stdout or at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status.as_json = False
        _fail(status, 1, "standard output closed before everything was written to it")
    except Exception as error:
        if status.verbose:
            print(scrub(traceback.format_exc()), file=sys.stderr, end="")
        _fail(
            status,
            1,
            f"internal error: {type(error).__name__}: {scrub(str(error))} "
            "(please report it; --verbose shows the traceback)",
        )


def _fail(status: _Status, code: int, message: str) -> None:
    status.code, status.error = code, message
    if os.environ.get("JOURNAL_STREAM"):
        print(
            f"<{SYSLOG_PRIORITY[logging.ERROR]}>event=error msg={quote(message)}", file=sys.stderr
        )
    else:
        print(f"{PROG}: error: {message}", file=sys.stderr)
    if status.as_json:
        document = {"schema": report.JSON_SCHEMA, "exit_status": code, "error": message}
        print(json.dumps(document), flush=True)


def quote(text: str) -> str:
    """A logfmt value: quoted, with quotes, backslashes and line breaks escaped, so that no
    text can start a log line of its own."""
    return json.dumps(text, ensure_ascii=False)


class ScrubbingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


class JournalFormatter(ScrubbingFormatter):
    """Under systemd: no timestamp (journald adds one), a <N> priority prefix, and
    key=value: a message that is not ``event=…`` already becomes ``event=<level>
    msg="…"``."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if not line.startswith("event="):
            line = f"event={record.levelname.lower()} msg={quote(line)}"
        return f"<{SYSLOG_PRIORITY.get(record.levelno, 6)}>{line}"


class _Warnings(logging.Handler):
    """Keeps the run's warnings and errors, for the last-run record."""

    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.setFormatter(ScrubbingFormatter("%(message)s"))
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(self.format(record))


def _capture_warnings() -> list[str]:
    warnings: list[str] = []
    log.addHandler(_Warnings(warnings))
    return warnings


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
