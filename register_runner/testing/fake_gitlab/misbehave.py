"""Misbehaving answers (``FakeGitLab.misbehave``): what a broken GitLab, proxy or captive
portal does to a request. Each kind either replaces the request ("not handled": GitLab's
state does not change) or changes how the real answer is delivered ("handled": the request
had its effect first, e.g. a runner was created, and only the answer goes wrong)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Optional

from .model import _json
from .server import _Answer

# kind -> (handled, default options)
KINDS: dict[str, tuple[bool, dict[str, Any]]] = {
    "drop_after": (True, {}),
    "garbage": (True, {"status": None, "body": None, "content_type": "application/json"}),
    "redirect": (False, {"status": 302, "location": None}),
    "echo": (False, {"status": 500}),
    "trickle": (True, {"chunk": 1, "interval": 1.0, "headers": False}),
    "html": (False, {"status": 200}),
    "oversize": (True, {"status": 200, "size": 64 * 1024 * 1024}),
}

# Where a redirect goes when the test gives no location: a host that cannot resolve
# (RFC 2606), so that a client following it fails instead of reaching anything.
DEFAULT_REDIRECT_ORIGIN = "http://gitlab.invalid"

SIGN_IN_PAGE = b"""<!DOCTYPE html>
<html class="devise-layout-html">
<head><meta charset="utf-8"><title>Sign in \xc2\xb7 GitLab</title></head>
<body class="login-page">
<form class="new_user" id="new_user" action="/users/sign_in" method="post">
<input type="text" name="user[login]" id="user_login">
<input type="password" name="user[password]" id="user_password">
<button type="submit">Sign in</button>
</form>
</body>
</html>
"""


class _Misbehaviour:
    __slots__ = ("count", "handled", "kind", "method", "options", "path")

    def __init__(
        self, kind: str, method: Optional[str], path: Optional[str], count: int, options: dict
    ):
        if kind not in KINDS:
            raise ValueError(f"unknown misbehaviour {kind!r}: one of {sorted(KINDS)}")
        handled, defaults = KINDS[kind]
        unknown = set(options) - set(defaults)
        if unknown:
            raise TypeError(f"{kind} takes no options {sorted(unknown)}")
        if count < 1:
            raise ValueError("count must be at least 1")
        self.kind = kind
        self.handled = handled
        self.method = method.upper() if method else None
        self.path = re.compile(path) if path is not None else None
        self.count = count
        self.options = {**defaults, **options}
        self._check()

    def _check(self) -> None:
        o = self.options
        if self.kind == "trickle" and (int(o["chunk"]) < 1 or float(o["interval"]) < 0):
            raise ValueError("trickle needs chunk >= 1 and interval >= 0")
        if self.kind == "oversize" and int(o["size"]) < 0:
            raise ValueError("oversize needs size >= 0")
        if self.kind == "garbage" and o["body"] is not None and not isinstance(o["body"], bytes):
            raise TypeError("garbage body must be bytes")

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        return self.path is None or self.path.search(path) is not None

    def instead(self, request_line: str, target: str, headers: Any, raw: bytes) -> _Answer:
        """The answer of a kind that does not handle the request."""
        status = int(self.options["status"])
        if self.kind == "redirect":
            location = self.options["location"] or DEFAULT_REDIRECT_ORIGIN + target
            body = f'<html><body>You are being <a href="{location}">redirected</a>.</body></html>'
            return _Answer(
                status,
                headers=[("Location", location)],
                body=body.encode("utf-8"),
                content_type="text/html; charset=utf-8",
            )
        if self.kind == "echo":
            # What a debugging proxy does with an upstream error: everything it was sent,
            # secrets included, goes back in the error body.
            lines = [request_line, *(f"{k}: {v}" for k, v in headers.items()), ""]
            lines.append(raw.decode("utf-8", "replace"))
            return _Answer(status, {"message": "\n".join(lines)})
        assert self.kind == "html"
        return _Answer(status, body=SIGN_IN_PAGE, content_type="text/html; charset=utf-8")

    def after(self, answer: _Answer) -> _Answer:
        """Change how the real ``answer`` of a handled request is delivered."""
        answer.misbehaviour = self
        if self.kind == "garbage":
            real = answer.data()
            body = self.options["body"]
            answer.body = real[: len(real) // 2] if body is None else body
            answer.content_type = self.options["content_type"]
            if self.options["status"] is not None:
                answer.status = int(self.options["status"])
        elif self.kind == "oversize":
            answer.status = int(self.options["status"])
        return answer

    def oversize_body(self, answer: _Answer) -> tuple[int, Any]:
        """(length, chunks): the real JSON answer padded with spaces (still valid JSON)
        to ``size`` bytes, produced as it is sent so that the fake holds none of it."""
        real = _json(answer.payload) if answer.payload is not None else b"{}"
        length = max(int(self.options["size"]), len(real))

        def chunks() -> Iterator[bytes]:
            yield real
            left = length - len(real)
            block = b" " * 65536
            while left > 0:
                yield block[:left]
                left -= len(block)

        return length, chunks()
