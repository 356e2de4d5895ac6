"""Carrying out a Plan against GitLab and the filesystem, journaled so that a run killed at
any point is finished by the next one.

Order matters for crash safety:
1. the journal records every create and token reset before it is sent;
2. creates, updates and rotations run (concurrently);
3. the state (stem → runner id) is saved, then the config with the new tokens;
4. runners dropped from the config are deleted, each recorded as pending until GitLab
   confirms, so a deletion that could not happen is retried, never forgotten.
A mutating call whose answer was lost, unreadable or a 5xx may have happened and is not
sent again in the run: a create is found on the next run by its marker (``recover``), an
update is sent again, a deletion stays pending, and a reset is settled by the old token's
verdict (``_rotate``), else it stays journaled for the next run (``observe.settle_resets``).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Optional, cast

from . import custom_runners
from . import state as state_file
from .answers import lacks_scope
from .errors import RefusedError, RegisterRunnerError, TransientError, UnknownOutcome
from .model import (
    Action,
    Credentials,
    Executor,
    Kind,
    Loaded,
    Observed,
    Outcome,
    PendingCreate,
    PendingDelete,
    PendingReset,
    Plan,
    RunnerKey,
    RunnerState,
    State,
    StoredRunner,
    UnwrittenToken,
    Verdict,
)
from .observe import owned
from .output import kept_entries, observed_credentials, runner_entries, write_config
from .timeutil import now_utc
from .workspace import GitLab

if TYPE_CHECKING:
    from .gitlab import Issued

log = logging.getLogger(__name__)


def apply(loaded: Loaded, gitlab: GitLab, plan: Plan, observed: Observed) -> Outcome:
    """``plan`` carried out; the Outcome holds the state as saved (``loaded``'s is left as
    it was)."""
    outcome = Outcome(said_before=observed.warnings)
    st = loaded.state.copy()
    loaded = replace(loaded, state=st)  # the state this run changes and saves
    executors = loaded.executors_by_stem
    creates = plan.of_kind(Kind.CREATE, Kind.RECREATE)
    for action in creates:
        executor = executors[action.stem]
        st.pending_creates[action.stem] = PendingCreate(
            action.stem,
            executor.url,
            executor.scope,
            executor.attributes["description"],
            loaded.identity.marker(action.stem),
            dict(executor.attributes),
        )
    rotations = plan.of_kind(Kind.ROTATE)
    for action in rotations:
        rotated = observed.runners[action.stem]
        st.pending_resets[action.stem] = PendingReset(rotated.id, rotated.url)
    if creates or rotations:
        _save(loaded)

    runners = {
        stem: StoredRunner(r.id, r.url, r.scope, dict(r.applied))
        for stem, r in observed.runners.items()
    }
    fresh: dict[str, Credentials] = {}
    work = plan.of_kind(Kind.CREATE, Kind.RECREATE, Kind.UPDATE, Kind.ROTATE)
    results = gitlab.concurrently(
        lambda a: _attempt(loaded, gitlab, a, executors[a.stem], observed.runners.get(a.stem)),
        work,
    )
    for action, result in zip(work, results):
        _settle(loaded, action, result, executors[action.stem], observed, runners, fresh, outcome)

    for action in plan.of_kind(Kind.DELETE):
        runner = observed.runners.get(action.stem)
        if runner is not None and runner.id == action.runner_id:
            runners.pop(action.stem, None)
            st.pending_resets.pop(action.stem, None)
            _queue_delete(st, PendingDelete(runner.id, runner.url, action.stem, runner.token))
    st.runners = runners
    # Tokens reach the state before the config: a config write that fails loses none.
    for stem, credentials in fresh.items():
        stored = runners[stem]
        st.unwritten[stem] = UnwrittenToken(
            stored.id,
            stored.url,
            credentials.token,
            credentials.obtained_at,
            credentials.expires_at,
        )
    _save(loaded)

    # A fresh host that got no runner at all has nothing worth writing.
    nothing_wanted = not loaded.executors and not loaded.held_stems
    if not plan.held and (runners or loaded.config.raw is not None or nothing_wanted):
        _write(loaded, observed, runners, fresh, outcome)
    else:
        outcome.entries = len(loaded.config.entries)
    if plan.held:
        outcome.entries += custom_runners.in_place(loaded, observed)
    else:
        written, in_place, failed = custom_runners.write_files(loaded, observed, runners, fresh)
        outcome.records += written
        outcome.entries += in_place
        for message in failed.values():
            outcome.refuse(message)
        # A token not written yet (a held runner's, one whose file could not be written)
        # waits in the state for the run that writes it.
        written_stems = [s for s in st.unwritten if s not in loaded.held_stems and s not in failed]
        if written_stems:
            for stem in written_stems:
                del st.unwritten[stem]
            _save(loaded)
    _delete_pending(loaded, gitlab, plan, outcome)
    for action in plan.of_kind(Kind.KEEP, Kind.WAIT):
        outcome.record(action, "kept" if action.kind is Kind.KEEP else "waiting")
    outcome.state = st
    return outcome


@dataclass
class _Result:
    """What one action's API calls gave: a new token, attributes applied, errors."""

    issued: Optional[Issued] = None
    updated: bool = False
    reset_unknown: bool = False  # a reset that may have happened, its token not learned
    errors: list[RegisterRunnerError] = field(default_factory=list)


def _attempt(
    loaded: Loaded,
    gitlab: GitLab,
    action: Action,
    executor: Executor,
    runner: Optional[RunnerState],
) -> _Result:
    """One action's API calls. Errors are collected, not raised, so that the others go on
    and the tokens they obtained are saved; an update that fails does not keep a due
    rotation from happening."""
    result = _Result()
    try:
        _call(loaded, gitlab, action, executor, runner, result)
    except Exception as error:
        log.error(
            "event=internal_error runner=%s: %s: %s", action.stem, type(error).__name__, error
        )
        # Whatever it was, a create it interrupted may have happened: journal, don't resend.
        result.errors.append(UnknownOutcome(f"internal error {type(error).__name__}"))
    return result


def _call(
    loaded: Loaded,
    gitlab: GitLab,
    action: Action,
    executor: Executor,
    runner: Optional[RunnerState],
    result: _Result,
) -> None:
    api = gitlab.api(executor.url)
    if action.kind in (Kind.CREATE, Kind.RECREATE):
        client = loaded.inputs.clients[executor.url]
        try:
            if client.access_token is not None:
                result.issued = api.create_runner(executor.scope, executor.attributes)
            else:
                result.issued = api.register_legacy(client.registration_token, executor.attributes)
        except RegisterRunnerError as error:
            result.errors.append(error)
        return
    assert runner is not None
    if action.changes:
        try:
            api.update_runner(runner.id, {key: new for key, _, new in action.changes})
            result.updated = True
        except RegisterRunnerError as error:
            result.errors.append(error)
    if action.kind is Kind.ROTATE:
        try:
            result.issued = _rotate(api, runner, loaded.identity.system_id)
        except RegisterRunnerError as error:
            result.reset_unknown = _unknown_outcome(error)
            result.errors.append(error)


def _rotate(api: Any, runner: RunnerState, system_id: str) -> Issued:
    """A new token for ``runner``. A reset whose answer was lost (or a 5xx) may have
    happened: the token it issued is then unknown and the old one dead. The old token's
    verdict tells which, so the reset is sent again only when GitLab proved the first one
    acted, never blindly; otherwise the old token is kept and the error stands."""
    by_id = True
    try:
        try:
            return api.reset_token(runner.id)
        except RefusedError:
            # Without manage_runner the token can still reset itself.
            by_id = False
            return api.reset_by_token(runner.token)
    except TransientError as error:
        if not error.ambiguous or not by_id:
            raise
        verdict, _ = api.verify(runner.token, system_id)
        if verdict is not Verdict.INVALID:
            raise
        log.info(
            "event=reset_settled runner=%s id=%s: the reset whose answer was lost happened "
            "(the old token is rejected); reset again to learn the new token",
            runner.stem,
            runner.id,
        )
        return api.reset_token(runner.id)


def _settle(
    loaded: Loaded,
    action: Action,
    result: _Result,
    executor: Executor,
    observed: Observed,
    runners: dict[str, StoredRunner],
    fresh: dict[str, Credentials],
    outcome: Outcome,
) -> None:
    st = loaded.state
    issued = result.issued
    creates = action.kind in (Kind.CREATE, Kind.RECREATE)
    if creates and issued is not None and not _is_id(issued.id):
        # Never written into the state: an answer that cannot be read is an unknown outcome.
        result.errors.append(UnknownOutcome(f"{executor.url}: GitLab's answer had no runner id"))
        issued = None
    for error in result.errors:
        # The reset's error, when there is one, is the last (an update goes first).
        journaled = result.reset_unknown and error is result.errors[-1]
        _failed(action, executor.url, error, outcome, journaled=journaled)
    if action.kind is Kind.ROTATE and not result.reset_unknown:
        st.pending_resets.pop(action.stem, None)
    if creates:
        # A create whose outcome is unknown stays journaled: the next run that can list
        # runners finds it by its marker; it is never sent again blindly.
        if issued is not None or not any(_unknown_outcome(e) for e in result.errors):
            st.pending_creates.pop(action.stem, None)
        if issued is None:
            return
        old = observed.runners.get(action.stem)
        # No runner id: the old runner is not this host's any more (the guard's evidence).
        if old is not None and action.runner_id == old.id:
            _queue_delete(st, PendingDelete(old.id, old.url, action.stem, old.token))
        runners[action.stem] = StoredRunner(
            cast(int, issued.id),  # _is_id above
            executor.url,
            executor.scope,
            dict(executor.attributes),
        )
        fresh[action.stem] = Credentials(issued.token, now_utc(), issued.expires_at)
        log.info(
            "event=%s runner=%s id=%s token=%s reason=%r",
            action.kind.value,
            action.stem,
            issued.id,
            issued.token.masked,
            action.reason,
        )
        outcome.record(action, "done", new_id=issued.id, token=issued.token.masked)
        return
    if result.updated:
        runners[action.stem] = StoredRunner(
            runners[action.stem].id, executor.url, executor.scope, dict(executor.attributes)
        )
        log.info(
            "event=update runner=%s id=%s changed=%s",
            action.stem,
            action.runner_id,
            ",".join(key for key, _, _ in action.changes),
        )
    if issued is not None:
        fresh[action.stem] = Credentials(issued.token, now_utc(), issued.expires_at)
        log.info(
            "event=rotate runner=%s id=%s token=%s",
            action.stem,
            action.runner_id,
            issued.token.masked,
        )
    if not result.errors:
        extra: dict[str, Any] = {"token": issued.token.masked} if issued is not None else {}
        outcome.record(action, "done", **extra)


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _unknown_outcome(error: Exception) -> bool:
    return isinstance(error, TransientError) and error.ambiguous


def _failed(
    action: Action, url: str, error: Exception, outcome: Outcome, *, journaled: bool = False
) -> None:
    message = f"{action.kind.value} {action.stem}: {error}"
    if isinstance(error, TransientError):
        outcome.failing.append(message)
        if action.kind in (Kind.CREATE, Kind.RECREATE) and _unknown_outcome(error):
            then = "not sent again: the next run looks for the runner by its marker first"
        elif journaled:
            then = (
                "journaled: the next run asks GitLab about the old token first and resets "
                "again only if this reset happened"
            )
        else:
            then = "will try again on the next run"
        outcome.warn(f"{message}; {then}")
        outcome.record(action, "waiting", error=str(error))
    elif (
        action.kind in (Kind.UPDATE, Kind.ROTATE)
        and isinstance(error, RefusedError)
        and error.scope
    ):
        # A token without manage_runner still registers and runs runners: say so, go on.
        outcome.warn(lacks_scope(url, error.scope))
        outcome.record(action, "skipped", error=str(error))
    else:
        outcome.refuse(message)
        outcome.record(action, "refused", error=str(error))


def _queue_delete(st: State, delete: PendingDelete) -> None:
    if all(d.id != delete.id or d.url != delete.url for d in st.pending_deletes):
        st.pending_deletes.append(delete)


def _write(
    loaded: Loaded,
    observed: Observed,
    runners: dict[str, StoredRunner],
    fresh: dict[str, Credentials],
    outcome: Outcome,
) -> None:
    def build(rotated: Mapping[RunnerKey, Credentials]) -> list[dict[str, Any]]:
        entries = runner_entries(
            loaded.executors,
            loaded.inputs.clients,
            runners,
            lambda stem: fresh.get(stem) or observed_credentials(observed, stem, rotated),
            kept_entries(loaded.config, observed, loaded.held_stems, rotated),
        )
        outcome.entries = len(entries)
        return entries

    outcome.wrote = write_config(loaded.config, loaded.inputs.globals, build, loaded.parsed)
    if outcome.wrote:
        log.info("event=write path=%s runners=%s", loaded.output, outcome.entries)


def _delete_pending(loaded: Loaded, gitlab: GitLab, plan: Plan, outcome: Outcome) -> None:
    st = loaded.state
    queued = [d for d in st.pending_deletes if d.url not in plan.blocked]
    if plan.held or not queued:
        return
    results = gitlab.concurrently(lambda d: _delete(loaded, gitlab, d), queued)
    by_runner = {(a.stem, a.runner_id): a for a in plan.of_kind(Kind.DELETE, Kind.RECREATE)}
    for delete, (result, error) in zip(queued, results):
        # A recreate's old runner is reported under the recreate, as plan shows it.
        action = by_runner.get((delete.stem, delete.id)) or Action(
            Kind.DELETE, delete.stem, "left over", delete.id
        )
        where = f"runner {delete.id} of {delete.url} ({delete.stem})"
        if result is Deleted.TRANSIENT:
            outcome.failing.append(f"delete {where}: {error}")
            outcome.warn(f"delete {where}: {error}; will try again on the next run")
            continue
        st.pending_deletes.remove(delete)
        if result is Deleted.DONE:
            log.info("event=delete runner=%s id=%s url=%s", delete.stem, delete.id, delete.url)
            outcome.record(action, "done" if action.kind is Kind.DELETE else "old runner deleted")
        elif result is Deleted.GONE:
            log.info("event=already_gone runner=%s id=%s", delete.stem, delete.id)
            outcome.record(action, "already gone")
        elif result is Deleted.UNPROVEN:
            outcome.warn(
                f"{where}: not deleted, its id is forgotten: {error} (another host may have "
                "this id now, after a GitLab restore; delete it by hand if it is this host's)"
            )
            outcome.record(action, "forgotten", error=str(error))
        else:
            outcome.refuse(f"delete {where}: {error}; delete it in GitLab by hand")
            outcome.record(action, "refused", error=str(error))
    _save(loaded)


class Deleted(enum.Enum):
    DONE = "done"
    GONE = "gone"  # GitLab no longer has it
    UNPROVEN = "unproven"  # nothing proves it is still this host's: left alone
    TRANSIENT = "transient"  # try again on the next run
    REFUSED = "refused"  # a person must act


def _delete(
    loaded: Loaded, gitlab: GitLab, delete: PendingDelete
) -> tuple[Deleted, Optional[Exception]]:
    """Delete a runner only with proof that it is still this host's: by the token this
    host holds (possession is proof), else by id once GitLab shows this host's marker on
    it. Ids are not proof: after a restore GitLab hands them to other hosts' runners."""
    if delete.url not in loaded.inputs.clients:
        return Deleted.REFUSED, RefusedError(f"no client_config for {delete.url} any more")
    api = gitlab.api(delete.url)
    try:
        if delete.token is not None and api.delete_by_token(delete.token):
            return Deleted.DONE, None
        details = api.get_runner(delete.id)
        if details is None:
            return Deleted.GONE, None
        marker = loaded.identity.marker(delete.stem)
        if not owned(details, marker):
            return Deleted.UNPROVEN, RefusedError("GitLab shows no marker of this host on it")
        return (Deleted.DONE if api.delete_runner(delete.id) else Deleted.GONE), None
    except TransientError as error:
        return Deleted.TRANSIENT, error
    except RefusedError as error:
        if error.scope:
            return Deleted.UNPROVEN, RefusedError(
                f"cannot read it to prove it is this host's ({error})"
            )
        return Deleted.REFUSED, error


def _save(loaded: Loaded) -> None:
    state_file.save(loaded.options.prefix, loaded.options.instance, loaded.state)
