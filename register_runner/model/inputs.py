"""What a run starts from: the options it is given, the inputs it reads (template and
executor files), the config the last run wrote, and all of it loaded together."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from .runners import ClientConfig, Executor, Identity, RunnerKey, normalize_url
from .state import State

if TYPE_CHECKING:
    # Types only: the model stays a leaf that ``--version`` imports without them.
    from ..parsed import ParsedFiles
    from ..tags import TagPolicy


@dataclass(frozen=True)
class Globals:
    """The template minus client_configs and [register_runner]: its values, and its text,
    which output.template_document parses (keeping comments and order) only to write a
    config."""

    path: Path
    text: str
    content: Mapping[str, Any]


@dataclass(frozen=True)
class BadFile:
    """An executor file that is bad input: its runner (by stem) is held as it is."""

    stem: str
    path: Path
    error: str  # the one line naming the file (and line and value)


@dataclass(frozen=True)
class Inputs:
    template_path: Path
    globals: Globals
    clients: Mapping[str, ClientConfig]
    executors: tuple[Executor, ...]
    executor_dir: Path
    identity: Identity  # the one given, with the template's host name if it sets one
    tag_policy: TagPolicy
    warnings: tuple[str, ...] = ()  # for the run's warnings: nothing wrong enough to stop
    bad: tuple[BadFile, ...] = ()  # only with isolate: the files whose runners are held


def output_path(prefix: Path, instance: str) -> Path:
    return prefix / f"config.{instance}.toml"


@dataclass
class ExistingConfig:
    path: Path
    raw: Optional[bytes] = None
    content: Optional[dict[str, Any]] = None  # parsed once, as plain values

    @property
    def entries(self) -> list[dict[str, Any]]:
        return (self.content or {}).get("runners", [])

    def by_key(self) -> dict[RunnerKey, dict[str, Any]]:
        """Entries by (GitLab url, id): ids alone collide across GitLabs."""
        return {
            (normalize_url(str(e.get("url", ""))), e["id"]): e
            for e in self.entries
            if isinstance(e.get("id"), int) and not isinstance(e.get("id"), bool)
        }


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
    jobs: Optional[int] = None  # None: one per call up to workspace.MAX_JOBS
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
    state: State
    config: ExistingConfig
    foreign: bool  # the state and config were copied from another machine
    # Kept for the next run (parsed.save) once the inputs are known good.
    parsed: ParsedFiles
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
