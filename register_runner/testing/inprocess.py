"""The real command line in the test process: ``cli.main(argv)`` as a child would run it,
without the ~0.3 s of interpreter start and imports a child costs (nor ``cli.run``'s
garbage-collector settings, which belong to a process of its own).

What a child gets fresh is made fresh here and put back afterwards: the environment,
stdin/stdout/stderr, the warning filters, the logging set-up and PYTHONPATH (the package
keeps no state of its own between runs). Runs are one at a time (they swap process-wide
streams).
"""

from __future__ import annotations

import contextlib
import faulthandler
import io
import logging
import os
import subprocess
import sys
import threading
import traceback
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Literal, Optional

from .. import cli

# The filters a release build of Python starts with (no -W option).
DEFAULT_FILTERS: tuple[tuple[Literal["default", "ignore"], type[Warning], str], ...] = (
    ("default", DeprecationWarning, "__main__"),
    ("ignore", DeprecationWarning, ""),
    ("ignore", PendingDeprecationWarning, ""),
    ("ignore", ImportWarning, ""),
    ("ignore", ResourceWarning, ""),
)

_one_at_a_time = threading.Lock()


def run(
    command: Sequence[str],
    argv: Sequence[str],
    environment: Mapping[str, str],
    input: Optional[str],
    timeout: float,
) -> subprocess.CompletedProcess:
    """``register-runner argv`` with ``environment`` as its whole environment; ``command``
    is what the CompletedProcess names, as for a child; past ``timeout`` s the test process
    ends (see _watchdog)."""
    with contextlib.ExitStack() as stack:
        for context in (_one_at_a_time, _watchdog(timeout), _fresh_logging()):
            stack.enter_context(context)
        stack.enter_context(_environment(environment))
        stdout, stderr = stack.enter_context(_stdio(input))
        stack.enter_context(_warnings(environment, stderr))
        status = _exit_status(lambda: cli.main(list(argv)), stderr)
    return subprocess.CompletedProcess(list(command), status, _text(stdout), _text(stderr))


def _exit_status(main, stderr: io.TextIOBase) -> int:  # type: ignore[no-untyped-def]
    """What the interpreter makes of ``sys.exit(main())``: --help and --version raise
    SystemExit; an exception that escapes main is a traceback and status 1."""
    try:
        return main()
    except SystemExit as exit:
        if exit.code is None or isinstance(exit.code, int):
            return exit.code or 0
        print(exit.code, file=stderr)
        return 1
    except Exception:
        traceback.print_exc(file=stderr)
        return 1


@contextlib.contextmanager
def _watchdog(timeout: float) -> Iterator[None]:
    """A child that hangs is killed after ``timeout``; a run in this process cannot be,
    so the whole test process ends instead, after printing every thread's stack: the
    test fails rather than hanging the suite."""
    faulthandler.dump_traceback_later(timeout, exit=True, file=sys.__stderr__ or sys.stderr)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


@contextlib.contextmanager
def _fresh_logging() -> Iterator[None]:
    """The logging the CLI configures, as a child starts without it (the root logger
    too: in a child, other libraries' warnings reach stderr through logging's last
    resort, not pytest's capture)."""
    ours, root = logging.getLogger("register_runner"), logging.getLogger()
    ours_was = (ours.handlers[:], ours.level, ours.propagate)
    root_was = (root.handlers[:], root.level)
    ours.handlers[:], ours.level, ours.propagate = [], logging.NOTSET, True
    root.handlers[:], root.level = [], logging.WARNING
    try:
        yield
    finally:
        ours.handlers[:], ours.level, ours.propagate = ours_was
        root.handlers[:], root.level = root_was


@contextlib.contextmanager
def _environment(environment: Mapping[str, str]) -> Iterator[None]:
    """``environment`` as os.environ; a PYTHONPATH in it also goes first on sys.path (as
    in a child, for --capture-tags modules), and what was imported from there is
    forgotten afterwards."""
    saved_environ, saved_path = dict(os.environ), sys.path[:]
    entries = environment.get("PYTHONPATH", "").split(os.pathsep)
    added = [os.path.abspath(e) for e in entries if e and os.path.abspath(e) not in sys.path]
    os.environ.clear()
    os.environ.update(environment)
    sys.path[:0] = added
    modules = set(sys.modules)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved_environ)
        sys.path[:] = saved_path
        for name in set(sys.modules) - modules:
            origin = getattr(sys.modules[name], "__file__", None) or ""
            if any(origin.startswith(folder + os.sep) for folder in added):
                del sys.modules[name]


@contextlib.contextmanager
def _stdio(input: Optional[str]) -> Iterator[tuple[io.TextIOWrapper, io.TextIOWrapper]]:
    """Byte buffers behind text streams with a child's encoding and error handlers (a
    pipe's: no terminal, no fileno)."""
    encoding = getattr(sys.__stdout__, "encoding", None) or "utf-8"
    stdout = io.TextIOWrapper(
        io.BytesIO(), encoding, getattr(sys.__stdout__, "errors", None) or "strict"
    )
    stderr = io.TextIOWrapper(io.BytesIO(), encoding, "backslashreplace")
    stdin = io.TextIOWrapper(io.BytesIO((input or "").encode(encoding)), encoding)
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = stdin, stdout, stderr
    try:
        yield stdout, stderr
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved


def _text(stream: io.TextIOWrapper) -> str:
    """Decoded as subprocess.run(text=True) decodes a child's output."""
    stream.flush()
    text = stream.buffer.getvalue().decode(stream.encoding)  # type: ignore[attr-defined]
    return text.replace("\r\n", "\n").replace("\r", "\n")


@contextlib.contextmanager
def _warnings(environment: Mapping[str, str], stderr: io.TextIOBase) -> Iterator[None]:
    """The interpreter's default filters (and PYTHONWARNINGS), shown on the run's stderr:
    pytest would otherwise collect the warnings for its own summary."""

    def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    with warnings.catch_warnings():
        warnings.resetwarnings()
        for action, category, module in DEFAULT_FILTERS:
            warnings.filterwarnings(action, category=category, module=module, append=True)
        options = [o for o in environment.get("PYTHONWARNINGS", "").split(",") if o]
        warnings._processoptions(options)  # type: ignore[attr-defined]
        warnings.showwarning = show
        yield
