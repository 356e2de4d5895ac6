"""The Python API: what the CLI does, without a subprocess. The commands only print it.

    import register_runner
    result = register_runner.plan(prefix="/etc/gitlab-runner")
    if result.changed: ...

Each run goes through the same phases, values in and values out (``gitlab``, the run's
connections, passed beside them; each value carries its phase's warnings):

    load(options)                   -> Loaded    (inputs, state, config read back; no network)
    recover(loaded, gitlab)         -> Recovered (the state, creates of earlier runs resolved)
    known_runners + observe         -> Observed  (verify/GET, concurrent)
    reconcile(desired, observed)    -> Plan      (pure)
    apply(loaded, gitlab, plan, …)  -> Outcome   (API calls, journaled; writes state, config)
    record                          -> Run       (the last-run record status reads)
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional, Union

from . import custom_runners, health, migrate, report, stale, verification
from .apply import apply
from .errors import InputError, TransientError
from .files import exclusive_lock
from .hostid import ensure_system_id
from .model import (
    CONFIG_ROW,
    ActionResult,
    ClientConfig,
    GcResult,
    Kind,
    Loaded,
    Observed,
    Options,
    Outcome,
    Plan,
    PruneResult,
    RateLimits,
    Result,
    Run,
    RunnerState,
    Scope,
    StatusResult,
    VerifyResult,
    Warnings,
    normalize_url,
    output_path,
)
from .observe import known_runners, observe, recover, settle_resets
from .output import content_of, entries_as_observed, kept_entries, render
from .reconcile import check_not_emptied, reconcile, select
from .secret import Secret
from .timeutil import now_utc
from .workspace import GitLab, check_prefix, load, lock_path

log = logging.getLogger(__name__)
DEFAULT_PREFIX = "/etc/gitlab-runner"
CHANGES_PENDING = 4
TOKEN_CHANGES = (Kind.CREATE, Kind.RECREATE, Kind.ROTATE)


def sync(
    prefix: Union[str, Path] = DEFAULT_PREFIX,
    instance: str = "main",
    *,
    deadline: float = 30.0,
    fresh_deadline: Optional[float] = None,
    timeout: float = 10.0,
    jobs: Optional[int] = None,
    force: bool = False,
    strict: bool = False,
    refresh: bool = False,
    prune: bool = True,
    max_deletions: Optional[int] = None,
    capture_tags: Union[str, Path, None] = None,
    tag_schema: Union[str, Path, None] = None,
    insecure_permissions: bool = False,
    lock_timeout: float = 60.0,
    retry_only: bool = False,
    metrics_file: Union[str, Path, None] = None,
    environ: Optional[Mapping[str, str]] = None,
) -> Result:
    """Converge GitLab and ``config.<instance>.toml`` with the inputs. Bad host-wide input
    (the prefix, the template, the state...) raises InputError (nothing changed); a bad
    executor file does not: its runner is held as it is, the others converge, and the
    Result has exit_status 2 and the ``errors``. A busy lock raises TransientError. The
    keywords are the command line's options of the same names (``prune=False``:
    --no-prune). ``retry_only``: only when the last run left something to try again
    (``health.needs_retry``, read under the lock); otherwise nothing is done, nothing
    recorded, and ``recorded`` is None. ``metrics_file``: node_exporter's textfile
    metrics of the run are written there, as --metrics-file writes them, also when the
    run raises (then of the last run recorded; a retry not needed writes none); a
    failure to write them is a warning, never the run's."""
    opts = Options(
        prefix=Path(prefix),
        instance=instance,
        deadline=deadline,
        fresh_deadline=fresh_deadline,
        timeout=timeout,
        jobs=jobs,
        force=force,
        strict=strict,
        insecure_permissions=insecure_permissions,
        refresh=refresh,
        prune=prune,
        max_deletions=max_deletions,
        capture_tags=capture_tags,
        tag_schema=_path(tag_schema),
    )
    metrics = _path(metrics_file)
    try:
        result = _sync(opts, lock_timeout, retry_only, os.environ if environ is None else environ)
    except BaseException:
        if metrics is not None:  # on every exit, as the command line's
            health.report_metrics(metrics, opts.prefix, opts.instance, None)
        raise
    # A retry not needed ran nothing: the metrics go on describing the run that did.
    if metrics is not None and result.recorded is not None:
        warning = health.report_metrics(metrics, opts.prefix, opts.instance, result.recorded)
        if warning:
            result = replace(result, warnings=(*result.warnings, warning))
    return result


def _sync(
    opts: Options, lock_timeout: float, retry_only: bool, environ: Mapping[str, str]
) -> Result:
    started = time.monotonic()
    instance = opts.instance
    check_prefix(opts)
    with exclusive_lock(lock_path(opts), lock_timeout):
        # Under the lock: a retry that waited for another run decides on that run's record.
        last = health.read_last_run(opts.prefix, instance) if retry_only else None
        if retry_only and not health.needs_retry(last):
            log.debug("event=retry_not_needed prefix=%s instance=%s", opts.prefix, instance)
            config = output_path(opts.prefix, instance)
            return Result("sync", 0, False, (), (), config, healthy=health.healthy(last))
        loaded = load(opts, environ, isolate=True)
        _report_bad(loaded)
        with GitLab(loaded) as gitlab:
            recovered = recover(loaded, gitlab)
            loaded = replace(loaded, state=recovered.state)
            known = known_runners(loaded, gitlab)
            loaded = replace(loaded, state=known.state)
            resets = settle_resets(loaded, gitlab, known.runners)
            loaded = replace(loaded, state=resets.state)
            observed, plan_ = _plan(loaded, gitlab, resets.runners)
            outcome = apply(loaded, gitlab, plan_, observed)
            for refusal in plan_.refusals:
                outcome.refuse(refusal)
            loaded.parsed.save()  # with the config this run wrote
            warnings = _warnings(loaded, recovered, known, resets, observed, plan_, outcome)
            status = _sync_status(loaded, plan_, observed, outcome)
            rate_limits = gitlab.rate_limits()
            run = _record(loaded, plan_, observed, outcome, status, warnings, rate_limits)
    config_row = _config_row(plan_, observed, outcome)
    return replace(
        _applied("sync", status, loaded, outcome, warnings, rate_limits, started, config_row),
        healthy=health.healthy(run),
        recorded=run,
    )


def _warnings(*values: Any) -> tuple[str, ...]:
    """The run's warnings, each once, in the order the phases said them."""
    return tuple(dict.fromkeys(w for value in values for w in value.warnings))


def _report_bad(loaded: Loaded) -> None:
    for bad in loaded.inputs.bad:
        log.error("%s (runner %s held as it is until the file is fixed)", bad.error, bad.stem)


def _errors(loaded: Loaded) -> tuple[str, ...]:
    return tuple(bad.error for bad in loaded.inputs.bad)


def plan(
    prefix: Union[str, Path] = DEFAULT_PREFIX,
    instance: str = "main",
    *,
    detailed_exitcode: bool = False,
    deadline: float = 30.0,
    fresh_deadline: Optional[float] = None,
    timeout: float = 10.0,
    jobs: Optional[int] = None,
    force: bool = False,
    refresh: bool = False,
    prune: bool = True,
    max_deletions: Optional[int] = None,
    capture_tags: Union[str, Path, None] = None,
    tag_schema: Union[str, Path, None] = None,
    insecure_permissions: bool = False,
    environ: Optional[Mapping[str, str]] = None,
) -> Result:
    """What sync would do, from the same phases; nothing is changed in GitLab or on disk.
    ``changed``: sync would change something (``exit_status`` 4 with
    ``detailed_exitcode``). The other keywords are sync's."""
    started = time.monotonic()
    opts = Options(
        prefix=Path(prefix),
        instance=instance,
        deadline=deadline,
        fresh_deadline=fresh_deadline,
        timeout=timeout,
        jobs=jobs,
        force=force,
        insecure_permissions=insecure_permissions,
        refresh=refresh,
        prune=prune,
        max_deletions=max_deletions,
        capture_tags=capture_tags,
        tag_schema=_path(tag_schema),
    )
    check_prefix(opts)
    environ = os.environ if environ is None else environ
    loaded = load(opts, environ, read_only=True, isolate=True)
    _report_bad(loaded)
    said = Warnings()
    with GitLab(loaded) as gitlab:
        known = known_runners(loaded, gitlab)
        loaded = replace(loaded, state=known.state)
        observed, plan_ = _plan(loaded, gitlab, known.runners)
        for refusal in plan_.refusals:
            said.warn(refusal)
        if observed.unresolved:
            said.warn(
                f"an earlier run may have created {len(observed.unresolved)} runner(s) "
                f"without learning it ({', '.join(sorted(observed.unresolved))}); sync "
                "looks for them first"
            )
        resets = sorted(loaded.state.pending_resets)
        if resets:
            said.warn(
                f"an earlier run may have reset the token of {len(resets)} runner(s) without "
                f"learning the new one ({', '.join(resets)}); sync settles that first (asks "
                "about the old token, and resets again only if the reset happened)"
            )
        # The leftovers' lists are the last calls; the connections are closed after them.
        leftovers, leftover_warnings = migrate.plan_leftovers(loaded, gitlab, observed.runners)
        rate_limits = gitlab.rate_limits()
    # Runners that are not gitlab-runner change their credentials files, not the config.
    custom = custom_runners.custom_stems(loaded)
    config_actions = [a for a in plan_.actions if a.stem not in custom]
    globals_ = loaded.inputs.globals
    kept = kept_entries(loaded.config, observed, loaded.held_stems)
    entries = entries_as_observed(loaded.executors, loaded.inputs.clients, observed, kept)
    config_changes = not plan_.held and (
        any(a.kind in (*TOKEN_CHANGES, Kind.DELETE) for a in config_actions)
        or loaded.config.content != content_of(globals_, entries)
    )
    files = custom_runners.planned_files(loaded, observed, plan_)
    changed = plan_.mutates or config_changes or bool(files)
    status = 2 if loaded.inputs.bad else 3 if observed.unverified else 0
    if status == 0 and detailed_exitcode and changed:
        status = CHANGES_PENDING
    actions = [
        ActionResult(a.kind, a.stem, a.runner_id, "planned", a.reason, changes=a.changes)
        for a in plan_.actions
    ]
    actions += files
    actions += leftovers
    write = "kept (held)" if plan_.held else "changes" if config_changes else "unchanged"
    actions.append(
        ActionResult(
            Kind.WRITE if config_changes else Kind.KEEP, CONFIG_ROW, None, "planned", write
        )
    )
    diff = ""
    if config_changes and not any(a.kind in TOKEN_CHANGES for a in config_actions):
        # Exact only when no token changes: new tokens are not known before sync.
        diff = report.config_diff(
            (loaded.config.raw or b"").decode(),
            render(globals_, entries),
            loaded.output.name,
        )
    return Result(
        "plan",
        status,
        changed,
        tuple(actions),
        (*_warnings(loaded, known, observed, plan_), *said.said, *leftover_warnings),
        loaded.output,
        False,
        loaded.identity.system_id,
        round(time.monotonic() - started, 3),
        diff,
        errors=_errors(loaded),
        rate_limits=rate_limits,
    )


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
            f"--older-than {stale.age_text(older_than)}: at least "
            f"{stale.age_text(stale.MIN_AGE)} (GitLab records a runner's contacts only "
            "every hour or so)"
        )
    if older_than > stale.MAX_AGE:
        raise InputError(
            f"--older-than {stale.age_text(older_than)}: at most {stale.age_text(stale.MAX_AGE)}"
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
    with exclusive_lock(lock_path(opts), lock_timeout):
        loaded = load(opts, environ, read_only=not yes)
        with GitLab(loaded) as gitlab:
            rows, errors, warnings = stale.collect(
                loaded,
                gitlab,
                older_than=older_than,
                delete=yes,
                max_deletions=max_deletions,
                now=now_utc(),
            )
    said = {str(error): isinstance(error, TransientError) for error in errors}  # each once
    for message, transient in said.items():
        if transient:  # try again later: a warning, as a sync's GitLab failing
            log.warning("%s", message)
        else:  # what exit 1 is for: an error, as a sync's refusals
            log.error("event=refused %s", message)
    status = stale.exit_status(errors)
    changed = any(row.result in ("done", "planned") for row in rows)
    if status == 0 and detailed_exitcode and changed and not yes:
        status = CHANGES_PENDING
    return GcResult(
        status,
        changed,
        tuple(rows),
        tuple(dict.fromkeys((*loaded.warnings, *warnings, *said))),
        not yes,
        older_than,
        round(time.monotonic() - started, 3),
    )


def prune_legacy(
    prefix: Union[str, Path] = DEFAULT_PREFIX,
    instance: str = "main",
    *,
    yes: bool = False,
    deadline: float = 30.0,
    timeout: float = 10.0,
    jobs: Optional[int] = None,
    insecure_permissions: bool = False,
    capture_tags: Union[str, Path, None] = None,
    tag_schema: Union[str, Path, None] = None,
    lock_timeout: float = 60.0,
    environ: Optional[Mapping[str, str]] = None,
) -> PruneResult:
    """The runners LLNL's gitlab-runner-auth left in GitLab for this host and instance;
    deleted with ``yes``, each read again first. Needs read_api to list, manage_runner to
    delete. Refused (RefusedError) while the config holds runners without an id: sync
    adopts them first. ``exit_status``: 0, 1 when GitLab refused, 3 when it failed."""
    opts = Options(
        prefix=Path(prefix),
        instance=instance,
        deadline=deadline,
        timeout=timeout,
        jobs=jobs,
        insecure_permissions=insecure_permissions,
        capture_tags=capture_tags,
        tag_schema=_path(tag_schema),
    )
    check_prefix(opts)
    environ = os.environ if environ is None else environ
    with exclusive_lock(lock_path(opts), lock_timeout):
        loaded = load(opts, environ, read_only=not yes)
        with GitLab(loaded) as gitlab:
            rows, status, warnings = migrate.prune(loaded, gitlab, delete=yes)
    return PruneResult(status, tuple(rows), (*loaded.warnings, *warnings), not yes)


def unregister(
    prefix: Union[str, Path] = DEFAULT_PREFIX,
    instance: str = "main",
    *,
    runners: Optional[Sequence[str]] = None,
    deadline: float = 30.0,
    timeout: float = 10.0,
    jobs: Optional[int] = None,
    insecure_permissions: bool = False,
    lock_timeout: float = 60.0,
    environ: Optional[Mapping[str, str]] = None,
) -> Result:
    """Delete this host's runners of the instance (only those of the executor file stems
    in ``runners``, when given) from GitLab and from the config. A deletion that cannot
    happen now stays journaled for the next run. The executor files are left: the next
    sync registers their runners again."""
    network = _Network(deadline, timeout, jobs, insecure_permissions)
    return _act_on_runners(Kind.DELETE, prefix, instance, runners, network, lock_timeout, environ)


def reset_token(
    prefix: Union[str, Path] = DEFAULT_PREFIX,
    instance: str = "main",
    *,
    runners: Optional[Sequence[str]] = None,
    deadline: float = 30.0,
    timeout: float = 10.0,
    jobs: Optional[int] = None,
    insecure_permissions: bool = False,
    lock_timeout: float = 60.0,
    environ: Optional[Mapping[str, str]] = None,
) -> Result:
    """Rotate the tokens of this host's runners of the instance (those of ``runners``,
    when given) now, and save them in the config."""
    network = _Network(deadline, timeout, jobs, insecure_permissions)
    return _act_on_runners(Kind.ROTATE, prefix, instance, runners, network, lock_timeout, environ)


@dataclass(frozen=True)
class _Network:
    """What unregister and reset-token are told about the calls they make."""

    deadline: float
    timeout: float
    jobs: Optional[int]
    insecure_permissions: bool


def _act_on_runners(
    kind: Kind,
    prefix: Union[str, Path],
    instance: str,
    names: Optional[Sequence[str]],
    network: _Network,
    lock_timeout: float,
    environ: Optional[Mapping[str, str]],
) -> Result:
    """``unregister`` (kind DELETE) or ``reset-token`` (kind ROTATE) on the runners named
    (all of this host's in the instance when none is), applied like a sync's plan."""
    started = time.monotonic()
    command = "unregister" if kind is Kind.DELETE else "reset-token"
    opts = Options(
        Path(prefix),
        instance,
        deadline=network.deadline,
        timeout=network.timeout,
        jobs=network.jobs,
        insecure_permissions=network.insecure_permissions,
    )
    check_prefix(opts)
    environ = os.environ if environ is None else environ
    with exclusive_lock(lock_path(opts), lock_timeout):
        loaded = load(opts, environ)
        with GitLab(loaded) as gitlab:
            known = known_runners(loaded, gitlab)
            loaded = replace(loaded, state=known.state)
            plan_ = select(kind, command, known.runners, loaded.executors, names, instance)
            outcome = apply(loaded, gitlab, plan_, Observed(dict(known.runners)))
            rate_limits = gitlab.rate_limits()
            status = 1 if outcome.refused else 3 if outcome.failing else 0
            warnings = _warnings(loaded, known, outcome)
            run = health.record_run(
                loaded.options.prefix,
                instance,
                exit_status=status,
                runners=health.runner_rows(
                    loaded.options.prefix, instance, health.acted_verdicts(outcome)
                ),
                warnings=[*warnings, *outcome.refused],
                access_tokens=None,
                changes=_changes(outcome),
                rate_limits=rate_limits,
            )
    return replace(
        _applied(command, status, loaded, outcome, warnings, rate_limits, started),
        healthy=health.healthy(run),
        recorded=run,
    )


def _changes(outcome: Outcome) -> list[str]:
    """What register_runner_changes_total counts of a run: each change it made in GitLab
    (a recreate's old runner deleted is part of that recreate, not a change of its own)."""
    return [r.kind.value for r in outcome.records if r.result == "done"]


def _applied(
    command: str,
    status: int,
    loaded: Loaded,
    outcome: Outcome,
    warnings: tuple[str, ...],
    rate_limits: RateLimits,
    started: float,
    *extra: ActionResult,
) -> Result:
    return Result(
        command,
        status,
        outcome.changed,
        (*outcome.records, *extra),
        warnings,
        loaded.output,
        outcome.wrote,
        loaded.identity.system_id,
        round(time.monotonic() - started, 3),
        errors=_errors(loaded),
        rate_limits=rate_limits,
    )


def _config_row(plan_: Plan, observed: Observed, outcome: Outcome) -> ActionResult:
    """Sync's row for the config, as plan has one: what became of it."""
    if outcome.wrote:
        return ActionResult(Kind.WRITE, CONFIG_ROW, None, "done", "written")
    if plan_.held:
        reason = "kept (held)"
    elif outcome.failing or observed.failing:
        reason = "kept (GitLab failing)"
    else:
        reason = "unchanged"
    return ActionResult(Kind.KEEP, CONFIG_ROW, None, "kept", reason)


def _plan(loaded: Loaded, gitlab: GitLab, runners: dict[str, RunnerState]) -> tuple[Observed, Plan]:
    """What ``plan`` shows and ``sync`` applies: observe, then reconcile."""
    options = loaded.options
    known = len(loaded.state.runners) or len(loaded.config.entries)
    files = len(loaded.executors) + len(loaded.inputs.bad)
    check_not_emptied(files, known, str(loaded.inputs.executor_dir), options.force)
    observed = observe(loaded, gitlab, runners, refresh=options.refresh)
    plan_ = reconcile(
        loaded.executors,
        observed,
        now=now_utc(),
        force=options.force,
        prune=options.prune,
        max_deletions=options.max_deletions,
        bad=loaded.held_stems,
    )
    for warning in plan_.warnings:  # reconcile is pure: what it says is logged here
        log.warning("%s", warning)
    return observed, plan_


def _record(
    loaded: Loaded,
    plan_: Plan,
    observed: Observed,
    outcome: Outcome,
    status: int,
    warnings: tuple[str, ...],
    rate_limits: RateLimits,
) -> Run:
    """The last-run record ``status`` and the metrics read."""
    prefix, instance = loaded.options.prefix, loaded.options.instance
    failing = outcome.failing or plan_.held or observed.failing
    return health.record_run(
        prefix,
        instance,
        exit_status=status,
        runners=health.runner_rows(
            prefix,
            instance,
            health.sync_verdicts(observed, plan_, outcome),
            [e.stem for e in loaded.executors],
            # Unless the config was rewritten, what load read is what is on disk.
            held=None if outcome.wrote else replace(loaded, state=outcome.state),
        ),
        warnings=[*warnings, *outcome.refused, *_errors(loaded)],
        access_tokens=observed.access_tokens,
        config_kept=bool(failing and outcome.entries),
        changes=_changes(outcome),
        rate_limits=rate_limits,
    )


def _sync_status(loaded: Loaded, plan_: Plan, observed: Observed, outcome: Outcome) -> int:
    """2 when an executor file is bad (its runner was held); 1 when GitLab refused something
    a person must fix; 3 while the mass-invalid guard holds (GitLab-side, or it could not
    be asked). When GitLab was failing: 0 if a good config is in place (the runner can
    start), 3 if not or under --strict."""
    if loaded.inputs.bad:
        return 2
    if outcome.refused:
        return 1
    if plan_.held:
        return 3
    failing = outcome.failing or observed.failing
    if failing and (loaded.options.strict or (loaded.executors and not outcome.entries)):
        return 3
    return 0


def _path(value: Union[str, Path, None]) -> Optional[Path]:
    return None if value is None else Path(value)


def verify(
    prefix: Union[str, Path] = DEFAULT_PREFIX,
    instance: str = "main",
    *,
    url: Optional[str] = None,
    token: Union[str, Secret, None] = None,
    system_id: Optional[str] = None,
    tls_ca_file: Union[str, Path, None] = None,
    deadline: float = 30.0,
    timeout: float = 10.0,
    jobs: Optional[int] = None,
) -> VerifyResult:
    """Whether GitLab takes runner tokens: ``token`` of GitLab ``url`` (both, or neither),
    else every token of the instance's generated config and custom runners' files. Asked
    with ``system_id``, else the prefix's (none if it has none: a made-up one would
    create a runner manager in GitLab). Changes nothing."""
    options = Options(Path(prefix), instance, deadline=deadline, timeout=timeout, jobs=jobs)
    if (url is None) != (token is None):
        raise InputError("verify needs both a url and a token, or neither")
    if system_id is not None:
        verification.check_system_id(system_id)
    if url is not None and token is not None:
        secret = token if isinstance(token, Secret) else Secret(token)
        tls = None if tls_ca_file is None else str(tls_ca_file)
        client = ClientConfig(normalize_url(url), Scope(), tls_ca_file=tls)
        checks: list[verification.Check] = [("token", client, secret, None)]
    else:
        checks = verification.config_checks(options)
    rows, warnings, status = verification.verify(
        options, checks, system_id or verification.prefix_system_id(options.prefix)
    )
    for warning in warnings:
        log.warning("%s", warning)
    return VerifyResult(status, tuple(rows), tuple(warnings))


def status(prefix: Union[str, Path] = DEFAULT_PREFIX, instance: str = "main") -> StatusResult:
    """What the last sync, unregister or reset-token recorded; no API call and no lock.
    Raises TransientError when none is recorded."""
    folder = Path(prefix)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder (--prefix)")
    last = health.read_last_run(folder, instance)
    if last is None:
        raise TransientError(
            f"no run recorded for instance {instance} in {folder} (sync, "
            "unregister and reset-token record theirs)"
        )
    return StatusResult(health.status_of(last), last, health.healthy(last))


def system_id(prefix: Union[str, Path] = DEFAULT_PREFIX) -> str:
    """The prefix's system ID (what its runners report to GitLab), created if missing."""
    folder = Path(prefix)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder (--prefix)")
    return ensure_system_id(folder)
