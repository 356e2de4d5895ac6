"""Observe: what this host's runners are, from the state, the config read back and GitLab.

Every runner is known by (GitLab url, id): ids alone collide across GitLabs and after a
restore. Reading only (verify and GET); the one exception, ``recover``, resolves creates
whose outcome an earlier run could not learn, by the marker this host put on them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Optional

from . import custom_runners, health, migrate, state
from .answers import AccessDenied, lacks_scope
from .errors import RefusedError, RegisterRunnerError, TransientError
from .model import (
    REGISTRATION_ATTRIBUTES,
    AccessTokenCheck,
    Credentials,
    Evidence,
    Loaded,
    Observed,
    PendingCreate,
    PendingDelete,
    RunnerKey,
    RunnerState,
    State,
    StoredRunner,
    UnwrittenToken,
    Verdict,
    Warnings,
    earlier_marker,
)
from .output import credentials_of
from .reconcile import mass_invalid
from .timeutil import now_utc
from .workspace import GitLab

if TYPE_CHECKING:
    from .gitlab import Issued

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Known:
    """This host's runners by stem, and the state with the deletions their adoption
    queued (a runner that an adopted gitlab-runner-auth one replaces)."""

    runners: dict[str, RunnerState]
    state: State
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recovered:
    """The state once the creates an earlier run could not learn about are resolved."""

    state: State
    warnings: tuple[str, ...] = ()


def known_runners(loaded: Loaded, gitlab: GitLab) -> Known:
    """This host's runners by stem, from the state and the tokens in the output config.

    A config entry the state does not know is adopted when its name is the one an executor
    would get (a state lost); any other entry is not this tool's and is dropped from the
    output, never deleted in GitLab.
    """
    said = Warnings()
    entries = {} if loaded.foreign else loaded.config.by_key()
    runners: dict[str, RunnerState] = {}
    for stem, stored in loaded.state.runners.items():
        entry = entries.pop((stored.url, stored.id), None)
        unwritten = loaded.state.unwritten.get(stem)
        if unwritten is not None and (unwritten.url, unwritten.id) == (stored.url, stored.id):
            # Issued after the config was last written: newer than what the config holds.
            credentials: Optional[Credentials] = Credentials(
                unwritten.token, unwritten.obtained_at, unwritten.expires_at
            )
        else:
            # A runner that is not gitlab-runner: its token is in its credentials file.
            credentials = custom_runners.read_back(loaded, stem, stored.url, stored.id)
            if credentials is None and entry:
                credentials = credentials_of(entry)
        runners[stem] = _runner(stem, stored, credentials)
    for executor in loaded.executors:
        found = None if executor.stem in runners else custom_runners.adopt(loaded, executor)
        if found is not None:
            log.info(
                "event=adopt runner=%s id=%s: credentials file without state, adopted",
                executor.stem,
                found[0],
            )
            stored = StoredRunner(found[0], executor.url, executor.scope, {})
            runners[executor.stem] = _runner(executor.stem, stored, found[1])
    adopted, replaced, warnings = migrate.adopt_legacy(loaded, gitlab, runners)
    for warning in warnings:
        said.warn(warning)
    for runner in adopted.values():
        entries.pop((runner.url, runner.id), None)
    runners.update(adopted)
    by_name = {e.name: e for e in loaded.executors if e.stem not in runners}
    for (url, runner_id), entry in sorted(entries.items()):
        named = by_name.get(entry.get("name", ""))
        credentials = credentials_of(entry)
        if named and credentials and url == named.url:
            log.info(
                "event=adopt runner=%s id=%s: config entry without state, adopted by name",
                named.stem,
                runner_id,
            )
            stored = StoredRunner(runner_id, url, named.scope, {})
            runners[named.stem] = _runner(named.stem, stored, credentials)
            del by_name[named.name]
        else:
            said.warn(
                f"{loaded.output}: entry {entry.get('name')!r} (runner "
                f"{runner_id} of {url}) was not made by register-runner for this host; it "
                "is dropped from the config and left alone in GitLab"
            )
    known_state = loaded.state
    if replaced:
        known_state = known_state.copy()
        known_state.pending_deletes += replaced
    return Known(runners, known_state, said.said)


def settle_resets(loaded: Loaded, gitlab: GitLab, runners: Mapping[str, RunnerState]) -> Known:
    """Settle the token resets an earlier run sent without learning their outcome (the
    answer lost, unreadable or a 5xx): GitLab may have issued a token this host never saw
    and rejected the one it holds. The held token's verdict tells: accepted, the reset did
    not happen; rejected while GitLab still lists the runner with this host's marker, it
    did, and the runner is reset again by id to learn its token (the runner is kept: no
    new one, no twin, and the mass-invalid guard is not misled by the 403s it explains).
    A runner GitLab lost or gave to another goes the way of any rejected token. No
    answer: it stays journaled, the runner kept as it is."""
    pending = loaded.state.pending_resets
    if not pending:
        return Known(dict(runners), loaded.state)
    said = Warnings()
    st = loaded.state.copy()
    settled = dict(runners)
    asked = []
    for stem, reset in sorted(pending.items()):
        runner = runners.get(stem)
        if runner is None or (runner.url, runner.id) != (reset.url, reset.id):
            del st.pending_resets[stem]  # that runner is not this stem's any more
        elif runner.token is not None:
            asked.append(runner)
    answers = gitlab.concurrently(lambda r: _settle_reset(loaded, gitlab, r), asked)
    for runner, (now, issued, known) in zip(asked, answers):
        settled[runner.stem] = now
        if issued is not None:
            st.unwritten[runner.stem] = UnwrittenToken(
                runner.id, runner.url, issued.token, now.token_obtained_at, issued.expires_at
            )
        if known:
            del st.pending_resets[runner.stem]
        else:
            said.warn(
                f"runner {runner.stem} (id {runner.id}): whether an earlier token reset "
                f"happened is not known yet ({gitlab.api(runner.url).last_failure}); the "
                "runner is kept as it is and asked about again on the next run"
            )
    state.save(loaded.options.prefix, loaded.options.instance, st)
    return Known(settled, st, said.said)


def _settle_reset(
    loaded: Loaded, gitlab: GitLab, runner: RunnerState
) -> tuple[RunnerState, Optional[Issued], bool]:
    """The runner as the reset left it, the token learned by resetting it again, and
    whether the reset's outcome is known now."""
    api = gitlab.api(runner.url)
    assert runner.token is not None
    verdict, _ = api.verify(runner.token, loaded.identity.system_id)
    if verdict is not Verdict.INVALID:
        # Accepted: it did not happen; no answer: not known yet.
        return replace(runner, verdict=verdict), None, verdict is Verdict.VALID
    rejected = replace(runner, verdict=verdict)
    try:
        if not owned(api.get_runner(runner.id), loaded.identity.marker(runner.stem)):
            return rejected, None, True  # gone, or not this host's: no reset of another's
        issued = api.reset_token(runner.id)
    except TransientError:
        return replace(runner, verdict=Verdict.UNKNOWN), None, False
    except RegisterRunnerError as error:
        log.info("event=reset_unsettled runner=%s id=%s: %s", runner.stem, runner.id, error)
        return rejected, None, True
    log.info(
        "event=reset_settled runner=%s id=%s token=%s: an earlier reset whose answer was "
        "lost happened (the old token is rejected, GitLab lists the runner with this "
        "host's marker); reset again to learn the new token",
        runner.stem,
        runner.id,
        issued.token.masked,
    )
    fresh = replace(
        runner,
        token=issued.token,
        token_obtained_at=now_utc(),
        token_expires_at=issued.expires_at,
        verdict=Verdict.VALID,
    )
    return fresh, issued, True


def _runner(stem: str, stored: StoredRunner, credentials: Optional[Credentials]) -> RunnerState:
    return RunnerState(
        stem,
        stored.id,
        stored.url,
        stored.scope,
        stored.applied,
        credentials.token if credentials else None,
        credentials.obtained_at if credentials else None,
        credentials.expires_at if credentials else None,
    )


def observe(
    loaded: Loaded,
    gitlab: GitLab,
    runners: Mapping[str, RunnerState],
    *,
    refresh: bool = False,
) -> Observed:
    """Verify every token not yet checked with the host's system ID, and ask GitLab about
    each access token, concurrently. When the mass-invalid guard would hold (and no
    ``--force``), read the runners whose tokens were rejected: the evidence that settles
    it. ``refresh``: also read each runner's attributes from GitLab, so that a change made
    there by hand is seen as drift (otherwise drift is judged against what this tool last
    applied)."""
    said = Warnings()
    urls = {e.stem: e.url for e in loaded.executors}
    to_check = [
        r
        for r in runners.values()
        if r.token is not None
        and r.verdict is Verdict.UNCHECKED
        and r.stem in urls
        and r.url == urls[r.stem]
    ]

    def check(runner: RunnerState) -> RunnerState:
        verdict, _ = gitlab.api(runner.url).verify(runner.token, loaded.identity.system_id)
        if refresh and verdict is Verdict.VALID:
            return replace(runner, verdict=verdict, applied=_in_gitlab(gitlab, runner, said))
        return replace(runner, verdict=verdict)

    # Every access token is asked about alongside the verifications, on the same pool: a
    # rejected one is found on every run, at the cost of no extra round trip.
    tokens = sorted(u for u, c in loaded.inputs.clients.items() if c.access_token is not None)

    def ask(item: Any) -> Any:
        return check(item) if isinstance(item, RunnerState) else _access_token(gitlab, item)

    answers = gitlab.concurrently(ask, [*to_check, *tokens])
    checked = {r.stem: r for r in answers[: len(to_check)]}
    observed = Observed(
        pending_deletes=list(loaded.state.pending_deletes),
        unresolved=frozenset(loaded.state.pending_creates),
        access_tokens=dict(zip(tokens, answers[len(to_check) :])),
    )
    for stem, runner in runners.items():
        observed.runners[stem] = checked.get(stem, runner)
    for url, token in observed.access_tokens.items():
        notice = health.expiry_notice(url, token.expires_at)
        if notice:
            said.warn(notice)
    if not loaded.options.force and mass_invalid(observed.runners.values()):
        observed.evidence = _guard_evidence(loaded, gitlab, observed)
    unknown = sorted(stem for stem, r in checked.items() if r.verdict is Verdict.UNKNOWN)
    if unknown:
        reasons = sorted({gitlab.api(checked[stem].url).last_failure for stem in unknown})
        said.warn(
            f"could not verify {len(unknown)} token(s) ({', '.join(unknown)}): "
            f"GitLab unreachable or failing ({'; '.join(filter(None, reasons))}); they are "
            "kept as they are"
        )
    observed.warnings = said.said
    return observed


def _access_token(gitlab: GitLab, url: str) -> AccessTokenCheck:
    try:
        return AccessTokenCheck(True, gitlab.api(url).access_token_expires_at())
    except AccessDenied:  # only a 401 is raised: every other refusal is "will not say"
        return AccessTokenCheck(False, rejected=True)
    except RegisterRunnerError as error:
        log.debug("event=access_token_expiry_unknown url=%s reason=%s", url, error)
        return AccessTokenCheck(False)


def _guard_evidence(loaded: Loaded, gitlab: GitLab, observed: Observed) -> dict[str, Evidence]:
    """What GitLab says of each runner whose token it rejected; not asked with an access
    token GitLab has just rejected too (that answer is known)."""
    refused = {url for url, token in observed.access_tokens.items() if token.rejected}
    rejected = [r for r in observed.runners.values() if r.verdict is Verdict.INVALID]
    asked = [r for r in rejected if r.url not in refused]
    answers = gitlab.concurrently(lambda r: _evidence(loaded, gitlab, r), asked)
    said = {r.stem: answer for r, answer in zip(asked, answers)}
    return {r.stem: said.get(r.stem, Evidence.UNREADABLE) for r in rejected}


def _evidence(loaded: Loaded, gitlab: GitLab, runner: RunnerState) -> Evidence:
    """Whether GitLab still has the runner whose token it rejected, as this host's."""
    try:
        details = gitlab.api(runner.url).get_runner(runner.id)
    except TransientError as error:
        log.info("event=guard_unanswered runner=%s id=%s: %s", runner.stem, runner.id, error)
        return Evidence.UNKNOWN
    except RegisterRunnerError as error:
        log.info("event=guard_unreadable runner=%s id=%s: %s", runner.stem, runner.id, error)
        return Evidence.UNREADABLE
    if details is None:
        return Evidence.GONE
    if owned(details, loaded.identity.marker(runner.stem)):
        return Evidence.LISTED
    return Evidence.REPLACED


def _in_gitlab(gitlab: GitLab, runner: RunnerState, said: Warnings) -> Mapping[str, Any]:
    """The registration attributes GitLab holds for ``runner``; what was last applied if
    GitLab would not say."""
    try:
        details = gitlab.api(runner.url).get_runner(runner.id)
    except RefusedError as error:
        if error.scope:
            said.warn(lacks_scope(runner.url, error.scope))  # the same for every runner
        else:
            said.warn(f"--refresh: cannot read runner attributes from GitLab: {error}")
        return runner.applied
    except RegisterRunnerError as error:
        said.warn(f"--refresh: cannot read runner attributes from GitLab: {error}")
        return runner.applied
    if details is None:
        return runner.applied
    return {key: details.get(key) for key in REGISTRATION_ATTRIBUTES if key in details}


def owned(details: Optional[Mapping[str, Any]], marker: str, *, earlier: bool = True) -> bool:
    """Whether GitLab's details of a runner carry this host's marker for that executor:
    the proof of ownership a delete by id needs.

    ``earlier``: the marker without the prefix key, as releases before it wrote it, counts
    too: the runners an existing host already has carry it. Only for a runner this prefix
    knows by its id (state, config, journal); a runner found by listing must carry the
    key, or it may be another prefix's of the same instance name."""
    if details is None:
        return False
    note = str(details.get("maintenance_note") or "")
    return marker in note or (earlier and earlier_marker(marker) in note)


def recover(loaded: Loaded, gitlab: GitLab) -> Recovered:
    """Resolve creates whose outcome is unknown (the answer was lost, unreadable or a 5xx,
    or the run was killed): list the runners of their scope, find the ones carrying this
    host's marker for that executor, adopt one (its token is reset by id, so it is ours to
    use) and delete the others. Needs read_api to list and manage_runner to adopt.

    What cannot be resolved stays journaled: the create is never sent again blindly
    (``--force`` sends it again, once the operator has checked GitLab by hand). An adopted
    runner's token goes into the state first, like every token this tool obtains.
    """
    if not loaded.state.pending_creates:
        return Recovered(loaded.state)
    said = Warnings()
    st = loaded.state.copy()
    pending = st.pending_creates
    known: set[RunnerKey] = {(r.url, r.id) for r in st.runners.values()}
    known |= set(loaded.config.by_key())
    groups: dict[tuple[str, Any], list[PendingCreate]] = {}
    for entry in pending.values():
        groups.setdefault((entry.url, entry.scope), []).append(entry)
    for (url, scope), entries in sorted(groups.items(), key=lambda g: (g[0][0], str(g[0][1]))):
        if url not in loaded.inputs.clients:
            continue
        if loaded.inputs.clients[url].access_token is None:
            _unresolved(said, entries, RefusedError(f"{url}: no access token to list runners"))
            continue
        api = gitlab.api(url)
        try:
            listed = api.list_runners(scope)
        except RegisterRunnerError as error:
            _unresolved(said, entries, error)
            continue
        for entry in entries:
            candidates = sorted(
                r["id"]
                for r in listed
                if isinstance(r.get("id"), int)
                and r.get("description") == entry.description
                and (url, r["id"]) not in known
            )
            try:
                _resolve(loaded, st, api, entry, candidates)
            except RegisterRunnerError as error:
                _unresolved(said, [entry], error)
                continue
            del pending[entry.stem]
        state.save(loaded.options.prefix, loaded.options.instance, st)
    return Recovered(st, said.said)


def _resolve(
    loaded: Loaded, st: State, api: Any, entry: PendingCreate, candidates: list[int]
) -> None:
    """Adopt the first of ``candidates`` that carries the marker, delete the others that
    do; the ones that do not are someone else's and are left alone."""
    # Not known by id: only the marker this create sent proves it (no earlier form).
    ours = [i for i in candidates if owned(api.get_runner(i), entry.marker, earlier=False)]
    if not ours:
        return
    adopted, *extra = ours
    issued = api.reset_token(adopted)
    previous = st.runners.get(entry.stem)
    if previous is not None:
        # The old runner of a recreate: deleted like any other, with proof of ownership.
        old = loaded.config.by_key().get((previous.url, previous.id))
        credentials = credentials_of(old) if old else None
        st.pending_deletes.append(
            PendingDelete(
                previous.id, previous.url, entry.stem, credentials.token if credentials else None
            )
        )
    st.runners[entry.stem] = StoredRunner(adopted, entry.url, entry.scope, dict(entry.attributes))
    st.unwritten[entry.stem] = UnwrittenToken(
        adopted, entry.url, issued.token, now_utc(), issued.expires_at
    )
    log.info(
        "event=recovered runner=%s id=%s: a create whose outcome was not known, adopted by "
        "its marker (token reset)",
        entry.stem,
        adopted,
    )
    for runner_id in extra:
        api.delete_runner(runner_id)
        log.info(
            "event=orphan_deleted runner=%s id=%s: another runner with this host's marker, "
            "left by an earlier run",
            entry.stem,
            runner_id,
        )


def _unresolved(said: Warnings, entries: list[PendingCreate], error: Exception) -> None:
    names = ", ".join(repr(e.description) for e in entries)
    if isinstance(error, TransientError):
        said.warn(f"could not look for runners an earlier create may have made: {error}")
        return
    said.warn(
        f"{error}: an earlier create of runner(s) described {names} may have happened; "
        "they are not created again until it is known (the access token needs read_api "
        "and manage_runner to find and adopt them), or until you have checked GitLab by "
        "hand, deleted any such runner and run sync --force"
    )
