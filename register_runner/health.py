"""What the last run did, for ``status`` and for node_exporter's textfile collector.

Every sync, unregister and reset-token records its outcome in the prefix's state folder
(``.register-runner/<instance>.last-run.json``): when, the exit status, each runner's
verdict and token expiry, the access tokens' expiry and the warnings. No token is in it.

A run that ended with bad input (exit 2) is recorded too, so that ``status`` says why the
last start failed: that record is the one file bad input may change, and only when the
state folder already exists (bad input never creates anything).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

from ._version import __version__
from .errors import Error, InputError
from .files import atomic_write, json_lines, read_regular, state_dir
from .model import AccessTokenCheck, RateLimits, Run, output_path
from .secret import scrub

log = logging.getLogger(__name__)

# "held": GitLab rejected the token, but the mass-invalid guard kept the runner.
VERDICTS = ("valid", "invalid", "unknown", "held")
# What register_runner_changes_total counts: the actions that change a runner in GitLab.
CHANGE_KINDS = ("create", "update", "rotate", "recreate", "delete")
ACCESS_TOKEN_NOTICE = timedelta(days=14)
VERSION = 1


def status_of(run: Optional[Run]) -> int:
    """What ``status`` exits with, the one verdict on whether the host's runners can take
    jobs (the metrics and the API's ``healthy`` say the same): 1 a person must act (a
    runner invalid or held, the access token rejected, the last run exited 1 or 2, or
    failed in a way this tool does not know), 3 not known (a verdict unknown, the last
    run transient, or no run recorded), 0 every runner last verified valid."""
    if run is None:
        return 3
    verdicts = {row.get("verdict") for row in run.runners}
    if (
        run.exit_status not in (0, 3)
        or verdicts & {"invalid", "held"}
        or run.rejected_access_tokens
    ):
        return 1
    if run.exit_status == 3 or verdicts - {"valid"}:
        return 3
    return 0


def healthy(run: Optional[Run]) -> bool:
    return status_of(run) == 0


def run_json(run: Run) -> dict[str, Any]:
    """The last-run record as its file holds it."""
    return {
        "version": VERSION,
        "time": iso(run.time),
        "exit_status": run.exit_status,
        "runners": run.runners,
        "warnings": run.warnings,
        "access_tokens": run.access_tokens,
        "rejected_access_tokens": run.rejected_access_tokens,
        "config_kept": run.config_kept,
        "changes_total": run.changes_total,
        "rate_limits": {
            "limited": run.rate_limits.limited,
            "waited_seconds": run.rate_limits.waited,
        },
    }


def status_json(run: Run) -> dict[str, Any]:
    """What ``status --json`` prints."""
    return {
        "last_run": {"time": iso(run.time), "exit_status": run.exit_status},
        "healthy": healthy(run),
        "runners": run.runners,
        "warnings": run.warnings,
        "access_tokens": [
            {
                "url": url,
                "expires_at": expires,
                "rejected": url in run.rejected_access_tokens,
            }
            for url, expires in sorted(run.access_tokens.items())
        ],
    }


def last_run_path(prefix: Path, instance: str) -> Path:
    return state_dir(prefix) / f"{instance}.last-run.json"


def record_run(
    prefix: Path,
    instance: str,
    *,
    exit_status: int,
    runners: Optional[Sequence[Mapping[str, Any]]],
    warnings: Iterable[str],
    access_tokens: Optional[Mapping[str, AccessTokenCheck]],
    config_kept: bool = False,
    changes: Iterable[str] = (),
    rate_limits: Optional[RateLimits] = None,
) -> Run:
    """Write the last-run record (only into an existing state folder) and return it.
    ``runners`` None: not known this run; the previous record's are kept, with the
    verdict "unknown". ``access_tokens`` None (not asked this run): the previous record's
    expiries and rejections; an expiry GitLab did not answer about is the previous one.
    ``changes``: the kind of each change this run made in GitLab, added to the totals of
    the runs before."""
    previous = read_last_run(prefix, instance)
    if runners is None:
        runners = [dict(r, verdict="unknown") for r in (previous.runners if previous else [])]
    before = dict(previous.access_tokens) if previous else {}
    tokens = dict(before)
    rejected = list(previous.rejected_access_tokens) if previous else []
    if access_tokens is not None:
        tokens, rejected = {url: before.get(url) for url in access_tokens}, []
        for url, check in access_tokens.items():
            if check.rejected:
                rejected.append(url)
            elif check.answered:
                tokens[url] = check.expires_at.isoformat() if check.expires_at else None
    run = Run(
        datetime.now(timezone.utc).replace(microsecond=0),
        exit_status,
        [dict(r) for r in runners],
        list(dict.fromkeys(scrub(w) for w in warnings)),
        tokens,
        sorted(rejected),
        config_kept,
        _add_changes(previous.changes_total if previous else {}, changes),
        rate_limits or RateLimits(),
    )
    if state_dir(prefix).is_dir():
        try:
            data = json_lines(run_json(run))
            atomic_write(last_run_path(prefix, instance), data.encode())
        except Error as error:
            # Best effort: a read-only prefix runs its runners all the same.
            log.info("event=not_recorded %s", error)
    return run


def _add_changes(totals: Mapping[str, int], changes: Iterable[str]) -> dict[str, int]:
    added = {kind: int(totals.get(kind, 0)) for kind in CHANGE_KINDS}
    for kind in changes:
        if kind in added:
            added[kind] += 1
    return added


def needs_retry(run: Optional[Run]) -> bool:
    """Whether a run soon would help: none is recorded, the last one exited 3 (try again
    later: nothing to keep, the guard holding, the lock busy), or GitLab failed before
    every executor had a runner. A run that needs a person (1, 2) waits for the timer."""
    if run is None or run.exit_status == 3:
        return True
    return run.config_kept and any(row.get("id") is None for row in run.runners)


def read_last_run(prefix: Path, instance: str) -> Optional[Run]:
    """The last recorded run; None when there is none (or it is unreadable: then the next
    run writes a good one)."""
    try:
        raw = read_regular(last_run_path(prefix, instance))
    except InputError:
        return None
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        return Run(
            _parse_time(data["time"]),
            int(data["exit_status"]),
            list(data.get("runners", [])),
            list(data.get("warnings", [])),
            dict(data.get("access_tokens", {})),
            [str(url) for url in data.get("rejected_access_tokens", [])],
            bool(data.get("config_kept", False)),
            {kind: int(n) for kind, n in dict(data.get("changes_total", {})).items()},
            RateLimits(
                int(data.get("rate_limits", {}).get("limited", 0)),
                float(data.get("rate_limits", {}).get("waited_seconds", 0.0)),
            ),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        log.debug("event=last_run_unreadable path=%s", last_run_path(prefix, instance))
        return None


def runner_rows(
    prefix: Path,
    instance: str,
    verdicts: Mapping[str, str],
    stems: Iterable[str] = (),
    *,
    held: Any = None,
) -> list[dict[str, Any]]:
    """One row per runner this host holds for ``instance`` after the run, and per executor
    ``stems`` that should have one: ids from the state, token expiry from the config,
    verdicts from ``verdicts`` (stem → verdict), else the previous record's for the same
    runner; a runner with no token in the config (or no runner at all) is "invalid":
    gitlab-runner cannot run it. ``held``: the run's state and config as they are on disk
    now (a ``Loaded`` with the run's state, the config not rewritten), else both are read."""
    from . import custom_runners, state
    from .output import credentials_of, read_config

    st = held.state if held is not None else state.load(prefix, instance)
    stored = st.runners
    try:
        config = held.config if held is not None else read_config(output_path(prefix, instance))
        entries = config.by_key()
    except InputError:
        entries = {}
    previous = read_last_run(prefix, instance)
    before = (
        {(r.get("runner"), r.get("id")): r.get("verdict") for r in previous.runners}
        if previous
        else {}
    )
    rows = []
    for stem in sorted(set(stored) | set(stems)):
        runner_id = stored[stem].id if stem in stored else None
        entry = entries.get((stored[stem].url, stored[stem].id)) if stem in stored else None
        credentials = credentials_of(entry) if entry else None
        if credentials is None and runner_id is not None:
            # A runner that is not gitlab-runner: its token is in its credentials file.
            credentials = custom_runners.stored_credentials(st, stem, stored[stem].url, runner_id)
        verdict = verdicts.get(stem) or before.get((stem, runner_id))
        # No runner yet because GitLab failed is not known bad: only this run's verdict
        # says so (a previous run's "unknown" is about a runner no longer there).
        waiting = runner_id is None and verdicts.get(stem) == "unknown"
        if (runner_id is None and not waiting) or (verdict is None and credentials is None):
            verdict = "invalid"
        rows.append(
            {
                "runner": stem,
                "id": runner_id,
                "verdict": verdict if verdict in VERDICTS else "unknown",
                "token_expires_at": iso(credentials.expires_at)
                if credentials and credentials.expires_at
                else None,
            }
        )
    return rows


def sync_verdicts(observed: Any, plan: Any, outcome: Any) -> dict[str, str]:
    """Each runner's verdict after a sync: "valid" for a token just issued (create,
    recreate, rotate), "held" for a rejected token the mass-invalid guard kept, "unknown"
    for a runner not created because GitLab failed, else what verifying it said."""
    verdicts = {stem: runner.verdict.value for stem, runner in observed.runners.items()}
    if plan.held:
        verdicts.update((stem, "held") for stem, v in verdicts.items() if v == "invalid")
    for record in outcome.records:
        if record.token and record.result == "done":
            verdicts[record.runner] = "valid"
        elif record.kind in ("create", "wait") and record.result == "waiting":
            # Not created because GitLab failed (or an earlier create is not settled yet):
            # whether it will run is not known, which is not a person's to fix.
            verdicts.setdefault(record.runner, "unknown")
    return verdicts


def acted_verdicts(outcome: Any) -> dict[str, str]:
    """The verdicts unregister and reset-token learn: "valid" for a token just issued,
    "unknown" for a reset that failed because GitLab did (it may have happened); the other
    runners keep the previous record's."""
    verdicts = {}
    for record in outcome.records:
        if record.token and record.result == "done":
            verdicts[record.runner] = "valid"
        elif record.kind == "rotate" and record.result == "waiting":
            verdicts[record.runner] = "unknown"
    return verdicts


def expiry_notice(url: str, expires: Optional[date]) -> Optional[str]:
    """The warning for an access token that expires within two weeks."""
    if expires is None or expires - date.today() > ACCESS_TOKEN_NOTICE:
        return None
    return (
        f"access token for {url} expires on {expires.isoformat()}; create a new one and "
        "replace it before then"
    )


# -- node_exporter textfile -----------------------------------------------------------


def report_metrics(path: Path, prefix: Path, instance: str, run: Optional[Run]) -> Optional[str]:
    """Write the metrics of ``run``, else (the run recorded none) of the last run
    recorded, for ``--metrics-file`` and the API's ``metrics_file``. A failure is a
    warning, logged and returned, never the run's: the metrics report on the run, they
    are not part of it. The shipped units name node_exporter's folder, which a host
    without node_exporter lacks, and a full disk (exit 3 elsewhere) must not change the
    run's exit status either."""
    try:
        write_metrics(path, instance, run or read_last_run(prefix, instance))
    except Error as error:
        warning = f"{error} (metrics not written; an empty or unset metrics file writes none)"
        log.warning("%s", warning)
        return warning
    return None


def write_metrics(path: Path, instance: str, run: Optional[Run]) -> None:
    """node_exporter's textfile format, replaced atomically (temporary file and rename in
    the same folder) so that the collector never reads half a file; mode 0644."""
    atomic_write(path, render_metrics(instance, run).encode(), mode=0o644)


def render_metrics(instance: str, run: Optional[Run]) -> str:
    """The metrics of ``run``; without one (nothing recorded yet), unhealthy and the
    runner counts, all zero."""
    families: list[tuple[str, str, list[tuple[dict[str, str], float]]]] = []
    if run is not None:
        families += [
            (
                "register_runner_last_run_timestamp_seconds",
                "When the last register-runner run ended (Unix time).",
                [({}, run.time.timestamp())],
            ),
            (
                "register_runner_last_run_exit_code",
                "Exit status of the last run: 0 done, 1 a person must act, 2 bad input, "
                "3 try again later.",
                [({}, run.exit_status)],
            ),
        ]
    families.append(
        (
            "register_runner_healthy",
            "1 when every runner of this host can take jobs (status would exit 0), else 0.",
            [({}, int(healthy(run)))],
        )
    )
    counts = dict.fromkeys(VERDICTS, 0)
    for row in run.runners if run else []:
        verdict = row.get("verdict")
        counts[verdict if isinstance(verdict, str) and verdict in counts else "unknown"] += 1
    families.append(
        (
            "register_runner_runners",
            "Runners of this host by the last run's verdict on their token.",
            [({"state": state}, count) for state, count in counts.items()],
        )
    )
    expiring = [
        ({"runner": row["runner"]}, _parse_time(row["token_expires_at"]).timestamp())
        for row in (run.runners if run else [])
        if row.get("token_expires_at")
    ]
    families.append(
        (
            "register_runner_token_expires_timestamp_seconds",
            "When each runner's token expires (Unix time); runners whose token does not "
            "expire are left out.",
            expiring,
        )
    )
    tokens = [
        ({"url": url}, _parse_time(expires).timestamp())
        for url, expires in sorted((run.access_tokens if run else {}).items())
        if expires
    ]
    families.append(
        (
            "register_runner_access_token_expires_timestamp_seconds",
            "When each GitLab access token expires (Unix time), as GitLab reports it.",
            tokens,
        )
    )
    families += _run_details(run)
    lines = []
    for name, help_text, samples in families:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {_type_of(name)}")
        for labels, value in samples:
            labels = {"instance": instance, **labels}
            rendered = ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items())
            lines.append(f"{name}{{{rendered}}} {_number(value)}")
    return "\n".join(lines) + "\n"


Family = tuple[str, str, list[tuple[dict[str, str], float]]]


def _run_details(run: Optional[Run]) -> list[Family]:
    """What the last run met and did besides its verdicts: a kept config, its changes,
    GitLab's rate limit."""
    if run is None:
        return []
    totals = {kind: run.changes_total.get(kind, 0) for kind in CHANGE_KINDS}
    return [
        (
            "register_runner_config_kept",
            "1 when GitLab failed in the last run and the config of an earlier run was "
            "kept (the runners run, unchecked), else 0.",
            [({}, int(run.config_kept))],
        ),
        (
            "register_runner_changes_total",
            "Changes made to runners in GitLab (sync, unregister, reset-token), by kind, "
            "over the runs recorded here.",
            [({"kind": kind}, count) for kind, count in totals.items()],
        ),
        (
            "register_runner_rate_limited_requests",
            "Requests GitLab answered 429 (too many requests) in the last run.",
            [({}, run.rate_limits.limited)],
        ),
        (
            "register_runner_rate_limit_wait_seconds",
            "Seconds the last run waited for GitLab's rate limit (Retry-After, or pacing "
            "as the budget ran low).",
            [({}, run.rate_limits.waited)],
        ),
        (
            "register_runner_build_info",
            "The register-runner version that wrote these metrics; always 1.",
            [({"version": __version__}, 1)],
        ),
    ]


def _type_of(name: str) -> str:
    return "counter" if name.endswith("_total") else "gauge"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str) -> datetime:
    """An ISO 8601 time or date; a date means its start, UTC."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
