"""The expected failures, each with the exit status the contract gives it.

Exit 1 means a person must act, 2 bad input or usage, 3 try again later. Anything else that
goes wrong is a bug, reported as an internal error. The fields a caller may act on (the
scope an access token lacks, whether a mutating call may have happened) are attributes,
set once where GitLab's answer is translated (gitlab.py).
"""

from __future__ import annotations

from typing import Optional


class Error(Exception):
    """An expected failure: reported as one line, never with a traceback."""

    exit_status = 1

    @property
    def exit_code(self) -> int:
        return self.exit_status


RegisterRunnerError = Error


class RefusedError(Error):
    """GitLab refused something that needs a person: a rejected access token, 410 Gone,
    a validation error, a wrong url."""

    exit_status = 1
    scope: Optional[str] = None  # the access-token scope that was missing, if that was it


class InputError(Error):
    """Bad input or usage; nothing was changed."""

    exit_status = 2


class HostInputError(InputError):
    """Bad input of the whole host met while reading one executor file (the site's
    capture_tags plugin failing): it stops the run, like a bad template."""


class TransientError(Error):
    """GitLab unreachable or failing, or the lock busy: worth trying again later."""

    exit_status = 3
    # A mutating call may have been acted on all the same (its answer was lost or could
    # not be read): it must not be sent again blindly.
    ambiguous = False


class UnknownOutcome(TransientError):
    """A mutating call whose outcome could not be learnt."""

    ambiguous = True
