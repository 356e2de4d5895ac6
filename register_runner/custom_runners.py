"""Runners that are not gitlab-runner (an executor file with ``credentials_file``): the
hooks that read their credentials back, write them, and remove them with their runner.

Such a runner is registered, verified, updated, rotated and deleted like any other; only
where its token lives differs: in its credentials file, never in the config. The file is
read back every run like the config, so a token the runner rotated itself (and wrote back)
is verified and kept, not reverted. Which files this tool wrote is kept in the state, so
that a file is removed with its runner also once the executor file naming it is gone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from . import _version, credentials
from . import state as state_file
from .errors import InputError, RegisterRunnerError
from .model import ActionResult, Credentials, Executor, Kind, Observed, Plan, StoredRunner
from .secret import Secret
from .state import State
from .timeutil import now_utc, parse_timestamp

if TYPE_CHECKING:
    from .workspace import Loaded

log = logging.getLogger(__name__)
NEW_TOKEN = (Kind.CREATE, Kind.RECREATE, Kind.ROTATE)


@dataclass(frozen=True)
class FileCredentials:
    """What a credentials file this tool wrote holds."""

    url: str
    id: Optional[int]
    system_id: str
    credentials: Optional[Credentials]
    first_line: str
    tls_ca_file: Optional[str] = None


def is_custom(executor: Optional[Executor]) -> bool:
    return executor is not None and executor.credentials_file is not None


def custom_stems(loaded: Loaded) -> set[str]:
    """Stems whose token lives in a credentials file, now or until this run removes it."""
    return {e.stem for e in loaded.executors if is_custom(e)} | set(loaded.state.credentials_files)


def read_file(path: Path) -> Optional[FileCredentials]:
    """The credentials in ``path``; None when there is no file, it cannot be read (a FIFO,
    a folder: an executor file naming it is held at load) or it is not this tool's."""
    try:
        raw = credentials.read(path)
    except RegisterRunnerError:
        return None
    if raw is None or not credentials.ours(raw):
        return None
    values = credentials.parse(raw)
    token = values.get("RUNNER_TOKEN", "")
    expires = values.get("RUNNER_TOKEN_EXPIRES_AT", "")
    raw_id = values.get("RUNNER_ID", "")
    return FileCredentials(
        values.get("GITLAB_URL", "").rstrip("/"),
        int(raw_id) if raw_id.isdigit() else None,
        values.get("RUNNER_SYSTEM_ID", ""),
        Credentials(
            Secret(token),
            # None when a runner rewrote the file without it: written as now on this run.
            parse_timestamp(values.get("RUNNER_TOKEN_OBTAINED_AT", "")),
            parse_timestamp(expires) if expires else None,
        )
        if token
        else None,
        raw.split(b"\n", 1)[0].decode("utf-8", errors="replace"),
        values.get("GITLAB_TLS_CA_FILE") or None,
    )


def _paths(loaded: Loaded, stem: str) -> list[Path]:
    """Where a stem's credentials may be: the file its executor names, and the one this
    tool last wrote for it (the executor file moved it, or stopped naming one)."""
    executor = loaded.executors_by_stem.get(stem)
    found = [executor.credentials_file] if executor is not None and is_custom(executor) else []
    stored = loaded.state.credentials_files.get(stem)
    return [Path(p) for p in dict.fromkeys([*found, stored]) if p]


def read_back(loaded: Loaded, stem: str, url: str, runner_id: int) -> Optional[Credentials]:
    """The token the credentials file holds for that runner (url and id must match)."""
    for path in _paths(loaded, stem):
        found = read_file(path)
        if found and found.credentials and (found.url, found.id) == (url, runner_id):
            return found.credentials
    return None


def adopt(loaded: Loaded, executor: Executor) -> Optional[tuple[int, Credentials]]:
    """A runner whose state was lost, found by its credentials file: only one this tool
    wrote for this host (system ID), instance and executor, for the executor's GitLab."""
    if not is_custom(executor) or loaded.foreign:
        return None
    found = read_file(Path(str(executor.credentials_file)))
    if (
        found is None
        or found.credentials is None
        or found.id is None
        or found.url != executor.url
        or found.system_id != loaded.identity.system_id
        or f" {loaded.identity.instance}/{executor.stem};" not in found.first_line
    ):
        return None
    return found.id, found.credentials


def stored_credentials(st: State, stem: str, url: str, runner_id: int) -> Optional[Credentials]:
    """For commands that read no inputs (verify, status): the credentials file last
    written for ``stem``, if it holds that runner."""
    path = st.credentials_files.get(stem)
    found = read_file(Path(path)) if path else None
    if found and (found.url, found.id) == (url, runner_id):
        return found.credentials
    return None


def stored_files(st: State) -> Iterable[tuple[str, FileCredentials]]:
    """(stem, what its file holds) for every credentials file in the state."""
    for stem, path in sorted(st.credentials_files.items()):
        found = read_file(Path(path))
        if found is not None:
            yield stem, found


def _values(loaded: Loaded, stored: StoredRunner, token: Credentials) -> dict[str, str]:
    client = loaded.inputs.clients.get(stored.url)
    values = {
        "GITLAB_URL": stored.url,
        "RUNNER_ID": str(stored.id),
        "RUNNER_TOKEN": token.token.reveal(),
        "RUNNER_SYSTEM_ID": loaded.identity.system_id,
        "RUNNER_TOKEN_OBTAINED_AT": _iso(token.obtained_at or now_utc()),
        "RUNNER_TOKEN_EXPIRES_AT": _iso(token.expires_at) if token.expires_at else "",
    }
    if client is not None and client.tls_ca_file:
        values["GITLAB_TLS_CA_FILE"] = client.tls_ca_file
    return values


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _observed(observed: Observed, stem: str, stored: StoredRunner) -> Optional[Credentials]:
    runner = observed.runners.get(stem)
    if runner is None or runner.token is None or (runner.url, runner.id) != (stored.url, stored.id):
        return None
    return Credentials(runner.token, runner.token_obtained_at, runner.token_expires_at)


def _current(path: Path) -> Optional[dict[str, str]]:
    raw = credentials.read(path)
    if raw is None:
        return None
    if not credentials.ours(raw):
        raise InputError(
            f"{path}: replaced by a file register-runner did not write; it is left alone"
        )
    values = credentials.parse(raw)
    return {key: values[key] for key in credentials.KEYS if key in values}


def write_files(
    loaded: Loaded,
    observed: Observed,
    runners: Mapping[str, StoredRunner],
    fresh: Mapping[str, Credentials],
) -> tuple[list[ActionResult], int, dict[str, str]]:
    """Write the credentials file of every custom runner that has a runner and a token, and
    remove the files this tool wrote whose runner is gone (or moved to another file).
    Returns what was done, how many custom runners have their credentials in place, and
    the files that could not be written (stem → why): a person must act, and the token
    waits in the state. A held runner's file is left as it is. A file is not rewritten
    when its values would not change; one the runner rewrote while this run worked is
    left for the next run to take over."""
    st = loaded.state
    wanted = {e.stem: e for e in loaded.executors if is_custom(e) and e.stem in runners}
    keep = {str(e.credentials_file) for e in wanted.values()}
    records = []
    failed: dict[str, str] = {}
    for stem, file in sorted(st.credentials_files.items()):
        executor = wanted.get(stem)
        if stem in loaded.held_stems or (
            executor is not None and executor.credentials_file == file
        ):
            continue
        del st.credentials_files[stem]
        try:
            removed = file not in keep and credentials.remove(Path(file))
        except RegisterRunnerError as error:
            failed[stem] = f"{error} (not removed)"
            continue
        if removed:
            log.info("event=credentials_removed runner=%s path=%s", stem, file)
            records.append(ActionResult(Kind.WRITE, stem, None, "done", f"{file} removed"))
    in_place = 0
    for stem, executor in sorted(wanted.items()):
        stored = runners[stem]
        token = fresh.get(stem) or _observed(observed, stem, stored)
        if token is None:
            continue
        in_place += 1
        path = Path(str(executor.credentials_file))
        values = _values(loaded, stored, token)
        try:
            current = _current(path)
        except RegisterRunnerError as error:
            # Only a file put there while this run worked gets here (load holds the rest):
            # the token is a new one, in the state.
            failed[stem] = f"{error} (the runner's token is kept for the next run)"
            in_place -= 1
            continue
        st.credentials_files[stem] = str(path)
        if current == values:
            continue
        if stem not in fresh and current is not None:
            known = observed.runners[stem].token
            if current.get("RUNNER_TOKEN") != (known.reveal() if known else None):
                log.info(
                    "event=credentials_changed runner=%s path=%s: rewritten by the runner "
                    "while register-runner worked; taken over on the next run",
                    stem,
                    path,
                )
                continue
        # Known before it is written: a crash in between still removes it with its runner.
        state_file.save(loaded.options.prefix, loaded.options.instance, st)
        first = credentials.header(
            _version.__version__, loaded.identity.host, loaded.identity.instance, stem
        )
        try:
            credentials.write(path, credentials.render(first, values), executor.credentials_owner)
        except RegisterRunnerError as error:
            failed[stem] = f"{error} (the runner's token is kept for the next run)"
            in_place -= 1
            continue
        log.info("event=credentials_written runner=%s id=%s path=%s", stem, stored.id, path)
        records.append(ActionResult(Kind.WRITE, stem, stored.id, "done", f"{path} written"))
    state_file.save(loaded.options.prefix, loaded.options.instance, st)
    return records, in_place, failed


def in_place(loaded: Loaded, observed: Observed) -> int:
    """Custom runners whose token is in their file (a held run writes nothing)."""
    return sum(
        1
        for e in loaded.executors
        if is_custom(e)
        and e.stem in observed.runners
        and observed.runners[e.stem].token is not None
    )


def planned_files(loaded: Loaded, observed: Observed, plan: Plan) -> list[ActionResult]:
    """The credentials files a sync would write or remove, for ``plan``."""
    if plan.held:
        return []
    kinds = {a.stem: a.kind for a in plan.actions}
    rows = []
    wanted = {}
    for executor in sorted(loaded.executors, key=lambda e: e.stem):
        runner = observed.runners.get(executor.stem)
        if not is_custom(executor) or (runner is None and kinds.get(executor.stem) is None):
            continue
        wanted[executor.stem] = executor.credentials_file
        path = Path(str(executor.credentials_file))
        if kinds.get(executor.stem) in NEW_TOKEN:
            reason = f"{path}: new token"
        elif runner is not None and runner.token is not None:
            stored = StoredRunner(runner.id, runner.url, runner.scope, dict(runner.applied))
            token = Credentials(runner.token, runner.token_obtained_at, runner.token_expires_at)
            if _current(path) == _values(loaded, stored, token):
                continue
            reason = f"{path}: changes"
        else:
            continue
        rows.append(
            ActionResult(
                Kind.WRITE, executor.stem, runner.id if runner else None, "planned", reason
            )
        )
    for stem, file in sorted(loaded.state.credentials_files.items()):
        if (
            stem not in loaded.held_stems
            and wanted.get(stem) != file
            and file not in wanted.values()
        ):
            found = read_file(Path(file))
            if found is not None:
                rows.append(ActionResult(Kind.WRITE, stem, found.id, "planned", f"{file}: remove"))
    return rows
