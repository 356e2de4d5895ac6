"""Load: one prefix and instance read from disk (inputs, the host's identity, what the
last runs left: state and output config) into a ``Loaded`` value, and the run's
connections to each GitLab (``GitLab``), passed beside it to the phases that make calls.
Loading touches no network; ``observe`` asks GitLab about the tokens."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Callable, TypeVar

from . import inputs, state
from .answers import RateLimits
from .errors import InputError
from .files import (
    check_instance_name,
    check_secure,
    check_secure_file,
    exclusive_lock,
    state_dir,
)
from .hostid import hostname, prefix_key, resolve_system_id
from .model import Identity, Loaded, Options, State, Warnings, output_path
from .output import read_config
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
        # Whoever can change these chooses where the access token is sent. An executor
        # file is checked as it is read: one others may write holds only its runner.
        check_secure(prefix)
        check_secure(prefix / options.instance)
        check_secure_file(inputs.template_path(prefix, options.instance))


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
        loaded_state = State()
    loaded_state.system_id = identity.system_id
    return Loaded(options, identity, loaded, loaded_state, config, foreign, parsed, said.said)
