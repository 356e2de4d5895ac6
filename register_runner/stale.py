"""Dead hosts' runners: the runners this tool made (they carry its marker) that have not
talked to GitLab for longer than an age, found across every GitLab of the template and,
when asked, deleted. ``register-runner gc`` prints what ``collect`` returns.

The lists are asked only for what GitLab already calls offline or stale (list items carry
no contact time), so that a fleet sharing one access token spends few requests on it;
only those runners are read by id, for their marker and times.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Optional

from .answers import AccessDenied, message
from .errors import InputError, RegisterRunnerError, TransientError
from .migrate import known_ids, scopes
from .model import ActionResult, Kind, Loaded, Scope, Warnings, carries_marker
from .timeutil import parse_timestamp
from .workspace import GitLab

# GitLab's own words (Ci::Runner): online is a contact within 2 hours, stale none for 7
# days. GitLab records a runner's contacts only every hour or so, so a shorter age could
# take a live runner for a dead one.
ONLINE_WINDOW = timedelta(hours=2)
STALE_AFTER = timedelta(days=7)
MIN_AGE = ONLINE_WINDOW
# Older than GitLab itself: any longer age lists nothing, and reaches past datetime's range.
MAX_AGE = timedelta(days=36500)
# Without --max-deletions: more than this many at once is more often a GitLab that lost
# its contact times (a restore) than a fleet's dead hosts.
DEFAULT_MAX_DELETIONS = 20


@dataclass(frozen=True)
class Dead:
    """A runner of this tool that has not contacted GitLab for longer than the age."""

    url: str
    id: int
    description: str
    contacted_at: Optional[datetime]  # None: never
    created_at: Optional[datetime]

    def reason(self, now: datetime) -> str:
        if self.contacted_at is None:
            since = f"never contacted GitLab; created {_ago(self.created_at, now)}"
        else:
            since = f"last contact {_ago(self.contacted_at, now)}"
        return f"on {self.url}: {since}"


def _ago(when: Optional[datetime], now: datetime) -> str:
    assert when is not None
    days = (now - when).total_seconds() / 86400
    return f"{when.date().isoformat()} ({days:.0f} days ago)"


def age_text(age: timedelta) -> str:
    """``age`` as --older-than takes it: 2h, 30d, 2w."""
    seconds = int(age.total_seconds())
    for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def statuses(older_than: timedelta) -> tuple[str, ...]:
    """GitLab's statuses a runner silent for longer than ``older_than`` may have."""
    if older_than >= STALE_AFTER:
        return ("stale",)
    return ("stale", "offline", "never_contacted")


def collect(
    loaded: Loaded,
    gitlab: GitLab,
    *,
    older_than: timedelta,
    delete: bool,
    max_deletions: Optional[int],
    now: datetime,
) -> tuple[list[ActionResult], list[RegisterRunnerError], tuple[str, ...]]:
    """The rows of the dead runners (deleted when ``delete``), the errors met and the
    warnings. Raises InputError, before any deletion, when more would be deleted than
    allowed."""
    errors: list[RegisterRunnerError] = []
    said = Warnings()
    listed = _listed(loaded, gitlab, older_than, errors)
    read = gitlab.concurrently(lambda key: _read(gitlab, key), listed)
    dead = []
    for (url, runner_id), details in zip(listed, read):
        if isinstance(details, RegisterRunnerError):
            errors.append(details)
            continue
        candidate = _dead(loaded, url, runner_id, details, now - older_than)
        if candidate is not None:
            dead.append(candidate)
    limit = DEFAULT_MAX_DELETIONS if max_deletions is None else max_deletions
    if len(dead) > limit:
        message = (
            f"{len(dead)} runners to delete, more than the limit of {limit}; check the "
            "list (gc without --yes), then pass --max-deletions N"
        )
        if delete:
            raise InputError(f"refusing to delete: {message}")
        said.warn(f"gc --yes would refuse: {message}")
    if not delete:
        return [_row(d, now, "planned") for d in dead], errors, said.said
    results = gitlab.concurrently(lambda d: _delete(gitlab, d), dead)
    rows = []
    for candidate, outcome in zip(dead, results):
        if isinstance(outcome, RegisterRunnerError):
            errors.append(outcome)
            rows.append(_row(candidate, now, "failed", str(outcome)))
        else:
            rows.append(_row(candidate, now, outcome))
    return rows, errors, said.said


def _listed(
    loaded: Loaded, gitlab: GitLab, older_than: timedelta, errors: list[RegisterRunnerError]
) -> list[tuple[str, int]]:
    """(url, id) of the runners GitLab lists as silent, but none this host uses."""
    skip = known_ids(loaded)
    found: list[tuple[str, int]] = []
    for url, scope in scopes(loaded):
        for status in statuses(older_than):
            try:
                runners = gitlab.api(url).list_runners(scope, status=status)
            except AccessDenied as error:
                errors.append(AccessDenied(f"{error}; {_who_may_list(scope)}", error.scope))
                break
            except RegisterRunnerError as error:
                errors.append(error)
                break
            for runner in runners:
                runner_id = runner.get("id")
                if isinstance(runner_id, int) and (url, runner_id) not in skip:
                    skip.add((url, runner_id))
                    found.append((url, runner_id))
    return found


def _who_may_list(scope: Scope) -> str:
    if scope.runner_type == "instance_type":
        return "listing instance runners needs an admin's access token with read_api"
    who = "an owner" if scope.runner_type == "group_type" else "a maintainer"
    return (
        f"listing the runners of {scope.describe()} needs the access token of {who} of "
        "it, with read_api"
    )


def _read(gitlab: GitLab, key: tuple[str, int]) -> Any:
    try:
        return gitlab.api(key[0]).get_runner(key[1])
    except RegisterRunnerError as error:
        return error


def _dead(
    loaded: Loaded,
    url: str,
    runner_id: int,
    details: Optional[Mapping[str, Any]],
    cutoff: datetime,
) -> Optional[Dead]:
    """The runner, if it is this tool's, another machine's, and provably silent since
    before ``cutoff``."""
    if details is None or not carries_marker(details.get("maintenance_note")):
        return None
    # This machine's runners of another instance or prefix are not in this state, yet they
    # are this host's current runners (a stopped service's, say): theirs to delete. So is
    # the runner of a create of this prefix whose answer was lost: recovery's to adopt.
    if loaded.identity.names_this_machine(details.get("maintenance_note")):
        return None
    contacted = _time(details.get("contacted_at"))
    created = _time(details.get("created_at"))
    if details.get("contacted_at") is not None:
        if contacted is None or contacted >= cutoff:
            return None
    elif created is None or created >= cutoff:
        return None
    # GitLab's text, made one printable line: no description can forge a log line.
    description = message(details.get("description") or "")
    return Dead(url, runner_id, description, contacted, created)


def _time(value: Any) -> Optional[datetime]:
    return parse_timestamp(value) if isinstance(value, str) else None


def _delete(gitlab: GitLab, dead: Dead) -> Any:
    try:
        return "done" if gitlab.api(dead.url).delete_runner(dead.id) else "already gone"
    except RegisterRunnerError as error:
        return error


def _row(dead: Dead, now: datetime, result: str, error: Optional[str] = None) -> ActionResult:
    return ActionResult(
        Kind.DELETE, dead.description, dead.id, result, dead.reason(now), error=error
    )


def exit_status(errors: list[RegisterRunnerError]) -> int:
    """1 when GitLab refused something a person must fix, 3 when it failed, else 0."""
    if any(not isinstance(error, TransientError) for error in errors):
        return 1
    return 3 if errors else 0
