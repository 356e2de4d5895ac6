"""Secrets that cannot be printed by accident.

Every token this tool handles is wrapped in :class:`Secret` at the moment it is read, and
registered so that the log formatter and the error handler can scrub it from any text
(an exception message quoting a response body, say) as a second line of defence.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import urllib.parse
from collections.abc import Iterator


class _Known:
    """Every secret seen, with the forms it may be printed in (computed once: scrub runs on
    every log line, and a cold sync of 200 runners logs 200 lines with 200 tokens known)."""

    def __init__(self) -> None:
        self.forms: dict[str, tuple[str, ...]] = {}
        self.by_length: tuple[tuple[str, tuple[str, ...]], ...] = ()  # longest secret first
        self.lock = threading.Lock()

    def remember(self, value: str) -> None:
        forms = tuple(_forms(value))
        with self.lock:
            self.forms[value] = forms
            self._sort()

    def _sort(self) -> None:
        self.by_length = tuple(sorted(self.forms.items(), key=lambda i: len(i[0]), reverse=True))

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        with self.lock:
            before, self.forms = self.forms, {}
            self._sort()
        try:
            yield
        finally:
            with self.lock:
                self.forms = before
                self._sort()


_known = _Known()


class Secret:
    """A token. ``str()``/``repr()`` show only a masked form; ``.reveal()`` the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        if value and value not in _known.forms:
            _known.remember(value)

    def reveal(self) -> str:
        return self._value

    @property
    def masked(self) -> str:
        return mask(self._value)

    def __repr__(self) -> str:
        return f"Secret({self.masked!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


def mask(token: str) -> str:
    """``glrt-abcdef123456`` -> ``glrt-…3456``: enough to tell tokens apart, not to use one."""
    if not token:
        return "(none)"
    prefix = token.split("-", 1)[0] + "-" if "-" in token[:8] else ""
    tail = token[-4:] if len(token) >= 12 else ""
    return f"{prefix}…{tail}"


def scrub(text: str) -> str:
    """Replace every known secret in ``text`` by its masked form, in whatever escaping it
    may appear: as is, JSON- or repr-escaped, URL-encoded, or inside ``b'...'``. Anything
    shaped like a GitLab token that is not known is masked too (a proxy echoing a header
    this run never read)."""
    for value, forms in _known.by_length:
        for form in forms:
            if form in text:
                text = text.replace(form, mask(value))
    return _TOKEN_SHAPE.sub(lambda match: mask(match.group(0)), text)


def learned_within() -> contextlib.AbstractContextManager[None]:
    """A registry of its own inside, the one before restored at its end: a command run in
    a process that goes on (``cli.main`` called in-process) scrubs the secrets it read, as
    in a process of its own, and leaves the process's registry as it found it."""
    return _known.scope()


# GitLab's token prefixes (personal, runner, pipeline trigger, deploy, feed, OAuth, legacy
# registration...) followed by what a token is made of.
_TOKEN_SHAPE = re.compile(
    r"\b(?:glpat|glrt|glrtr|glptt|gldt|glft|glcbt|glimt|glagent|gloas|glsoat|glffct|GR1348941)"
    r"-?[A-Za-z0-9_\-]{8,}"
)


def _forms(value: str) -> list[str]:
    forms = {
        value,
        json.dumps(value)[1:-1],
        repr(value)[1:-1],
        repr(value.encode("utf-8"))[2:-1],
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value),
    }
    return sorted((form for form in forms if form), key=len, reverse=True)
