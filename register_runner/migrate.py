"""Moving a host from LLNL's gitlab-runner-auth.

Its output entries have no ``name`` and the description ``<host> <instance> <executor>
Runner`` (one runner per executor type): they are adopted by the executor file of that
type, tokens kept. Against a GitLab that no longer returns tokens in ``GET /runners/:id``
it registered new runners on every restart; those leftovers carry the same description
and are found by listing (read_api), shown by ``plan`` and deleted only by ``prune-legacy``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from .errors import RefusedError, RegisterRunnerError, TransientError
from .model import (
    REGISTRATION_ATTRIBUTES,
    ActionResult,
    Executor,
    Kind,
    PendingDelete,
    RunnerState,
    Scope,
    Verdict,
    Warnings,
    carries_marker,
    normalize_url,
)
from .output import credentials_of
from .secret import Secret
from .tags import legacy_hostname

if TYPE_CHECKING:
    from .gitlab import Issued
    from .workspace import GitLab, Loaded

log = logging.getLogger(__name__)

Verify = Callable[[str, Secret], "tuple[Verdict, Optional[Issued]]"]


def legacy_description(host: str, instance: str, executor_type: str) -> str:
    return f"{host} {instance} {executor_type} Runner"


def is_legacy_description(description: Any, host: str, instance: str) -> bool:
    """Whether ``description`` is what gitlab-runner-auth gave a runner of this host and
    instance (any executor type: a type whose file is gone left runners too)."""
    pattern = rf"{re.escape(host)} {re.escape(instance)} \S+ Runner"
    return isinstance(description, str) and re.fullmatch(pattern, description) is not None


def legacy_matches(
    entries: Iterable[Mapping[str, Any]],
    executors: Sequence[Executor],
    host: str,
    instance: str,
    taken: Collection[str] = (),
) -> tuple[dict[str, Mapping[str, Any]], list[str]]:
    """The output entries gitlab-runner-auth wrote, by the stem of the executor file that
    describes the same runner now, and a warning for each such entry that cannot be
    matched. An entry matches when it has no ``name``, a token, its description for this
    host and instance, and exactly one executor file (among ``executors``, but not those
    whose stem is ``taken``: they have a runner) has its ``executor`` type and url; two
    entries for one file match neither."""
    by_type: dict[str, list[Executor]] = {}
    for executor in executors:
        by_type.setdefault(str(executor.settings.get("executor")), []).append(executor)
    found: dict[str, list[Mapping[str, Any]]] = {}
    warnings = []
    for entry in entries:
        executor_type = entry.get("executor")
        token = entry.get("token")
        if (
            "name" in entry
            or not isinstance(token, str)
            or not token
            or not isinstance(executor_type, str)
            or entry.get("description") != legacy_description(host, instance, executor_type)
        ):
            continue
        url = normalize_url(str(entry.get("url", "")))
        of_type = [e for e in by_type.get(executor_type, []) if e.url == url]
        candidates = [e for e in of_type if e.stem not in taken]
        if len(candidates) == 1:
            found.setdefault(candidates[0].stem, []).append(entry)
            continue
        if candidates:
            why = (
                f"{len(candidates)} executor files have executor = {executor_type!r} and url {url}"
            )
        elif of_type:
            files = ", ".join(sorted(Path(e.path).name for e in of_type))
            why = f"{files} already has a runner in the state and config"
        else:
            why = f"no executor file has executor = {executor_type!r} and url {url}"
        warnings.append(
            f"gitlab-runner-auth's runner {entry['description']!r} is not adopted: {why}; "
            "it is dropped from the config and left in GitLab (plan lists it, prune-legacy "
            "deletes it)"
        )
    matches = {}
    for stem, same in sorted(found.items()):
        if len(same) == 1:
            matches[stem] = same[0]
        else:
            warnings.append(
                f"{len(same)} config entries are described "
                f"{same[0]['description']!r}; none is adopted by {stem}"
            )
    return matches, warnings


def adopt(
    matches: Mapping[str, Mapping[str, Any]],
    executors: Mapping[str, Executor],
    verify: Verify,
    read: Callable[[str, int], Mapping[str, Any]],
) -> dict[str, RunnerState]:
    """This host's runners from gitlab-runner-auth's entries (see legacy_matches), by stem.

    Its entries have no ``id`` (gitlab-runner adds one when it rewrites the file): it is
    learnt from ``verify(url, token)`` (``POST /runners/verify`` answers it since GitLab
    15.10). A token GitLab rejects is not adopted (a new runner is created; the old one is
    a leftover). What GitLab holds (``read(url, id)``) is recorded as applied, so the next
    sync sends the registration attributes that differ, the marker among them (all of
    them when GitLab would not say). Raises TransientError when GitLab cannot say whether
    the token is valid: the runner must not be replaced meanwhile."""
    runners = {}
    for stem, entry in sorted(matches.items()):
        executor = executors[stem]
        credentials = credentials_of(entry)
        assert credentials is not None  # legacy_matches took only entries with a token
        runner_id = entry.get("id")
        verdict = Verdict.UNCHECKED
        if not isinstance(runner_id, int) or isinstance(runner_id, bool):
            verdict, issued = verify(executor.url, credentials.token)
            if verdict is Verdict.INVALID:
                log.warning(
                    "event=adopt_skipped runner=%s: GitLab rejects the token of "
                    "gitlab-runner-auth's runner %r; a new runner is created",
                    stem,
                    entry.get("description"),
                )
                continue
            runner_id = issued.id if verdict is Verdict.VALID and issued is not None else None
            if runner_id is None:
                raise TransientError(
                    f"{executor.url}: cannot learn the id of gitlab-runner-auth's runner "
                    f"{entry.get('description')!r} (POST /runners/verify did not say it); "
                    "the config is kept as it is; try again later"
                )
        log.info(
            "event=adopt runner=%s id=%s: gitlab-runner-auth's runner %r",
            stem,
            runner_id,
            entry.get("description"),
        )
        runners[stem] = RunnerState(
            stem,
            runner_id,
            executor.url,
            executor.scope,
            read(executor.url, runner_id),
            credentials.token,
            credentials.obtained_at,
            credentials.expires_at,
            verdict,
        )
    return runners


def legacy_leftovers(
    listed: Iterable[Mapping[str, Any]],
    host: str,
    instance: str,
    known_ids: Iterable[int],
) -> list[Mapping[str, Any]]:
    """The runners of one GitLab's list (``GET /runners/all`` and the like) that
    gitlab-runner-auth left for this host and instance: its description, and not one this
    host uses (``known_ids``: the ids in the state and the config, for that GitLab)."""
    known = set(known_ids)
    return sorted(
        (
            runner
            for runner in listed
            if isinstance(runner.get("id"), int)
            and runner["id"] not in known
            and is_legacy_description(runner.get("description"), host, instance)
        ),
        key=lambda runner: runner["id"],
    )


def known_ids(loaded: Loaded) -> set[tuple[str, int]]:
    """(url, id) of every runner this host holds or has queued for deletion."""
    ids = {(r.url, r.id) for r in loaded.state.runners.values()}
    ids |= {(d.url, d.id) for d in loaded.state.pending_deletes}
    ids |= {
        (normalize_url(str(entry.get("url", ""))), entry["id"])
        for entry in loaded.config.entries
        if isinstance(entry.get("id"), int)
    }
    return ids


def scopes(loaded: Loaded) -> list[tuple[str, Scope]]:
    """Where gitlab-runner-auth's runners may be: each GitLab's scope and each executor's."""
    found = {(url, client.scope) for url, client in loaded.inputs.clients.items()}
    found |= {(e.url, e.scope) for e in loaded.executors}
    return sorted(found, key=lambda pair: (pair[0], sorted(pair[1].to_json().items(), key=str)))


def find_leftovers(
    loaded: Loaded, gitlab: GitLab, known: set[tuple[str, int]], host: str
) -> tuple[list[tuple[str, Mapping[str, Any]]], list[RegisterRunnerError]]:
    """(url, runner) for each leftover in every GitLab of the template, and the errors of
    the listings that failed (read_api is needed to list)."""
    leftovers: list[tuple[str, Mapping[str, Any]]] = []
    errors: list[RegisterRunnerError] = []
    seen = set()
    for url, scope in scopes(loaded):
        try:
            listed = gitlab.api(url).list_runners(scope)
        except RegisterRunnerError as error:
            errors.append(error)
            continue
        ids = {runner_id for known_url, runner_id in known if known_url == url}
        for runner in legacy_leftovers(listed, host, loaded.identity.instance, ids):
            if (url, runner["id"]) not in seen:
                seen.add((url, runner["id"]))
                leftovers.append((url, runner))
    return leftovers, errors


# -- what the lead's load/observe and plan call -------------------------------------------


def adopt_legacy(
    loaded: Loaded, gitlab: GitLab, runners: Mapping[str, RunnerState]
) -> tuple[dict[str, RunnerState], list[PendingDelete], list[str]]:
    """gitlab-runner-auth's config entries adopted by the executors that have no usable
    runner among ``runners`` (none, or one whose token the config lost: after a rollback
    to gitlab-runner-auth, which rewrote the config with runners of its own), the
    deletions to queue and the warnings. A runner of this host that an adopted one
    replaces is deleted, which proves ownership first, as for the old runner of a
    recreate."""
    if loaded.foreign:
        return {}, [], []
    free = [e for e in loaded.executors if e.stem not in runners or runners[e.stem].token is None]
    matches, warnings = legacy_matches(
        loaded.config.entries, free, legacy_hostname(), loaded.identity.instance
    )
    system_id = loaded.identity.system_id
    adopted = adopt(
        matches,
        {e.stem: e for e in free},
        lambda url, token: gitlab.api(url).verify(token, system_id),
        lambda url, runner_id: _registration_attributes(gitlab, url, runner_id),
    )
    deletes = []
    for stem, runner in adopted.items():
        replaced = runners.get(stem)
        if replaced is not None and (replaced.url, replaced.id) != (runner.url, runner.id):
            deletes.append(PendingDelete(replaced.id, replaced.url, stem, replaced.token))
    return adopted, deletes, list(warnings)


def _registration_attributes(gitlab: GitLab, url: str, runner_id: int) -> Mapping[str, Any]:
    """What GitLab holds for a runner (GET /runners/:id), so that an adopted runner's
    update sends, and plan shows, only what differs; nothing when GitLab will not say."""
    try:
        details = gitlab.api(url).get_runner(runner_id)
    except RegisterRunnerError as error:
        log.debug("event=adopt_attributes_unknown id=%s reason=%s", runner_id, error)
        return {}
    if details is None:
        return {}
    return {key: details[key] for key in REGISTRATION_ATTRIBUTES if key in details}


def plan_leftovers(
    loaded: Loaded, gitlab: GitLab, runners: Mapping[str, RunnerState]
) -> tuple[list[ActionResult], tuple[str, ...]]:
    """``plan``'s rows for the runners gitlab-runner-auth left in GitLab for this host
    (``runners``: this host's, adopted ones included), and one warning naming the command
    that deletes them. A GitLab that cannot be listed (no read_api) is warned about only
    when the template says identity_tags = "gitlab-runner-auth"."""
    said = Warnings()
    known = known_ids(loaded) | {(r.url, r.id) for r in runners.values()}
    leftovers, errors = find_leftovers(loaded, gitlab, known, legacy_hostname())
    if errors and loaded.inputs.tag_policy.gitlab_runner_auth:
        said.warn(
            f"cannot look for runners gitlab-runner-auth left: {errors[0]} (listing needs read_api)"
        )
    if leftovers:
        said.warn(
            f"gitlab-runner-auth left {len(leftovers)} runner(s) of this host in GitLab; "
            "register-runner prune-legacy lists them, prune-legacy --yes deletes them"
        )
    rows = [
        ActionResult(
            Kind.LEFTOVER,
            str(runner.get("description")),
            runner["id"],
            "listed",
            f"left by gitlab-runner-auth on {url}; prune-legacy --yes deletes it",
        )
        for url, runner in leftovers
    ]
    return rows, said.said


# -- prune-legacy ----------------------------------------------------------------------


def prune(
    loaded: Loaded, gitlab: GitLab, *, delete: bool
) -> tuple[list[ActionResult], int, tuple[str, ...]]:
    """prune-legacy: the leftovers' rows (deleted with ``delete``), the exit status and the
    warnings."""
    unadopted = [
        entry
        for entry in loaded.config.entries
        if entry.get("token") and not isinstance(entry.get("id"), int)
    ]
    if unadopted:
        # One of them is the runner gitlab-runner runs with, and its id is not known yet.
        raise RefusedError(
            f"{loaded.output}: {len(unadopted)} runner(s) without an id, as "
            "gitlab-runner-auth wrote them; run register-runner (sync) first so that they "
            "are adopted, then prune-legacy"
        )
    said = Warnings()
    host = legacy_hostname()
    known = known_ids(loaded)
    leftovers, errors = find_leftovers(loaded, gitlab, known, host)
    rows = []
    for url, runner in leftovers:
        result = "planned"
        if delete:
            result = _prune(loaded, gitlab, url, runner["id"], host, known, errors, said)
        reason = f"left by gitlab-runner-auth on {url} ({runner.get('status')})"
        rows.append(
            ActionResult(Kind.DELETE, str(runner.get("description")), runner["id"], result, reason)
        )
    for error in errors:
        said.warn(str(error))
    if not delete and rows:
        said.warn(
            f"{len(rows)} runner(s) left by gitlab-runner-auth; "
            "register-runner prune-legacy --yes deletes them"
        )
    refused = any(not isinstance(e, TransientError) for e in errors)
    return rows, 1 if refused else 3 if errors else 0, said.said


def _prune(
    loaded: Loaded,
    gitlab: GitLab,
    url: str,
    runner_id: int,
    host: str,
    known: set[tuple[str, int]],
    errors: list[RegisterRunnerError],
    said: Warnings,
) -> str:
    """Delete one leftover after reading it again; what happened, for the report."""
    api = gitlab.api(url)
    try:
        details = api.get_runner(runner_id)
        problem = _not_provably_ours(details, url, runner_id, host, loaded, known)
        if problem:
            said.warn(f"runner {runner_id} on {url} is not deleted: {problem}")
            return "skipped"
        return "done" if api.delete_runner(runner_id) else "already gone"
    except RegisterRunnerError as error:
        errors.append(error)
        return "failed"


def _not_provably_ours(
    details: Any,
    url: str,
    runner_id: int,
    host: str,
    loaded: Loaded,
    known: set[tuple[str, int]],
) -> str:
    if not isinstance(details, Mapping):
        return "GitLab no longer has it"
    if not is_legacy_description(details.get("description"), host, loaded.identity.instance):
        return f"its description is now {details.get('description')!r}"
    if carries_marker(details.get("maintenance_note")):
        return "it carries a register-runner marker"
    if (url, runner_id) in known:
        return "this host uses it"
    if details.get("status") == "online" or details.get("online") is True:
        return (
            "it is online (in use by a gitlab-runner somewhere); stop that one, or try "
            "again when GitLab shows it offline"
        )
    return ""
