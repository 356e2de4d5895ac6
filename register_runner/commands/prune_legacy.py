"""``register-runner prune-legacy``: delete the runners LLNL's gitlab-runner-auth left in
GitLab for this host and instance (it registered new ones on every restart against a
GitLab that no longer returns tokens in ``GET /runners/:id``). Without ``--yes`` it only
lists them.

A runner is deleted only when this host provably owns it: gitlab-runner-auth's
description with this host's name and this instance, not a runner of this host's state or
config, and, read again by id right before the deletion, still so described, without a
register-runner marker and not online (a runner that talked to GitLab within the last
hours may be in use by another machine of the same name). Needs read_api (to list) and
manage_runner (to read and delete by id).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any

from .. import report
from ..errors import RefusedError, RegisterRunnerError, TransientError
from ..files import exclusive_lock
from ..migrate import find_leftovers, is_legacy_description, known_ids
from ..model import ActionResult, carries_marker
from ..tags import legacy_hostname
from ..workspace import Options, Workspace, check_prefix, load, lock_path


def run(args: argparse.Namespace) -> int:
    options = Options.from_args(args)
    check_prefix(options)
    with (
        exclusive_lock(lock_path(options), args.lock_timeout),
        load(options, os.environ, read_only=not args.yes) as workspace,
    ):
        rows, status = prune(workspace, delete=args.yes)
    report.emit(
        args.json,
        {
            "command": "prune-legacy",
            "exit_status": status,
            "deleted": sum(1 for row in rows if row.result == "done"),
            "dry_run": not args.yes,
        },
        [row.as_row() for row in rows],
        workspace.warnings,
    )
    return status


def prune(workspace: Workspace, *, delete: bool) -> tuple[list[ActionResult], int]:
    unadopted = [
        entry
        for entry in workspace.config.entries
        if entry.get("token") and not isinstance(entry.get("id"), int)
    ]
    if unadopted:
        # One of them is the runner gitlab-runner runs with, and its id is not known yet.
        raise RefusedError(
            f"{workspace.output}: {len(unadopted)} runner(s) without an id, as "
            "gitlab-runner-auth wrote them; run register-runner (sync) first so that they "
            "are adopted, then prune-legacy"
        )
    host = legacy_hostname()
    known = known_ids(workspace)
    leftovers, errors = find_leftovers(workspace, known, host)
    rows = []
    for url, runner in leftovers:
        result = "planned"
        if delete:
            result = _delete(workspace, url, runner["id"], host, known, errors)
        reason = f"left by gitlab-runner-auth on {url} ({runner.get('status')})"
        rows.append(
            ActionResult("delete", str(runner.get("description")), runner["id"], result, reason)
        )
    for error in errors:
        workspace.warn(str(error))
    if not delete and rows:
        workspace.warn(
            f"{len(rows)} runner(s) left by gitlab-runner-auth; "
            "register-runner prune-legacy --yes deletes them"
        )
    refused = any(not isinstance(e, TransientError) for e in errors)
    return rows, 1 if refused else 3 if errors else 0


def _delete(
    workspace: Workspace,
    url: str,
    runner_id: int,
    host: str,
    known: set[tuple[str, int]],
    errors: list[RegisterRunnerError],
) -> str:
    """Delete one leftover after reading it again; what happened, for the report."""
    api = workspace.api(url)
    try:
        details = api.get_runner(runner_id)
        problem = _not_provably_ours(details, url, runner_id, host, workspace, known)
        if problem:
            workspace.warn(f"runner {runner_id} on {url} is not deleted: {problem}")
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
    workspace: Workspace,
    known: set[tuple[str, int]],
) -> str:
    if not isinstance(details, Mapping):
        return "GitLab no longer has it"
    if not is_legacy_description(details.get("description"), host, workspace.identity.instance):
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
