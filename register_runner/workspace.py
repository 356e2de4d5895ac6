"""One prefix and instance, loaded: inputs, the host's identity, what the last runs left
(state and output config), and clients for each GitLab. Loading touches no network;
``observe`` asks GitLab about the tokens."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

from . import inputs, migrate, state, tags
from .errors import InputError, RegisterRunnerError
from .files import check_secure, state_dir
from .hostid import hostname, resolve_system_id
from .inputs import Identity, Inputs
from .model import REGISTRATION_ATTRIBUTES, Executor, Observed, Plan, RunnerState, Verdict
from .output import ExistingConfig, credentials_of, now_utc, output_path, read_config
from .reconcile import reconcile

log = logging.getLogger(__name__)
# Workers ask for clients at once; a first import from several threads races on Python 3.9
# (seen from the zipapp, whose imports are slow).
_api_lock = threading.Lock()
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Options:
    """What every command that reads a prefix is told on the command line."""

    prefix: Path
    instance: str = "main"
    deadline: float = 30.0
    timeout: float = 10.0
    jobs: int = 16
    force: bool = False
    strict: bool = False
    insecure_permissions: bool = False
    refresh: bool = False
    prune: bool = True
    max_deletions: Optional[int] = None
    capture_tags: Optional[Path] = None
    tag_schema: Optional[Path] = None

    @classmethod
    def from_args(cls, args: Any) -> Options:
        return cls(
            **{
                name: getattr(args, name)
                for name in cls.__dataclass_fields__
                if hasattr(args, name)
            }
        )


@dataclass
class Workspace:
    options: Options
    identity: Identity
    inputs: Inputs
    state: state.State
    config: ExistingConfig
    foreign: bool  # the state and config were copied from another machine
    warnings: list[str] = field(default_factory=list)
    _apis: dict[str, Any] = field(default_factory=dict)
    _connection: Any = None

    @property
    def executors(self) -> tuple[Executor, ...]:
        return self.inputs.executors

    @property
    def output(self) -> Path:
        return output_path(self.options.prefix, self.options.instance)

    def warn(self, message: str) -> None:
        """Say it once per run."""
        if message not in self.warnings:
            self.warnings.append(message)
            log.warning("%s", message)

    def api(self, url: str) -> Any:
        """The GitLab client for ``url``, all sharing one deadline and one 429 pause.
        python-gitlab is imported on first use, so that commands that need no network
        start fast, and under a lock, because workers ask at once."""
        with _api_lock:
            if url not in self._apis:
                from .gitlab import Connection, Deadline, GitLab

                if self._connection is None:
                    self._connection = Connection(
                        Deadline(self.options.deadline),
                        self.options.timeout,
                        system_id=self.identity.system_id,
                    )
                self._apis[url] = GitLab(self.inputs.clients[url], self._connection)
            return self._apis[url]

    def concurrently(self, work: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``work`` over ``items`` on the bounded pool; results in the order of ``items``, so
        what is written never depends on which call finished first."""
        items = list(items)
        if len(items) <= 1 or self.options.jobs <= 1:
            return [work(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(self.options.jobs, len(items))) as pool:
            return list(pool.map(work, items))


def check_prefix(options: Options) -> None:
    prefix = options.prefix
    if not prefix.is_dir():
        raise InputError(f"{prefix}: no such folder (--prefix)")
    if not options.insecure_permissions:
        # Whoever can change these chooses where the access token is sent.
        check_secure(prefix)
        check_secure(prefix / options.instance)
        check_secure(inputs.template_path(prefix, options.instance))
        for file in inputs.executor_files(prefix / options.instance):
            check_secure(file)
        # Code this tool runs with the access token in reach.
        origin = tags.capture_origin(options.capture_tags) if options.capture_tags else None
        if origin is not None:
            check_secure(origin)


def lock_path(options: Options) -> Path:
    return state_dir(options.prefix, create=True) / f"{options.instance}.lock"


def load(options: Options, environ: Mapping[str, str], *, read_only: bool = False) -> Workspace:
    """The prefix, once ``check_prefix`` has passed (each command checks it first, before
    it takes the lock). ``read_only``: change nothing on disk (``plan``), not even a
    missing system ID file."""
    prefix = options.prefix
    loaded_state = state.load(prefix, options.instance)
    # Saved only once the inputs are known good: bad input changes nothing on disk.
    system_id = resolve_system_id(prefix)
    identity = Identity(hostname(), options.instance, system_id.value)
    loaded = inputs.load(
        prefix,
        identity,
        environ,
        capture_tags_file=options.capture_tags,
        tag_schema_file=options.tag_schema,
    )
    config = read_config(output_path(prefix, options.instance))
    if not read_only:
        system_id.save()
    foreign = loaded_state.system_id not in (None, identity.system_id)
    workspace = Workspace(options, identity, loaded, loaded_state, config, foreign)
    if foreign:
        workspace.warn(
            f"{prefix}: state made under system ID {loaded_state.system_id}, this "
            f"host is {identity.system_id}: the copied runners are left to the host "
            "they came from, and this host registers its own"
        )
        workspace.state = state.State()
    workspace.state.system_id = identity.system_id
    return workspace


def plan_changes(workspace: Workspace) -> tuple[Observed, Plan]:
    """What ``plan`` shows and ``sync`` applies: observe, then reconcile."""
    options = workspace.options
    check_not_emptied(workspace)
    observed = observe(workspace, known_runners(workspace), refresh=options.refresh)
    plan = reconcile(
        workspace.executors,
        observed,
        now=now_utc(),
        force=options.force,
        prune=options.prune,
        max_deletions=options.max_deletions,
    )
    for warning in plan.warnings:
        workspace.warn(warning)
    return observed, plan


def check_not_emptied(workspace: Workspace) -> None:
    """An unmounted disk or a half-finished deploy must not wipe a host's runners."""
    if workspace.executors or workspace.options.force:
        return
    known = len(workspace.state.runners) or len(workspace.config.entries)
    if known:
        raise InputError(
            f"{workspace.inputs.executor_dir}: no executor files, but {known} "
            "runner(s) exist; refusing to delete them all (pass --force if that "
            "is the intention, or use unregister)"
        )


def known_runners(workspace: Workspace) -> dict[str, RunnerState]:
    """This host's runners by stem, from the state and the tokens in the output config.

    A config entry the state does not know is adopted when its name is the one an executor
    would get (a config from LLNL's gitlab-runner-auth, or a state lost); any other entry
    is not this tool's and is dropped from the output, never deleted in GitLab.
    """
    entries = {} if workspace.foreign else workspace.config.by_id()
    runners: dict[str, RunnerState] = {}
    for stem, stored in workspace.state.runners.items():
        entry = entries.pop(stored.id, None)
        credentials = credentials_of(entry) if entry and _same_url(entry, stored.url) else None
        runners[stem] = RunnerState(
            stem,
            stored.id,
            stored.url,
            stored.scope,
            stored.applied,
            credentials.token if credentials else None,
            credentials.obtained_at if credentials else None,
            credentials.expires_at if credentials else None,
        )
    adopted = migrate.adopt_legacy(workspace, runners)
    for runner in adopted.values():
        entries.pop(runner.id, None)
    runners.update(adopted)
    by_name = {e.name: e for e in workspace.executors if e.stem not in runners}
    for runner_id, entry in sorted(entries.items()):
        executor = by_name.get(entry.get("name", ""))
        credentials = credentials_of(entry)
        if executor and credentials and _same_url(entry, executor.url):
            log.info(
                "event=adopt runner=%s id=%s: config entry without state, adopted by name",
                executor.stem,
                runner_id,
            )
            runners[executor.stem] = RunnerState(
                executor.stem,
                runner_id,
                executor.url,
                executor.scope,
                {},
                credentials.token,
                credentials.obtained_at,
                credentials.expires_at,
            )
            del by_name[executor.name]
        else:
            workspace.warn(
                f"{workspace.output}: entry {entry.get('name')!r} (runner "
                f"{runner_id}) was not made by register-runner for this host; it is "
                "dropped from the config and left alone in GitLab"
            )
    return runners


def _same_url(entry: Mapping[str, Any], url: str) -> bool:
    return str(entry.get("url", "")).rstrip("/") == url


def observe(
    workspace: Workspace, runners: Mapping[str, RunnerState], *, refresh: bool = False
) -> Observed:
    """Verify every token we hold with the host's system ID, concurrently. ``refresh``:
    also read each runner's attributes from GitLab, so that a change made there by hand
    is seen as drift (otherwise drift is judged against what this tool last applied)."""
    urls = {e.stem: e.url for e in workspace.executors}
    to_check = [
        s
        for s in runners.values()
        if s.token is not None and s.stem in urls and s.url == urls[s.stem]
    ]

    def check(runner: RunnerState) -> RunnerState:
        verdict, _ = workspace.api(runner.url).verify(runner.token, workspace.identity.system_id)
        if refresh and verdict is Verdict.VALID:
            return replace(runner, verdict=verdict, applied=_in_gitlab(workspace, runner))
        return replace(runner, verdict=verdict)

    checked = {r.stem: r for r in workspace.concurrently(check, to_check)}
    observed = Observed(pending_deletes=list(workspace.state.pending_deletes))
    for stem, runner in runners.items():
        observed.runners[stem] = checked.get(stem, runner)
    unknown = sorted(stem for stem, r in checked.items() if r.verdict is Verdict.UNKNOWN)
    if unknown:
        workspace.warn(
            f"could not verify {len(unknown)} token(s) ({', '.join(unknown)}): "
            "GitLab unreachable or failing; they are kept as they are"
        )
    return observed


def _in_gitlab(workspace: Workspace, runner: RunnerState) -> Mapping[str, Any]:
    """The registration attributes GitLab holds for ``runner``; what was last applied if
    GitLab would not say."""
    try:
        details = workspace.api(runner.url).get_runner(runner.id)
    except RegisterRunnerError as error:
        workspace.warn(f"--refresh: cannot read runner attributes from GitLab: {error}")
        return runner.applied
    if details is None:
        return runner.applied
    return {key: details.get(key) for key in REGISTRATION_ATTRIBUTES if key in details}
