"""Load: one prefix and instance read from disk (inputs, the host's identity, what the
last runs left: state and output config) into a ``Loaded`` value, and the run's
connections to each GitLab (``GitLab``), passed beside it to the phases that make calls.
Loading touches no network; ``observe`` asks GitLab about the tokens."""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar, Union

from . import inputs, state
from .answers import RateLimits
from .errors import InputError
from .files import check_instance_name, check_secure, exclusive_lock, state_dir
from .hostid import hostname, prefix_key, resolve_system_id
from .inputs import Inputs
from .model import Executor, Identity, Warnings
from .output import ExistingConfig, output_path, read_config
from .parsed import ParsedFiles, parsed_path

log = logging.getLogger(__name__)
# Making a system ID takes milliseconds; a long wait means something is stuck.
SYSTEM_ID_LOCK_WAIT = 30.0
# A refused connection or a failed lookup is retried this long when a good config exists.
GIVE_UP_UNREACHABLE_AFTER = 3.0
# API calls at once unless --jobs says otherwise: one per runner up to this many. Most of a
# sync is waiting for round trips, so fewer waves of them is what makes it fast; 64 stays
# well under what one GitLab serves (and a 429 still pauses every worker).
MAX_JOBS = 64
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Options:
    """What every command that reads a prefix is told on the command line."""

    prefix: Path
    instance: str = "main"
    deadline: float = 30.0
    # The deadline instead when there is no config to keep (a fresh host): its runners
    # cannot start anyway, so it may wait out a rate limit that the deadline would not.
    fresh_deadline: Optional[float] = None
    timeout: float = 10.0
    jobs: Optional[int] = None  # None: one per call up to MAX_JOBS
    force: bool = False
    strict: bool = False
    insecure_permissions: bool = False
    refresh: bool = False
    prune: bool = True
    max_deletions: Optional[int] = None
    capture_tags: Union[str, Path, None] = None  # a .py file, or a module on PYTHONPATH
    tag_schema: Optional[Path] = None


@dataclass(frozen=True)
class Loaded:
    """What ``load`` read for one prefix and instance; no network. The phases take it (and
    the run's ``GitLab`` beside it) and return values of their own: a phase that changes
    the state returns the new one."""

    options: Options
    identity: Identity
    inputs: Inputs
    state: state.State
    config: ExistingConfig
    foreign: bool  # the state and config were copied from another machine
    # Kept for the next run (parsed.save) once the inputs are known good.
    parsed: ParsedFiles = field(default_factory=lambda: ParsedFiles(None))
    warnings: tuple[str, ...] = ()  # what loading found to say

    @property
    def executors(self) -> tuple[Executor, ...]:
        return self.inputs.executors

    @functools.cached_property
    def executors_by_stem(self) -> dict[str, Executor]:
        return {e.stem: e for e in self.executors}

    @functools.cached_property
    def held_stems(self) -> dict[str, str]:
        """Stems whose executor file is bad input, with why: their runners are left as they
        are (no API call, no deletion, their config entry and credentials file kept)."""
        return {bad.stem: f"held: {bad.error}" for bad in self.inputs.bad}

    @property
    def output(self) -> Path:
        return output_path(self.options.prefix, self.options.instance)


class GitLab:
    """The run's connections to every GitLab of the inputs, on one bounded pool. The HTTP
    stack is imported on first use, so that commands that need no network start fast."""

    def __init__(self, loaded: Loaded) -> None:
        self._options, self._clients = loaded.options, loaded.inputs.clients
        self._system_id, self._has_config = loaded.identity.system_id, bool(loaded.config.entries)
        self._pool: Any = None  # gitlab.Pool, made on first use
        # A first import of the HTTP stack from several threads races on Python 3.9 (seen
        # from the zipapp, whose imports are slow): the pool is made once, under this lock.
        self._pool_lock = threading.Lock()

    def __enter__(self) -> GitLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the run's connections to GitLab: a library caller's process goes on."""
        if self._pool is not None:
            self._pool.close()

    @property
    def pool(self) -> Any:
        with self._pool_lock:
            if self._pool is None:
                from .gitlab import Connection, Deadline, Pool

                deadline = self._options.deadline
                if not self._has_config and self._options.fresh_deadline is not None:
                    deadline = self._options.fresh_deadline
                connection = Connection(
                    Deadline(deadline),
                    self._options.timeout,
                    system_id=self._system_id,
                    # With a usable config the runners start without GitLab: a GitLab that
                    # refuses connections or does not resolve is not waited for.
                    give_up_unreachable_after=(
                        GIVE_UP_UNREACHABLE_AFTER if self._has_config else None
                    ),
                )
                self._pool = Pool(connection, self._options.jobs or MAX_JOBS)
            return self._pool

    def rate_limits(self) -> RateLimits:
        """The run's rate-limit counts so far (zero when it made no API call)."""
        with self._pool_lock:
            pool = self._pool
        return pool.connection.pause.counts() if pool is not None else RateLimits()

    def api(self, url: str) -> Any:
        """The GitLab client for ``url``."""
        return self.pool.client(self._clients[url])

    def concurrently(self, work: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``work`` over ``items`` on the run's bounded pool, results in their order."""
        return self.pool.map(work, items)


def check_prefix(options: Options) -> None:
    prefix = options.prefix
    # Before anything is created under the prefix: the instance name becomes a path.
    check_instance_name(options.instance)
    if not prefix.is_dir():
        raise InputError(f"{prefix}: no such folder (--prefix)")
    if not options.insecure_permissions:
        # Whoever can change these chooses where the access token is sent.
        check_secure(prefix)
        check_secure(prefix / options.instance)
        check_secure(inputs.template_path(prefix, options.instance))
        for file in inputs.executor_files(prefix / options.instance):
            check_secure(file)


@contextlib.contextmanager
def _system_id_lock(prefix: Path, read_only: bool) -> Iterator[None]:
    """The system ID is shared by every instance on the prefix, and the instance locks do
    not cover it: two instances making one at first boot would overwrite each other's, and
    the loser would take its own runners for a copied prefix's."""
    if read_only:
        yield
        return
    with exclusive_lock(state_dir(prefix, create=True) / "system-id.lock", SYSTEM_ID_LOCK_WAIT):
        yield


def lock_path(options: Options) -> Path:
    return state_dir(options.prefix, create=True) / f"{options.instance}.lock"


def load(
    options: Options,
    environ: Mapping[str, str],
    *,
    read_only: bool = False,
    isolate: bool = False,
) -> Loaded:
    """The prefix, once ``check_prefix`` has passed (each command checks it first, before
    it takes the lock). ``read_only``: change nothing on disk (``plan``), not even a
    missing system ID file. ``isolate``: a bad executor file holds only its runner
    (``Loaded.held_stems``) instead of stopping the command."""
    prefix = options.prefix
    loaded_state = state.load(prefix, options.instance)
    with _system_id_lock(prefix, read_only):
        # Saved only once the inputs are known good: bad input changes nothing on disk.
        system_id = resolve_system_id(prefix)
        identity = Identity(hostname(), options.instance, system_id.value, prefix_key(prefix))
        parsed = ParsedFiles(None if read_only else parsed_path(prefix, options.instance))
        loaded = inputs.load(
            prefix,
            identity,
            environ,
            capture_tags_file=options.capture_tags,
            tag_schema_file=options.tag_schema,
            check_permissions=not options.insecure_permissions,
            parsed=parsed,
            isolate=isolate,
        )
        identity = loaded.identity
        if not read_only:
            system_id.save()
    config = read_config(output_path(prefix, options.instance), parsed)
    foreign = loaded_state.system_id not in (None, identity.system_id)
    said = Warnings()
    for warning in loaded.warnings:  # service helper: unknown executor keys (inputs.py)
        said.warn(warning)
    if foreign:
        said.warn(
            f"{prefix}: state made under system ID {loaded_state.system_id}, this "
            f"host is {identity.system_id}: the copied runners are left to the host "
            "they came from, and this host registers its own"
        )
        loaded_state = state.State()
    loaded_state.system_id = identity.system_id
    return Loaded(options, identity, loaded, loaded_state, config, foreign, parsed, said.said)
