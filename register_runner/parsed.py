"""Executor files as an earlier run parsed them, found by the SHA-256 of their bytes.

tomllib is pure Python: parsing 200 executor files costs a start about 45 ms, reading
what it made of them from one JSON file (json's C decoder) about 3 ms. The key is the
file's content, not its name or timestamps, so a file that changed in any way is parsed
again, and the verdict on bad input is always the parser's own. Only documents that JSON
holds exactly are kept (no TOML dates or times). The file lives in the prefix's state
folder, is rewritten only when what was parsed changed, never by ``plan`` or by a run
that stopped on bad input, and may be deleted at any time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Optional

from .errors import Error
from .files import atomic_write, read_regular, state_dir
from .tomlfile import read_toml

log = logging.getLogger(__name__)

VERSION = 1


def parsed_path(prefix: Path, instance: str) -> Path:
    return state_dir(prefix) / f"{instance}.parsed.json"


class ParsedFiles:
    """``parse`` is tomlfile.read_toml, remembered across runs in ``path`` (None: not
    remembered, as for ``plan``)."""

    def __init__(self, path: Optional[Path]) -> None:
        self.path = path
        self._known: dict[str, str] = {}  # digest → the document as JSON
        self._used: dict[str, str] = {}
        if path is not None:
            self._known = _read(path)

    def parse(self, path: Path, text: str) -> dict[str, Any]:
        digest = hashlib.sha256(text.encode()).hexdigest()
        known = self._known.get(digest)
        if known is not None:
            document = json.loads(known)  # a new object: the caller may change it
            if isinstance(document, dict):
                self._used[digest] = known
                return document
        document = read_toml(path, text)
        # A TOML date or time has no JSON form: such a file is parsed again next time.
        with contextlib.suppress(TypeError):
            self._used[digest] = json.dumps(document)
        return document

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
