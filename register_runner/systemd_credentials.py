"""Where a systemd credential comes from when register-runner runs outside its unit (a
manual ``plan``, ``unregister`` or ``reset-token`` from a shell): the unit's
``LoadCredential=NAME:PATH`` names the file, and root can read it there.

Looked for in the units that run register-runner (gitlab-runner's drop-ins and
register-runner's own service), in the folders systemd reads them from
(``$SYSTEMD_UNIT_PATH`` when set, as systemd itself honours it).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

from .errors import InputError
from .files import read_file

UNIT_FOLDERS = ("/etc/systemd/system", "/run/systemd/system", "/usr/lib/systemd/system")
UNIT_PATTERNS = (
    "gitlab-runner*.service",
    "gitlab-runner*.service.d/*.conf",
    "register-runner*.service",
    "register-runner*.service.d/*.conf",
)
MAX_UNIT_BYTES = 1 << 20
_LOAD = re.compile(r"^\s*LoadCredential\s*=\s*([^:\s]+):(\S+)\s*$")


def unit_folders(environ: Mapping[str, str]) -> list[Path]:
    given = environ.get("SYSTEMD_UNIT_PATH")
    return [Path(p) for p in (given.split(":") if given else UNIT_FOLDERS) if p]


def sources(name: str, environ: Mapping[str, str]) -> list[Path]:
    """Every absolute path a unit loads credential ``name`` from, without repeats."""
    found: dict[Path, None] = {}
    for unit in _units(environ):
        for line in _lines(unit):
            match = _LOAD.match(line)
            if match and match[1] == name and os.path.isabs(match[2]):
                found[Path(match[2])] = None
    return list(found)


def _units(environ: Mapping[str, str]) -> Iterator[Path]:
    for folder in unit_folders(environ):
        for pattern in UNIT_PATTERNS:
            yield from sorted(folder.glob(pattern))


def _lines(unit: Path) -> list[str]:
    try:
        raw = read_file(unit, limit=MAX_UNIT_BYTES)
    except (OSError, InputError):
        return []  # not a unit systemd could read either
    return raw.decode("utf-8", errors="replace").splitlines()
