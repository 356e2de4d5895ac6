"""The Python API: what the CLI does, without a subprocess. The commands only print it.

    import register_runner
    result = register_runner.plan(prefix="/etc/gitlab-runner")
    if result.changed: ...

Each run goes through the same phases, values in and values out:

    load(options)               -> Workspace (inputs, state, config read back; no network)
    recover + known_runners + observe -> Observed (verify/GET, concurrent)
    reconcile(desired, observed) -> Plan    (pure)
    apply(plan, ...)            -> Outcome  (API calls, journaled; writes state and config)
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional, Union

from . import custom_runners, health, migrate, report, stale
from .answers import RateLimits
from .apply import Outcome, apply
from .errors import InputError
from .files import exclusive_lock
from .model import CONFIG_ROW, ActionResult, Kind, Observed, Plan
from .observe import known_runners, observe, recover
from .output import content_of, entries_as_observed, kept_entries, render
from .reconcile import check_not_emptied, reconcile, select
from .timeutil import now_utc
from .workspace import Options, Workspace, check_prefix, load, lock_path

log = logging.getLogger(__name__)
DEFAULT_PREFIX = "/etc/gitlab-runner"
CHANGES_PENDING = 4
TOKEN_CHANGES = (Kind.CREATE, Kind.RECREATE, Kind.ROTATE)


@dataclass(frozen=True)
class Result:
    """What a sync, plan, unregister or reset-token did (or, for plan, would do)."""

    command: str
    exit_status: int  # what the CLI exits with
    changed: bool  # sync: GitLab or the config was changed; plan: changes are pending
    actions: tuple[ActionResult, ...]
    warnings: tuple[str, ...]
    config: Path
    config_written: bool = False
    system_id: str = ""
    seconds: float = 0.0
    config_diff: str = ""  # plan: how the config would change (tokens masked)
    # sync: every runner can take jobs (what ``status`` exits 0 for, and the metrics say)
    healthy: bool = False
    # Bad executor files (exit_status 2), one line each; their runners were held as they
    # were while the others converged.
    errors: tuple[str, ...] = ()
    rate_limits: RateLimits = field(default_factory=RateLimits)  # 429s met, seconds waited


def sync(
    prefix: Union[str, Path] = DEFAULT_PREFIX,
    instance: str = "main",
    *,
    lock_timeout: float = 60.0,
    environ: Optional[Mapping[str, str]] = None,
    **options: Any,
) -> Result:
    """Converge GitLab and ``config.<instance>.toml`` with the inputs. Bad host-wide input
    (the prefix, the template, the state...) raises InputError (nothing changed); a bad
    executor file does not: its runner is held as it is, the others converge, and the
    Result has exit_status 2 and the ``errors``. A busy lock raises TransientError."""
    started = time.monotonic()
    opts = Options(prefix=Path(prefix), instance=instance, **options)
    check_prefix(opts)
    environ = os.environ if environ is None else environ
    with (
        exclusive_lock(lock_path(opts), lock_timeout),
        load(opts, environ, isolate=True) as workspace,
    ):
        _report_bad(workspace)
        recover(workspace)
        observed, plan_ = _plan(workspace)
        outcome = apply(workspace, plan_, observed)
        for refusal in plan_.refusals:
            outcome.refuse(refusal)
        workspace.keep_parsed()  # with the config this run wrote
        status = _sync_status(workspace, plan_, observed, outcome)
        run = _record(workspace, plan_, observed, outcome, status)
    config_row = _config_row(plan_, observed, outcome)
    return replace(
        _applied("sync", status, workspace, outcome, started, config_row),
        healthy=health.healthy(run),
    )


def _report_bad(workspace: Workspace) -> None:
    for bad in workspace.inputs.bad:
        log.error("%s (runner %s held as it is until the file is fixed)", bad.error, bad.stem)


def _errors(workspace: Workspace) -> tuple[str, ...]:
    return tuple(bad.error for bad in workspace.inputs.bad)


def plan(
    prefix: Union[str, Path] = DEFAULT_PREFIX,
    instance: str = "main",
    *,
    detailed_exitcode: bool = False,
    environ: Optional[Mapping[str, str]] = None,
    **options: Any,
) -> Result:
    """What sync would do, from the same phases; nothing is changed in GitLab or on disk.
    ``changed``: sync would change something (``exit_status`` 4 with
    ``detailed_exitcode``)."""
    started = time.monotonic()
    opts = Options(prefix=Path(prefix), instance=instance, **options)
    check_prefix(opts)
    environ = os.environ if environ is None else environ
    with load(opts, environ, read_only=True, isolate=True) as workspace:
        _report_bad(workspace)
        observed, plan_ = _plan(workspace)
        for refusal in plan_.refusals:
            workspace.warn(refusal)
        if observed.unresolved:
            workspace.warn(
                f"an earlier run may have created {len(observed.unresolved)} runner(s) "
                f"without learning it ({', '.join(sorted(observed.unresolved))}); sync "
                "looks for them first"
            )
        # The leftovers' lists are the last calls; the connections are closed after them.
        leftovers = migrate.plan_leftovers(workspace, observed.runners)
    # Runners that are not gitlab-runner change their credentials files, not the config.
    custom = custom_runners.custom_stems(workspace)
    config_actions = [a for a in plan_.actions if a.stem not in custom]
    globals_ = workspace.inputs.globals
    kept = kept_entries(workspace.config, observed, workspace.held_stems)
    entries = entries_as_observed(workspace.executors, workspace.inputs.clients, observed, kept)
    config_changes = not plan_.held and (
        any(a.kind in (*TOKEN_CHANGES, Kind.DELETE) for a in config_actions)
        or workspace.config.content != content_of(globals_, entries)
    )
    files = custom_runners.planned_files(workspace, observed, plan_)
    changed = plan_.mutates or config_changes or bool(files)
    status = 2 if workspace.inputs.bad else 3 if observed.unverified else 0
    if status == 0 and detailed_exitcode and changed:
        status = CHANGES_PENDING
    actions = [
        ActionResult(a.kind.value, a.stem, a.runner_id, "planned", a.reason, changes=a.changes)
        for a in plan_.actions
    ]
    actions += files
    actions += leftovers
    write = "kept (held)" if plan_.held else "changes" if config_changes else "unchanged"
    actions.append(
        ActionResult("write" if config_changes else "keep", CONFIG_ROW, None, "planned", write)
    )
    diff = ""
    if config_changes and not any(a.kind in TOKEN_CHANGES for a in config_actions):
        # Exact only when no token changes: new tokens are not known before sync.
        diff = report.config_diff(
            (workspace.config.raw or b"").decode(),
            render(globals_, entries),
            workspace.output.name,
        )
    return Result(
        "plan",
        status,
        changed,
        tuple(actions),
        tuple(workspace.warnings),
        workspace.output,
        False,
        workspace.identity.system_id,
        round(time.monotonic() - started, 3),
        diff,
        errors=_errors(workspace),
        rate_limits=workspace.rate_limits(),
    )


@dataclass(frozen=True)
class GcResult:
    """What ``gc`` found (and, with ``yes``, deleted): one ``delete`` action per dead
    runner, ``result`` "planned", "done", "already gone" or "failed"."""

    exit_status: int  # what the CLI exits with
    changed: bool  # runners were deleted, or (dry run) would be
    actions: tuple[ActionResult, ...]
    warnings: tuple[str, ...]
    dry_run: bool
    older_than: timedelta
    seconds: float = 0.0

    @property
    def deleted(self) -> int:
        return sum(1 for action in self.actions if action.result == "done")


def gc(
    prefix: Union[str, Path] = DEFAULT_PREFIX,
    instance: str = "main",
    *,
    older_than: timedelta = timedelta(days=30),
    yes: bool = False,
    max_deletions: Optional[int] = None,
    detailed_exitcode: bool = False,
    deadline: float = 30.0,
    timeout: float = 10.0,
    jobs: Optional[int] = None,
    insecure_permissions: bool = False,
    lock_timeout: float = 60.0,
    environ: Optional[Mapping[str, str]] = None,
) -> GcResult:
    """The runners carrying this tool's marker, in every GitLab of the template, that have
    not contacted GitLab for longer than ``older_than`` (or never did, and were created
    longer ago), except this host's own; deleted with ``yes``. Needs read_api (instance
    runners: an admin's token); deleting needs manage_runner. ``exit_status``: 0, 4 with
    ``detailed_exitcode`` when runners would be deleted, 1 when GitLab refused (a
    missing scope), 3 when it failed."""
    started = time.monotonic()
    if older_than < stale.MIN_AGE:
        raise InputError(
            f"--older-than {older_than}: at least {stale.MIN_AGE} (GitLab records a "
            "runner's contacts only every hour or so)"
        )
    opts = Options(
        prefix=Path(prefix),
        instance=instance,
        deadline=deadline,
        timeout=timeout,
        jobs=jobs,
        insecure_permissions=insecure_permissions,
        max_deletions=max_deletions,
    )
    check_prefix(opts)
    environ = os.environ if environ is None else environ
    lock = exclusive_lock(lock_path(opts), lock_timeout)
    with lock, load(opts, environ, read_only=not yes) as workspace:
        rows, errors = stale.collect(
            workspace, older_than=older_than, delete=yes, max_deletions=max_deletions, now=now_utc()
        )
    for error in errors:
        workspace.warn(str(error))
    status = stale.exit_status(errors)
    changed = any(row.result in ("done", "planned") for row in rows)
    if status == 0 and detailed_exitcode and changed and not yes:
        status = CHANGES_PENDING
    return GcResult(
        status,
        changed,
        tuple(rows),
        tuple(workspace.warnings),
        not yes,
        older_than,
        round(time.monotonic() - started, 3),
    )


def act_on_runners(
    kind: Kind,
    prefix: Union[str, Path] = DEFAULT_PREFIX,
    instance: str = "main",
    *,
    names: Optional[Sequence[str]] = None,
    lock_timeout: float = 60.0,
    environ: Optional[Mapping[str, str]] = None,
    **options: Any,
) -> Result:
    """``unregister`` (kind DELETE) or ``reset-token`` (kind ROTATE) on the runners named
    (all of this host's in the instance when none is), applied like a sync's plan."""
    started = time.monotonic()
    command = "unregister" if kind is Kind.DELETE else "reset-token"
    opts = Options(prefix=Path(prefix), instance=instance, **options)
    check_prefix(opts)
    environ = os.environ if environ is None else environ
    with exclusive_lock(lock_path(opts), lock_timeout), load(opts, environ) as workspace:
        known = known_runners(workspace)
        plan_ = select(kind, command, known, workspace.executors, names, instance)
        outcome = apply(workspace, plan_, Observed(dict(known)))
    status = 1 if outcome.refused else 3 if outcome.failing else 0
    return _applied(command, status, workspace, outcome, started)


def _applied(
    command: str,
    status: int,
    workspace: Workspace,
    outcome: Outcome,
    started: float,
    *extra: ActionResult,
) -> Result:
    return Result(
        command,
        status,
        outcome.changed,
        (*outcome.records, *extra),
        tuple(workspace.warnings),
        workspace.output,
        outcome.wrote,
        workspace.identity.system_id,
        round(time.monotonic() - started, 3),
        errors=_errors(workspace),
        rate_limits=workspace.rate_limits(),
    )


def _config_row(plan_: Plan, observed: Observed, outcome: Outcome) -> ActionResult:
    """Sync's row for the config, as plan has one: what became of it."""
    if outcome.wrote:
        return ActionResult("write", CONFIG_ROW, None, "done", "written")
    if plan_.held:
        reason = "kept (held)"
    elif outcome.failing or observed.failing:
        reason = "kept (GitLab failing)"
    else:
        reason = "unchanged"
    return ActionResult("keep", CONFIG_ROW, None, "kept", reason)


def _plan(workspace: Workspace) -> tuple[Observed, Plan]:
    """What ``plan`` shows and ``sync`` applies: observe, then reconcile."""
    options = workspace.options
    known = len(workspace.state.runners) or len(workspace.config.entries)
    files = len(workspace.executors) + len(workspace.inputs.bad)
    check_not_emptied(files, known, str(workspace.inputs.executor_dir), options.force)
    observed = observe(workspace, known_runners(workspace), refresh=options.refresh)
    plan_ = reconcile(
        workspace.executors,
        observed,
        now=now_utc(),
        force=options.force,
        prune=options.prune,
        max_deletions=options.max_deletions,
        bad=workspace.held_stems,
    )
    for warning in plan_.warnings:
        workspace.warn(warning)
    return observed, plan_


def _record(
    workspace: Workspace, plan_: Plan, observed: Observed, outcome: Outcome, status: int
) -> health.Run:
    """The last-run record ``status`` and the metrics read."""
    prefix, instance = workspace.options.prefix, workspace.options.instance
    failing = outcome.failing or plan_.held or observed.failing
    return health.record_run(
        prefix,
        instance,
        exit_status=status,
        runners=health.runner_rows(
            prefix,
            instance,
            health.sync_verdicts(observed, plan_, outcome),
            [e.stem for e in workspace.executors],
            # Unless the config was rewritten, what load read is what is on disk.
            held=None if outcome.wrote else workspace,
        ),
        warnings=[*workspace.warnings, *outcome.refused, *_errors(workspace)],
        access_tokens=observed.access_tokens,
        config_kept=bool(failing and outcome.entries),
        # A recreate's old runner deleted is part of that recreate, not a change of its own.
        changes=[r.kind for r in outcome.records if r.result == "done"],
        rate_limits=workspace.rate_limits(),
    )


def _sync_status(workspace: Workspace, plan_: Plan, observed: Observed, outcome: Outcome) -> int:
    """2 when an executor file is bad (its runner was held); 1 when GitLab refused something
    a person must fix; 3 while the mass-invalid guard holds (GitLab-side, or it could not
    be asked). When GitLab was failing: 0 if a good config is in place (the runner can
    start), 3 if not or under --strict."""
    if workspace.inputs.bad:
        return 2
    if outcome.refused:
        return 1
    if plan_.held:
        return 3
    failing = outcome.failing or observed.failing
    if failing and (workspace.options.strict or (workspace.executors and not outcome.entries)):
        return 3
    return 0
