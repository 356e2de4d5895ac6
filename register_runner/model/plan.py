"""What reconcile is given (Observed) and what it decides (Plan, its Actions), and the
rows a run reports (ActionResult)."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from typing import Any, Optional

from .runners import AccessTokenCheck, Evidence, RunnerState, Verdict
from .state import PendingDelete

log = logging.getLogger(__name__)


class Kind(str, enum.Enum):
    """What an action does. A str, so that ``kind == "create"`` holds and JSON carries the
    value."""

    CREATE = "create"
    KEEP = "keep"
    UPDATE = "update"
    ROTATE = "rotate"
    RECREATE = "recreate"
    DELETE = "delete"
    WAIT = "wait"  # an earlier create's outcome is unknown: nothing is sent until it is
    # Rows of a report only, never in a Plan:
    WRITE = "write"  # the config, or a custom runner's credentials file
    LEFTOVER = "leftover"  # a runner gitlab-runner-auth left (plan)
    VERIFY = "verify"  # a token checked


@dataclass(frozen=True)
class Action:
    kind: Kind
    stem: str
    reason: str = ""
    runner_id: Optional[int] = None  # the existing runner kept, updated, replaced or deleted
    changes: tuple[tuple[str, Any, Any], ...] = ()  # (attribute, old, new): UPDATE, ROTATE

    @property
    def mutates(self) -> bool:
        return self.kind not in (Kind.KEEP, Kind.WAIT)


# The runner column of the row about the output config itself, in plan and sync alike.
CONFIG_ROW = "(config)"


@dataclass(frozen=True)
class ActionResult:
    """One action of a run: ``kind`` (create, keep, update, rotate, recreate, delete,
    wait), ``runner`` (the executor file stem), ``id`` (the runner it acted on; for a
    create or recreate ``new_id`` is the new one), ``result`` ("planned" for plan; else
    done, kept, waiting, refused, skipped, forgotten, …)."""

    kind: Kind
    runner: str
    id: Optional[int]
    result: str
    reason: str = ""
    new_id: Optional[int] = None
    error: Optional[str] = None
    changes: tuple[tuple[str, Any, Any], ...] = ()
    token: Optional[str] = None  # the new token, masked

    @property
    def mutated(self) -> bool:
        return self.result in ("done", "old runner deleted") and self.kind not in (
            Kind.KEEP,
            Kind.WAIT,
        )

    def as_row(self) -> dict[str, Any]:
        """The row ``--json`` and the table print: the same keys for every kind of row
        and every command (None where a key does not apply), a stable interface."""
        return {
            "action": self.kind.value,
            "runner": self.runner,
            "id": self.id,
            "new_id": self.new_id,
            "reason": self.reason,
            "result": self.result,
            "error": self.error,
            "changes": [{"attribute": k, "old": old, "new": new} for k, old, new in self.changes],
            "token": self.token,
        }


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    warnings: tuple[str, ...] = ()
    held: bool = False  # the mass-invalid guard stopped every create and delete
    refusals: tuple[str, ...] = ()  # what a person must fix before this plan can converge
    # GitLabs whose access token was rejected: nothing that needs it is sent there.
    blocked: frozenset[str] = frozenset()

    def of_kind(self, *kinds: Kind) -> list[Action]:
        return [a for a in self.actions if a.kind in kinds]

    @property
    def mutates(self) -> bool:
        return any(a.mutates for a in self.actions)


@dataclass
class Observed:
    """Everything reconcile needs to know about the present, gathered by I/O beforehand."""

    runners: dict[str, RunnerState] = field(default_factory=dict)
    pending_deletes: list[PendingDelete] = field(default_factory=list)
    # Stems whose create may have happened without this host learning the outcome.
    unresolved: frozenset[str] = frozenset()
    # Asked only when the mass-invalid guard would hold: stem → what GitLab said.
    evidence: dict[str, Evidence] = field(default_factory=dict)
    access_tokens: dict[str, AccessTokenCheck] = field(default_factory=dict)  # by url
    warnings: tuple[str, ...] = ()

    @property
    def unverified(self) -> bool:
        """Some token could not be checked: GitLab was failing."""
        return any(r.verdict is Verdict.UNKNOWN for r in self.runners.values())

    @property
    def failing(self) -> bool:
        """GitLab failed this run: a token could not be checked, or a create's outcome is
        still unknown (exit as for "GitLab failing", never 1)."""
        return self.unverified or bool(self.unresolved)


class Warnings:
    """One phase's warnings, in order and each once, logged as they are said; the phase
    returns ``said`` in its value."""

    def __init__(self) -> None:
        self._said: list[str] = []

    def warn(self, message: str) -> None:
        if message not in self._said:
            self._said.append(message)
            log.warning("%s", message)

    @property
    def said(self) -> tuple[str, ...]:
        return tuple(self._said)
