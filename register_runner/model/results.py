"""What each phase and each command ends with: the Outcome apply returns, the last-run
record (Run), and the typed results of the API's functions."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Optional

from .plan import Action, ActionResult
from .state import State

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RateLimits:
    """How a run fared with GitLab's rate limit: the 429 answers it got, and the seconds
    its calls stood still for the limit (a 429's Retry-After, or pacing as the budget ran
    low; counted once however many workers waited together)."""

    limited: int = 0
    waited: float = 0.0


@dataclass
class Run:
    """One run's outcome, as recorded."""

    time: datetime
    exit_status: int
    runners: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    access_tokens: dict[str, Optional[str]] = field(default_factory=dict)  # url → ISO date
    rejected_access_tokens: list[str] = field(default_factory=list)  # urls: 401 this run
    # GitLab failed and the config of an earlier run was left in place.
    config_kept: bool = False
    # Changes made by every run recorded so far (kind → count), carried from run to run.
    changes_total: dict[str, int] = field(default_factory=dict)
    rate_limits: RateLimits = field(default_factory=RateLimits)


@dataclass
class Outcome:
    """What a run did, for the exit status and the report."""

    records: list[ActionResult] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # a person must act: exit 1
    failing: list[str] = field(default_factory=list)  # GitLab failing: exit 0 or 3
    wrote: bool = False
    entries: int = 0
    warnings: list[str] = field(default_factory=list)
    state: State = field(default_factory=State)  # as saved
    # What observe said already: logged once per run, not again by apply.
    said_before: tuple[str, ...] = ()

    def warn(self, message: str) -> None:
        """Say it once per run."""
        if message not in self.warnings:
            self.warnings.append(message)
            if message not in self.said_before:
                log.warning("%s", message)

    def refuse(self, message: str) -> None:
        self.refused.append(message)
        log.error("event=refused %s", message)

    def record(
        self,
        action: Action,
        result: str,
        *,
        new_id: Optional[int] = None,
        error: Optional[str] = None,
        token: Optional[str] = None,
    ) -> None:
        self.records.append(
            ActionResult(
                action.kind,
                action.stem,
                action.runner_id,
                result,
                action.reason,
                new_id,
                error,
                action.changes,
                token,
            )
        )

    @property
    def changed(self) -> bool:
        """GitLab or the config was changed."""
        return self.wrote or any(record.mutated for record in self.records)


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
    recorded: Optional[Run] = None  # sync, unregister, reset-token: the last-run record


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


@dataclass(frozen=True)
class PruneResult:
    """What ``prune_legacy`` found (and, with ``yes``, deleted): one ``delete`` action per
    runner gitlab-runner-auth left, ``result`` "planned", "done", "already gone",
    "skipped" (no longer provably a leftover) or "failed"."""

    exit_status: int  # what the CLI exits with
    actions: tuple[ActionResult, ...]
    warnings: tuple[str, ...]
    dry_run: bool

    @property
    def deleted(self) -> int:
        return sum(1 for action in self.actions if action.result == "done")


@dataclass(frozen=True)
class VerifyResult:
    """What ``verify`` found: one ``verify`` action per token, ``result`` "valid",
    "invalid" or "unknown" (with a warning saying why)."""

    exit_status: int  # 0 all valid, 1 one invalid, 3 one could not be told
    actions: tuple[ActionResult, ...]
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class StatusResult:
    """The last run's record, and what ``status`` exits with for it."""

    exit_status: int  # 0 every runner can take jobs, 1 a person must act, 3 not known
    run: Run
    healthy: bool
