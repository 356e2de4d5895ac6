"""The three kinds of expected failure, each with the exit status the contract gives it.

Exit 1 means a person must act, 2 bad input or usage, 3 try again later; a systemd unit
can then say ``RestartPreventExitStatus=1 2`` and retry only what may heal.
"""

from __future__ import annotations


class RegisterRunnerError(Exception):
    """An expected failure: reported as one line, never with a traceback."""

    exit_code = 1


class RefusedError(RegisterRunnerError):
    """GitLab refused something that needs a person: a rejected access token, 410 Gone,
    a validation error."""

    exit_code = 1


class InputError(RegisterRunnerError):
    """Bad input or usage; nothing was changed."""

    exit_code = 2


class TransientError(RegisterRunnerError):
    """GitLab unreachable or failing, or the lock busy: worth trying again later."""

    exit_code = 3
