"""The values that cross phase boundaries (load, observe, reconcile, apply, record) and
the API's results: dataclasses and their pure methods only. Behaviour that needs other
modules (reading, writing, talking to GitLab) lives in those modules, as functions.

One package, a module per theme; everything is re-exported here, so ``from .model
import X`` is the one spelling."""

from __future__ import annotations

from .inputs import (
    BadFile,
    ExistingConfig,
    Globals,
    Inputs,
    Loaded,
    Options,
    output_path,
)
from .plan import (
    CONFIG_ROW,
    Action,
    ActionResult,
    Kind,
    Observed,
    Plan,
    Warnings,
)
from .results import (
    GcResult,
    Outcome,
    PruneResult,
    RateLimits,
    Result,
    Run,
    StatusResult,
    VerifyResult,
)
from .runners import (
    MARKER_START,
    REGISTRATION_ATTRIBUTES,
    RUNNER_TYPES,
    AccessTokenCheck,
    ClientConfig,
    Credentials,
    Evidence,
    Executor,
    Identity,
    RunnerKey,
    RunnerState,
    Scope,
    Verdict,
    carries_marker,
    earlier_marker,
    normalize_url,
)
from .state import (
    PendingCreate,
    PendingDelete,
    PendingReset,
    State,
    StoredRunner,
    UnwrittenToken,
    typed,
)

__all__ = [
    "CONFIG_ROW",
    "MARKER_START",
    "REGISTRATION_ATTRIBUTES",
    "RUNNER_TYPES",
    "AccessTokenCheck",
    "Action",
    "ActionResult",
    "BadFile",
    "ClientConfig",
    "Credentials",
    "Evidence",
    "Executor",
    "ExistingConfig",
    "GcResult",
    "Globals",
    "Identity",
    "Inputs",
    "Kind",
    "Loaded",
    "Observed",
    "Options",
    "Outcome",
    "PendingCreate",
    "PendingDelete",
    "PendingReset",
    "Plan",
    "PruneResult",
    "RateLimits",
    "Result",
    "Run",
    "RunnerKey",
    "RunnerState",
    "Scope",
    "State",
    "StatusResult",
    "StoredRunner",
    "UnwrittenToken",
    "Verdict",
    "VerifyResult",
    "Warnings",
    "carries_marker",
    "earlier_marker",
    "normalize_url",
    "output_path",
    "typed",
]
