"""A fake GitLab (REST API v4) for end-to-end tests, demos and benchmarks.

It is a real HTTP server on 127.0.0.1 that implements everything a runner
registration tool touches: ``POST /user/runners``, the legacy ``POST /runners``,
the runner-token endpoints (verify, delete, managers, reset), the PAT runner
endpoints (lists with filters and GitLab's pagination, details, update, delete,
managers, reset) and ``POST /jobs/request``. Access-token scopes and roles
(admin, group Owner, project Maintainer) are enforced the way GitLab does, and
faults can be injected: latency, failing requests, an unreachable server,
requests held in flight, rate limiting, and misbehaving answers (dropped, garbled,
trickled, oversized, redirected, echoed, an HTML page). It serves https with
``tls=TLSFiles(...)``.

Python API::

    with FakeGitLab() as gl:
        pat = gl.add_access_token(scopes=("api",), admin=True)
        ...  # talk to gl.url over HTTP
        gl.runners(), gl.requests, gl.mutating_requests()

Command line::

    python -m register_runner.testing.fake_gitlab --port 8080

Standard library only; runs on Python 3.9.

Layout: ``model`` (data, GitLab's validation rules), ``store`` (state edits,
authorisation, payloads), ``routes`` (the endpoints), ``faults`` and ``misbehave``
(what tests inject), ``server`` (HTTP and TLS), ``fake`` (FakeGitLab), ``cli``.
"""

from __future__ import annotations

from .cli import main
from .fake import FakeGitLab
from .faults import Block
from .model import Request, Runner
from .server import TLSFiles

__all__ = ["Block", "FakeGitLab", "Request", "Runner", "TLSFiles", "main"]
