"""desired x observed → Plan. Pure: no I/O, no clock (``now`` is passed in)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from .errors import InputError
from .model import (
    Action,
    Evidence,
    Executor,
    Kind,
    Observed,
    Plan,
    RunnerState,
    Verdict,
    earlier_marker,
)

# The scopes that may read a runner by id: what settles the mass-invalid guard.
READ_SCOPES = "read_api or manage_runner"


def reconcile(
    desired: Sequence[Executor],
    observed: Observed,
    *,
    now: datetime,
    force: bool = False,
    prune: bool = True,
    max_deletions: int | None = None,
    bad: Mapping[str, str] | None = None,
) -> Plan:
    """What to do so that GitLab and the config match ``desired``. ``bad``: stems whose
    executor file is bad input (stem → reason): kept as they are, never deleted.

    Raises InputError when the plan would delete more runners than allowed: deleting
    many runners at once is more often a broken deploy than an intention.
    """
    bad = bad or {}
    wanted = {executor.stem: executor for executor in desired}
    actions = [
        _waiting(executor)
        if executor.stem in observed.unresolved and not force
        else _action_for(executor, observed.runners.get(executor.stem), now)
        for executor in sorted(desired, key=lambda e: e.stem)
    ]
    actions += [
        Action(Kind.KEEP, stem, reason, _id(observed.runners.get(stem)))
        for stem, reason in sorted(bad.items())
    ]
    if prune:
        actions += [
            Action(Kind.DELETE, stem, "executor file removed", state.id)
            for stem, state in sorted(observed.runners.items())
            if stem not in wanted and stem not in bad
        ]
        actions += [
            Action(Kind.DELETE, pending.stem, "deletion left over from an earlier run", pending.id)
            for pending in observed.pending_deletes
        ]

    warnings: tuple[str, ...] = ()
    if not force:
        _check_deletions(actions, observed, max_deletions)
        if mass_invalid(observed.runners.values()):
            held = _held(actions, observed)
            if held is not None:
                return _blocked(held, observed, wanted)
            actions, warnings = _released(actions, observed)
    return _blocked(Plan(tuple(actions), warnings), observed, wanted)


def _id(state: RunnerState | None) -> int | None:
    return state.id if state is not None else None


def _waiting(executor: Executor) -> Action:
    # Sending the create again could make a duplicate: it waits until the earlier one is
    # found (by its marker) or the operator says, with --force, that it is not there.
    return Action(Kind.WAIT, executor.stem, "an earlier create's outcome is not known yet")


def check_not_emptied(files: int, known: int, folder: str, force: bool) -> None:
    """An unmounted disk or a half-finished deploy must not wipe a host's runners. A bad
    file counts: its runner is held, not deleted."""
    if files or force or not known:
        return
    raise InputError(
        f"{folder}: no executor files, but {known} runner(s) exist; refusing to delete them "
        "all (pass --force if that is the intention, or use unregister)"
    )


def _action_for(executor: Executor, state: RunnerState | None, now: datetime) -> Action:
    if state is None:
        return Action(Kind.CREATE, executor.stem, "new executor")
    if state.url != executor.url or state.scope != executor.scope:
        return Action(
            Kind.RECREATE,
            executor.stem,
            f"moved from {state.url} ({state.scope.describe()}) to "
            f"{executor.url} ({executor.scope.describe()})",
            state.id,
        )
    if state.token is None:
        return Action(Kind.RECREATE, executor.stem, "token missing from the config", state.id)
    if state.verdict is Verdict.INVALID:
        return Action(Kind.RECREATE, executor.stem, "GitLab rejected the token (403)", state.id)
    changes = attribute_changes(executor.attributes, state.applied)
    if state.verdict is Verdict.VALID and rotation_due(state, now):
        # A rotation carries the attribute changes with it: one run does both.
        reason = "token past 75% of its lifetime" + (
            "; registration attributes changed" if changes else ""
        )
        return Action(Kind.ROTATE, executor.stem, reason, state.id, changes)
    if changes:
        return Action(
            Kind.UPDATE, executor.stem, "registration attributes changed", state.id, changes
        )
    return Action(Kind.KEEP, executor.stem, "", state.id)


def attribute_changes(
    wanted: Mapping[str, Any], applied: Mapping[str, Any]
) -> tuple[tuple[str, Any, Any], ...]:
    """Attributes whose wanted value differs from the one last applied. Only the attributes
    an executor file sets are managed; the others are GitLab's to keep."""
    return tuple(
        (key, applied.get(key), value)
        for key, value in sorted(wanted.items())
        if not _same(key, value, applied.get(key))
    )


def _same(key: str, wanted: Any, applied: Any) -> bool:
    if key == "maintenance_note" and isinstance(wanted, str) and applied == earlier_marker(wanted):
        # Marked before markers carried the prefix key: still this prefix's runner, and an
        # upgrade must not send a PUT to every runner of every host.
        return True
    return _normalised(applied) == _normalised(wanted)


def _normalised(value: Any) -> Any:
    # GitLab keeps a runner's tags as a set: neither order nor repeats are a change.
    return sorted(set(value)) if isinstance(value, (list, tuple)) else value


def rotation_due(state: RunnerState, now: datetime) -> bool:
    """gitlab-runner's own rule: rotate at obtained + 75% of the token's lifetime. Done here
    as well for a runner that was stopped, or that runs with rotation disabled."""
    if state.token_expires_at is None or state.token_obtained_at is None:
        return False
    lifetime = state.token_expires_at - state.token_obtained_at
    return now >= state.token_obtained_at + lifetime * 0.75


def _check_deletions(actions: list[Action], observed: Observed, max_deletions: int | None) -> None:
    # Deletions an earlier run already decided (pending) are not this run's to refuse.
    managed = len(observed.runners)
    deletions = sum(
        1
        for a in actions
        if a.kind is Kind.DELETE
        and a.stem in observed.runners
        and observed.runners[a.stem].id == a.runner_id
    )
    limit = max_deletions if max_deletions is not None else max(1, managed // 2)
    if deletions > limit:
        raise InputError(
            f"refusing to delete {deletions} of {managed} runners (limit {limit}); "
            "check the executor folder, or pass --max-deletions N or --force"
        )


def mass_invalid(states: Any) -> bool:
    """GitLab in maintenance, a Geo secondary or a WAF can answer 403 for every token:
    more than half of two or more checked tokens invalid is not believed without
    evidence (``Observed.evidence``)."""
    verdicts = [s.verdict for s in states if s.verdict in (Verdict.VALID, Verdict.INVALID)]
    invalid = verdicts.count(Verdict.INVALID)
    return len(verdicts) >= 2 and invalid * 2 > len(verdicts)


def _held(actions: list[Action], observed: Observed) -> Plan | None:
    """The plan that keeps everything, unless GitLab's answers proved every rejected
    token's runner gone or someone else's (None: then the 403s are real)."""
    rejected = sorted(s for s, r in observed.runners.items() if r.verdict is Verdict.INVALID)
    said = {stem: observed.evidence.get(stem, Evidence.UNKNOWN) for stem in rejected}
    listed = [stem for stem in rejected if said[stem] is Evidence.LISTED]
    unreadable = [stem for stem in rejected if said[stem] is Evidence.UNREADABLE]
    unknown = [stem for stem in rejected if said[stem] is Evidence.UNKNOWN]
    checked = sum(
        1 for s in observed.runners.values() if s.verdict in (Verdict.VALID, Verdict.INVALID)
    )
    rejection = f"GitLab rejected {len(rejected)} of {checked} runner tokens at once"
    kept_part = "nothing is created or deleted and the config is kept"
    refusals: tuple[str, ...] = ()
    if listed:
        warning = (
            f"held by the mass-invalid guard: GitLab still lists these runners "
            f"({', '.join(listed)}) with this host's marker: {rejection}, a GitLab-side "
            f"failure (maintenance mode, Geo secondary, WAF); {kept_part}. Use --force if "
            "their tokens really are gone"
        )
    elif unreadable:
        warning = ""
        # A rejected access token reads nothing: its own refusal says what to do.
        rejected_tokens = {url for url, t in observed.access_tokens.items() if t.rejected}
        if any(observed.runners[stem].url not in rejected_tokens for stem in unreadable):
            refusals = (
                f"held by the mass-invalid guard: {rejection} and the access token may not "
                f"read these runners ({', '.join(unreadable)}) to tell whether GitLab lost "
                f"them; {kept_part}. Give it the {READ_SCOPES} scope, or run sync --force "
                "if the runners really are gone",
            )
    elif unknown:
        warning = (
            f"held by the mass-invalid guard: {rejection} and GitLab did not answer about "
            f"these runners ({', '.join(unknown)}); {kept_part}; asked again on the next run"
        )
    else:
        return None
    kept = tuple(
        Action(Kind.KEEP, a.stem, "held by the mass-invalid guard", a.runner_id)
        for a in actions
        if a.runner_id is not None and a.kind is not Kind.DELETE
    )
    return Plan(kept, (warning,) if warning else (), held=True, refusals=refusals)


def _released(actions: list[Action], observed: Observed) -> tuple[list[Action], tuple[str, ...]]:
    """The 403s are real (GitLab lost the runners, or gave their ids to others): those
    runners are re-created, and their old ids, no longer this host's, are not deleted."""
    proven = {stem: observed.runners[stem].id for stem in observed.evidence}
    released = [
        Action(
            a.kind,
            a.stem,
            f"GitLab no longer has runner {proven[a.stem]}"
            if observed.evidence[a.stem] is Evidence.GONE
            else f"runner {proven[a.stem]} is another runner now",
        )
        if a.kind is Kind.RECREATE and a.stem in proven
        else a
        for a in actions
    ]
    warning = (
        f"GitLab rejected the tokens of {len(proven)} runner(s) ({', '.join(sorted(proven))}) "
        "and no longer has those runners (a GitLab restored from a backup?): they are "
        "created again"
    )
    return released, (warning,)


def _blocked(plan: Plan, observed: Observed, wanted: Mapping[str, Executor]) -> Plan:
    """Nothing that needs an access token GitLab rejected (401) is sent: each such
    action waits, and the run says so until the token is replaced."""
    rejected = frozenset(url for url, check in observed.access_tokens.items() if check.rejected)
    if not rejected:
        return plan

    def needs_rejected(action: Action) -> bool:
        urls = {wanted[action.stem].url} if action.stem in wanted else set()
        if action.stem in observed.runners:
            urls.add(observed.runners[action.stem].url)
        urls.update(p.url for p in observed.pending_deletes if p.stem == action.stem)
        return action.mutates and bool(urls & rejected)

    reason = "the access token was rejected (401)"
    actions = tuple(
        (
            Action(Kind.KEEP, a.stem, reason, a.runner_id)
            if a.runner_id is not None
            else Action(Kind.WAIT, a.stem, reason)
        )
        if needs_rejected(a)
        else a
        for a in plan.actions
    )
    refusals = tuple(
        f"{url}: the access token was rejected (401 on GET /personal_access_tokens/self): "
        "expired, revoked or mistyped; nothing that needs it is created, changed or "
        "deleted until it is replaced in the template"
        for url in sorted(rejected)
    )
    return replace(plan, actions=actions, refusals=plan.refusals + refusals, blocked=rejected)


def select(
    kind: Kind,
    command: str,
    known: Mapping[str, RunnerState],
    desired: Sequence[Executor],
    names: Sequence[str] | None,
    instance: str,
) -> Plan:
    """The plan of ``unregister`` (DELETE) or ``reset-token`` (ROTATE): that one action on
    the runners named, each one this host's (all of them when none is named)."""
    if names:
        missing = sorted(set(names) - set(known))
        if missing:
            raise InputError(
                f"no runner of this host for {', '.join(missing)} in instance {instance} "
                f"(known: {', '.join(sorted(known)) or 'none'})"
            )
    chosen = sorted(set(names) if names else known)
    if kind is Kind.ROTATE:
        wanted = {executor.stem for executor in desired}
        chosen = [stem for stem in chosen if stem in wanted]
        tokenless = [stem for stem in chosen if known[stem].token is None]
        if tokenless:
            raise InputError(f"no token in the config for {', '.join(tokenless)}; run sync")
    return Plan(tuple(Action(kind, stem, command, known[stem].id) for stem in chosen))
