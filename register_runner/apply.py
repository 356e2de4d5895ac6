"""Carrying out a Plan against GitLab and the filesystem, journaled so that a run killed at
any point is finished by the next one.

Order matters for crash safety:
1. the journal records every create before it is sent;
2. creates, updates and rotations run (concurrently);
3. the state (stem → runner id) is saved, then the config with the new tokens;
4. runners dropped from the config are deleted, each recorded as pending until GitLab
   confirms, so a deletion that could not happen is retried, never forgotten.
A create whose answer was lost is found on the next run by its marker (``recover``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from . import state as state_file
from .errors import RefusedError, RegisterRunnerError, TransientError
from .model import Action, Executor, Kind, Observed, PendingDelete, Plan, RunnerState
from .output import Credentials, content_of, now_utc, runner_entry, write_config
from .state import PendingCreate, StoredRunner
from .workspace import Workspace

if TYPE_CHECKING:
    from .gitlab import Issued

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What a run did, for the exit status and the report."""

    records: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # a person must act: exit 1
    failing: list[str] = field(default_factory=list)  # GitLab failing: exit 0 or 3
    wrote: bool = False
    entries: int = 0

    def refuse(self, message: str) -> None:
        self.refused.append(message)
        log.error("event=refused %s", message)

    def record(self, action: Action, result: str, **extra: Any) -> None:
        self.records.append(
            {
                "action": action.kind.value,
                "runner": action.stem,
                "id": action.runner_id,
                "reason": action.reason,
                "result": result,
                **extra,
            }
        )


def recover(workspace: Workspace) -> None:
    """Find runners whose create was sent by an interrupted run but whose token never
    reached disk, by their description and marker, and delete them. Needs read_api."""
    pending = workspace.state.pending_creates
    if not pending:
        return
    known = {r.id for r in workspace.state.runners.values()} | set(workspace.config.by_id())
    groups: dict[tuple[str, Any], list[PendingCreate]] = {}
    for entry in pending.values():
        groups.setdefault((entry.url, entry.scope), []).append(entry)
    for (url, scope), entries in sorted(groups.items(), key=lambda g: g[0][0]):
        if url not in workspace.inputs.clients:
            continue
        api = workspace.api(url)
        try:
            listed = api.list_runners(scope)
            for entry in entries:
                for runner in listed:
                    if runner.get("description") == entry.description and runner["id"] not in known:
                        _delete_orphan(workspace, api, runner["id"], entry)
        except TransientError as error:
            workspace.warn(f"could not look for runners left by an interrupted run: {error}")
            continue
        except RefusedError as error:
            names = ", ".join(repr(e.description) for e in entries)
            workspace.warn(
                f"{error}: cannot look for runners an interrupted run may have left "
                f"in GitLab; check by hand for runners described {names} (the "
                "access token needs read_api for this)"
            )
        for entry in entries:
            pending.pop(entry.stem, None)
    _save(workspace)


def _delete_orphan(workspace: Workspace, api: Any, runner_id: int, entry: PendingCreate) -> None:
    details = api.get_runner(runner_id)
    if details is None or entry.marker not in (details.get("maintenance_note") or ""):
        return
    api.delete_runner(runner_id)
    log.info(
        "event=orphan_deleted runner=%s id=%s: created by an interrupted run, its token "
        "was never saved",
        entry.stem,
        runner_id,
    )


def apply(workspace: Workspace, plan: Plan, observed: Observed) -> Outcome:
    outcome = Outcome()
    executors = {e.stem: e for e in workspace.executors}
    st = workspace.state
    creates = plan.of_kind(Kind.CREATE, Kind.RECREATE)
    for action in creates:
        executor = executors[action.stem]
        st.pending_creates[action.stem] = PendingCreate(
            action.stem,
            executor.url,
            executor.scope,
            executor.attributes["description"],
            workspace.identity.marker(action.stem),
        )
    if creates:
        _save(workspace)

    runners = {
        stem: StoredRunner(r.id, r.url, r.scope, dict(r.applied))
        for stem, r in observed.runners.items()
    }
    fresh: dict[str, Credentials] = {}
    work = plan.of_kind(Kind.CREATE, Kind.RECREATE, Kind.UPDATE, Kind.ROTATE)
    results = workspace.concurrently(
        lambda a: _attempt(workspace, a, executors[a.stem], observed.runners.get(a.stem)), work
    )
    for action, result in zip(work, results):
        _settle(
            workspace, action, result, executors[action.stem], observed, runners, fresh, outcome
        )

    for action in plan.of_kind(Kind.DELETE):
        runner = observed.runners.get(action.stem)
        if runner is not None and runner.id == action.runner_id:
            runners.pop(action.stem, None)
            _queue_delete(st, PendingDelete(runner.id, runner.url, action.stem, runner.token))
    st.runners = runners
    _save(workspace)

    # A fresh host that got no runner at all has nothing worth writing.
    if not plan.held and (runners or workspace.config.raw is not None or not workspace.executors):
        _write(workspace, observed, runners, fresh, outcome)
    else:
        outcome.entries = len(workspace.config.entries)
    _delete_pending(workspace, plan, outcome)
    for action in plan.of_kind(Kind.KEEP):
        outcome.record(action, "kept")
    return outcome


@dataclass
class _Result:
    """What one action's API calls gave: a new token, attributes applied, errors."""

    issued: Optional[Issued] = None
    updated: bool = False
    errors: list[RegisterRunnerError] = field(default_factory=list)


def _attempt(
    workspace: Workspace, action: Action, executor: Executor, runner: Optional[RunnerState]
) -> _Result:
    """One action's API calls. Errors are collected, not raised, so that the others go on;
    an update that fails does not keep a due rotation from happening."""
    api = workspace.api(executor.url)
    result = _Result()
    if action.kind in (Kind.CREATE, Kind.RECREATE):
        client = workspace.inputs.clients[executor.url]
        try:
            if client.access_token is not None:
                result.issued = api.create_runner(executor.scope, executor.attributes)
            else:
                result.issued = api.register_legacy(client.registration_token, executor.attributes)
        except RegisterRunnerError as error:
            result.errors.append(error)
        return result
    assert runner is not None
    if action.changes:
        try:
            api.update_runner(runner.id, {key: new for key, _, new in action.changes})
            result.updated = True
        except RegisterRunnerError as error:
            result.errors.append(error)
    if action.kind is Kind.ROTATE:
        try:
            try:
                result.issued = api.reset_token(runner.id)
            except RefusedError:
                # Without manage_runner the token can still reset itself.
                result.issued = api.reset_by_token(runner.token)
        except RegisterRunnerError as error:
            result.errors.append(error)
    return result


def _settle(
    workspace: Workspace,
    action: Action,
    result: _Result,
    executor: Executor,
    observed: Observed,
    runners: dict[str, StoredRunner],
    fresh: dict[str, Credentials],
    outcome: Outcome,
) -> None:
    st = workspace.state
    for error in result.errors:
        _failed(workspace, action, executor.url, error, outcome)
    issued = result.issued
    if action.kind in (Kind.CREATE, Kind.RECREATE):
        # A create whose answer may have been lost stays journaled for the next run.
        if issued is not None or not any(getattr(e, "ambiguous", False) for e in result.errors):
            st.pending_creates.pop(action.stem, None)
        if issued is None:
            return
        old = observed.runners.get(action.stem)
        if old is not None:
            _queue_delete(st, PendingDelete(old.id, old.url, action.stem, old.token))
        runners[action.stem] = StoredRunner(
            issued.id, executor.url, executor.scope, dict(executor.attributes)
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
        extra = {"token": issued.token.masked} if issued is not None else {}
        outcome.record(action, "done", **extra)


def _failed(
    workspace: Workspace, action: Action, url: str, error: Exception, outcome: Outcome
) -> None:
    message = f"{action.kind.value} {action.stem}: {error}"
    if isinstance(error, TransientError):
        outcome.failing.append(message)
        workspace.warn(f"{message}; will try again on the next run")
        outcome.record(action, "waiting", error=str(error))
    elif action.kind in (Kind.UPDATE, Kind.ROTATE) and getattr(error, "scope", None):
        # A token without manage_runner still registers and runs runners: say so, go on.
        workspace.warn(
            f"{url}: the access token lacks the {error.scope} scope: registration "
            "attributes are not updated and tokens not rotated by register-runner"
        )
        outcome.record(action, "skipped", error=str(error))
    else:
        outcome.refuse(message)
        outcome.record(action, "refused", error=str(error))


def _queue_delete(st: state_file.State, delete: PendingDelete) -> None:
    if all(d.id != delete.id or d.url != delete.url for d in st.pending_deletes):
        st.pending_deletes.append(delete)


def _write(
    workspace: Workspace,
    observed: Observed,
    runners: dict[str, StoredRunner],
    fresh: dict[str, Credentials],
    outcome: Outcome,
) -> None:
    def build(rotated: Mapping[int, Credentials]) -> list[dict[str, Any]]:
        entries = _entries(workspace, observed, runners, fresh, rotated)
        outcome.entries = len(entries)
        return entries

    outcome.wrote = write_config(workspace.config, workspace.inputs.globals, build)
    if outcome.wrote:
        log.info("event=write path=%s runners=%s", workspace.output, outcome.entries)


def config_unchanged(workspace: Workspace, observed: Observed) -> bool:
    """Whether a sync that changes nothing in GitLab would leave the config as it is."""
    runners = {
        stem: StoredRunner(r.id, r.url, r.scope, dict(r.applied))
        for stem, r in observed.runners.items()
    }
    entries = _entries(workspace, observed, runners, {}, {})
    return workspace.config.content == content_of(workspace.inputs.globals, entries)


def _entries(
    workspace: Workspace,
    observed: Observed,
    runners: Mapping[str, StoredRunner],
    fresh: Mapping[str, Credentials],
    rotated: Mapping[int, Credentials],
) -> list[dict[str, Any]]:
    """The [[runners]] entries, sorted by stem, of every executor that has a runner."""
    entries = []
    for executor in sorted(workspace.executors, key=lambda e: e.stem):
        stored = runners.get(executor.stem)
        credentials = fresh.get(executor.stem) or _current(observed, executor.stem, rotated)
        if stored is None or credentials is None:
            continue
        client = workspace.inputs.clients.get(stored.url)
        entries.append(
            runner_entry(
                executor.name,
                stored.url,
                stored.id,
                credentials,
                client.tls_ca_file if client else None,
                executor.settings,
                tls_cert_file=client.tls_cert_file if client else None,
                tls_key_file=client.tls_key_file if client else None,
            )
        )
    return entries


def _current(
    observed: Observed, stem: str, rotated: Mapping[int, Credentials]
) -> Optional[Credentials]:
    runner = observed.runners.get(stem)
    if runner is None or runner.token is None:
        return None
    return rotated.get(runner.id) or Credentials(
        runner.token, runner.token_obtained_at, runner.token_expires_at
    )


def _delete_pending(workspace: Workspace, plan: Plan, outcome: Outcome) -> None:
    st = workspace.state
    if plan.held or not st.pending_deletes:
        return
    queued = list(st.pending_deletes)
    results = workspace.concurrently(lambda d: _delete(workspace, d), queued)
    by_id = {a.runner_id: a for a in plan.of_kind(Kind.DELETE, Kind.RECREATE)}
    for delete, (finished, error) in zip(queued, results):
        # A recreate's old runner is reported under the recreate, as plan shows it.
        action = by_id.get(delete.id) or Action(Kind.DELETE, delete.stem, "left over", delete.id)
        if finished:
            st.pending_deletes.remove(delete)
            log.info("event=delete runner=%s id=%s", delete.stem, delete.id)
            outcome.record(action, "done" if action.kind is Kind.DELETE else "old runner deleted")
        elif isinstance(error, TransientError):
            outcome.failing.append(f"delete runner {delete.id}: {error}")
            workspace.warn(
                f"delete runner {delete.id} ({delete.stem}): {error}; will try "
                "again on the next run"
            )
        else:
            st.pending_deletes.remove(delete)
            outcome.refuse(
                f"delete runner {delete.id} ({delete.stem}): {error}; delete it in "
                "GitLab by hand (the access token needs manage_runner for this)"
            )
    _save(workspace)


def _delete(workspace: Workspace, delete: PendingDelete) -> tuple[bool, Optional[Exception]]:
    if delete.url not in workspace.inputs.clients:
        return False, RefusedError(f"no client_config for {delete.url} any more")
    api = workspace.api(delete.url)
    try:
        api.delete_runner(delete.id)
        return True, None
    except RefusedError as error:
        refusal: Exception = error
    except TransientError as error:
        return False, error
    if delete.token is None:
        return False, refusal
    # Without manage_runner a runner whose token still works can delete itself.
    try:
        return (True, None) if api.delete_by_token(delete.token) else (False, refusal)
    except TransientError as error:
        return False, error


def _save(workspace: Workspace) -> None:
    state_file.save(workspace.options.prefix, workspace.options.instance, workspace.state)
