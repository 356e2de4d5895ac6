"""TOML files as an earlier run parsed them (the executor files, the config read back),
found by the SHA-256 of their text.

tomllib is pure Python: parsing 200 executor files costs a start about 45 ms, and the
config of 200 runners about 16 ms more; reading what it made of them from one JSON file
(json's C decoder) costs a few. The key is the text itself, not the file's name or
timestamps, so a file that changed in any way is parsed again, and the verdict on bad
input is always the parser's own.

No string of a document is kept: each is kept as where it is in the text (that text, as
its hash says), and read back from the file read this time. So tokens, passwords and
whatever else a file holds stay in that file alone. A document with a string that is
not in its text as is (one with escapes) is parsed every time. The file lives in the
prefix's state folder, is rewritten only when what was parsed changed, never by
``plan`` or by a run that stopped on bad input, and may be deleted at any time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, Optional

from .errors import Error
from .files import atomic_write, read_regular, state_dir
from .tomlfile import read_toml

log = logging.getLogger(__name__)

VERSION = 2  # 1 kept strings as they are


def parsed_path(prefix: Path, instance: str) -> Path:
    return state_dir(prefix) / f"{instance}.parsed.json"


class ParsedFiles:
    """``parse`` is tomlfile.read_toml, remembered across runs in ``path`` (None: not
    remembered, as for ``plan``)."""

    def __init__(self, path: Optional[Path]) -> None:
        self.path = path
        self._known: dict[str, str] = {}  # digest → the document's skeleton as JSON
        self._used: dict[str, str] = {}
        self._digests: dict[Path, str] = {}  # of the text each file had in this run
        if path is not None:
            self._known = _read(path)

    def parse(self, path: Path, text: str) -> dict[str, Any]:
        digest = self._digests[path] = hashlib.sha256(text.encode()).hexdigest()
        known = self._known.get(digest)
        if known is not None:
            # A damaged skeleton is no answer: the text is parsed again.
            with contextlib.suppress(ValueError, TypeError, LookupError, AttributeError):
                document = rebuild(json.loads(known), text)  # new objects: may be changed
                if isinstance(document, dict):
                    self._used[digest] = known
                    return document
        document = read_toml(path, text)
        with contextlib.suppress(_NotInText):
            self._used[digest] = json.dumps(skeleton(document, text))
        return document

    def replaced(self, path: Path, text: str) -> None:
        """``path`` now holds ``text`` (this run wrote it): the next run finds it parsed, and
        a run after a change writes this file once, not again in the next one."""
        previous = self._digests.pop(path, None)
        if previous is not None:
            self._used.pop(previous, None)
        self.parse(path, text)

    def forget(self, path: Path) -> None:
        """``path`` is bad input: it is not kept, so a run that holds it changes nothing of
        its own on disk (and it is judged afresh next time)."""
        digest = self._digests.pop(path, None)
        if digest is not None:
            self._used.pop(digest, None)

    def save(self) -> None:
        """Keep what this run parsed (and only that) for the next run; best effort."""
        if self.path is None or self._used == self._known:
            return
        data = json.dumps({"version": VERSION, "documents": self._used})
        try:
            atomic_write(self.path, (data + "\n").encode())
        except Error as error:
            log.debug("event=parsed_not_kept %s", error)


def _read(path: Path) -> dict[str, str]:
    try:
        raw = read_regular(path)
        data = json.loads(raw) if raw else {}
    except (Error, ValueError):
        return {}  # unreadable or damaged: everything is parsed again, and it is rewritten
    if not isinstance(data, dict) or data.get("version") != VERSION:
        return {}
    documents = data.get("documents")
    if not isinstance(documents, dict):
        return {}
    return {k: v for k, v in documents.items() if isinstance(v, str)}


class _NotInText(Exception):
    """A string of the document is not in its text as is (TOML escapes): not kept."""


# A document's skeleton is JSON: booleans, integers and floats as they are; each string,
# date or time, table and array an object of one key that says which.
_STRING, _DATETIME, _DATE, _TIME, _TABLE, _ARRAY = "s", "dt", "d", "t", "o", "a"


def skeleton(value: Any, text: str) -> Any:
    """``value`` (what tomllib made of ``text``) with each string replaced by where it is
    in ``text``. Raises _NotInText."""
    found: dict[str, int] = {}
    cursor = 0

    def where(string: str) -> list[int]:
        nonlocal cursor
        start = found.get(string)
        if start is None:
            # Mostly in the order of the text: look on from the last one first.
            start = text.find(string, cursor)
            if start < 0:
                start = text.find(string)
            if start < 0:
                raise _NotInText()
            found[string], cursor = start, start + len(string)
        return [start, len(string)]

    def encode(value: Any) -> Any:
        if isinstance(value, str):
            return {_STRING: where(value)}
        if isinstance(value, dict):
            return {_TABLE: {key: encode(item) for key, item in value.items()}}
        if isinstance(value, list):
            return {_ARRAY: [encode(item) for item in value]}
        if isinstance(value, datetime):
            return {_DATETIME: value.isoformat()}
        if isinstance(value, date):
            return {_DATE: value.isoformat()}
        if isinstance(value, time):
            return {_TIME: value.isoformat()}
        return value  # bool, int, float

    return encode(value)


def rebuild(value: Any, text: str) -> Any:
    """What ``skeleton`` made, whole again from ``text``."""
    if not isinstance(value, dict):
        return value
    ((kind, inner),) = value.items()
    if kind == _STRING:
        start, length = inner
        string = text[start : start + length]
        if len(string) != length:
            raise IndexError(start)
        return string
    if kind == _TABLE:
        return {key: rebuild(item, text) for key, item in inner.items()}
    if kind == _ARRAY:
        return [rebuild(item, text) for item in inner]
    parse = {
        _DATETIME: datetime.fromisoformat,
        _DATE: date.fromisoformat,
        _TIME: time.fromisoformat,
    }
    return parse[kind](inner)
