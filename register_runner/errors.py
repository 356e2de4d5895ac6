"""The three kinds of expected failure, each with the exit status the contract gives it.

Exit 1 means a person must act, 2 bad input or usage, 3 try again later; a systemd unit
can then say ``RestartPreventExitStatus=1 2`` and retry only what may heal.
"""

from __future__ import annotations


class Error(Exception):
    """An expected failure: reported as one line, never with a traceback."""

    exit_status = 1

    @property
    def exit_code(self) -> int:
        return self.exit_status


RegisterRunnerError = Error


class RefusedError(Error):
    """GitLab refused something that needs a person: a rejected access token, 410 Gone,
    a validation error."""

    exit_status = 1


class InputError(Error):
    """Bad input or usage; nothing was changed."""

    exit_status = 2


class TransientError(Error):
    """GitLab unreachable or failing, or the lock busy: worth trying again later."""

    exit_status = 3
