"""Keep a host's GitLab runners registered and its config.toml correct.

The Python API (``register_runner.sync``, ``register_runner.plan``) is what the CLI does,
without a subprocess; see api.py. Importing the package stays cheap: the API is loaded on
first use, so ``--version`` and ``--help`` never import http.client.
"""

from __future__ import annotations

from typing import Any

from ._version import __version__
from .errors import Error, InputError, RefusedError, RegisterRunnerError, TransientError

__all__ = [
    "Error",
    "InputError",
    "RefusedError",
    "RegisterRunnerError",
    "TransientError",
    "__version__",
    "gc",
    "plan",
    "sync",
]


def sync(*args: Any, **kwargs: Any) -> Any:
    """See ``register_runner.api.sync``."""
    from .api import sync as run

    return run(*args, **kwargs)


def plan(*args: Any, **kwargs: Any) -> Any:
    """See ``register_runner.api.plan``."""
    from .api import plan as run

    return run(*args, **kwargs)


def gc(*args: Any, **kwargs: Any) -> Any:
    """See ``register_runner.api.gc``."""
    from .api import gc as run

    return run(*args, **kwargs)
