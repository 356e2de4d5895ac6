"""Keep a host's GitLab runners registered and its config.toml correct.

The Python API (``register_runner.sync``, ``plan``, ``unregister``, ``reset_token``,
``verify``, ``status``, ``prune_legacy``, ``gc``, ``system_id``) is what the CLI does,
without a subprocess; see api.py. Importing the package stays cheap: the API is loaded on
first use, so ``--version`` and ``--help`` never import http.client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import Error, InputError, RefusedError, RegisterRunnerError, TransientError

if TYPE_CHECKING:
    from .api import (
        GcResult,
        PruneResult,
        Result,
        StatusResult,
        VerifyResult,
        gc,
        plan,
        prune_legacy,
        reset_token,
        status,
        sync,
        system_id,
        unregister,
        verify,
    )
    from .model import ActionResult, Kind

__all__ = [
    "ActionResult",
    "Error",
    "GcResult",
    "InputError",
    "Kind",
    "PruneResult",
    "RefusedError",
    "RegisterRunnerError",
    "Result",
    "StatusResult",
    "TransientError",
    "VerifyResult",
    "__version__",
    "gc",
    "plan",
    "prune_legacy",
    "reset_token",
    "status",
    "sync",
    "system_id",
    "unregister",
    "verify",
]
_FROM_MODEL = ("ActionResult", "Kind")


def __getattr__(name: str) -> Any:
    """The API's functions and types, the module holding them imported on first use."""
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(".model" if name in _FROM_MODEL else ".api", __name__), name)
