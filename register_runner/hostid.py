"""The host's system ID, as gitlab-runner derives and stores it, and the fingerprint that
tells when a prefix was copied onto another machine."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import socket
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .files import atomic_write, read_file

log = logging.getLogger(__name__)

SYSTEM_ID_FILE = ".runner_system_id"
FINGERPRINT_FILE = ".runner_system_id.fingerprint"
MACHINE_ID_FILES = (Path("/var/lib/dbus/machine-id"), Path("/etc/machine-id"))
VALID_ID = re.compile(r"^[sr]_[0-9a-zA-Z]{12}$")
# A system ID, fingerprint or machine ID is one short line.
MAX_ID_BYTES = 4096


def system_id_from_machine_id(machine_id: str) -> str:
    """gitlab-runner's derivation: HMAC-SHA256 keyed by the machine ID over "gitlab-runner"."""
    digest = hmac.new(machine_id.strip().encode(), b"gitlab-runner", hashlib.sha256)
    return "s_" + digest.hexdigest()[:12]


def random_system_id() -> str:
    alphabet = string.ascii_letters + string.digits
    return "r_" + "".join(secrets.choice(alphabet) for _ in range(12))


def read_machine_id(candidates: Sequence[Path] = MACHINE_ID_FILES) -> str | None:
    for path in candidates:
        try:
            value = _read(path)
        except (OSError, InputError):
            continue  # as missing: a container may bind /dev/null there
        if value:
            return value
    return None


def fingerprint(machine_id: str | None, hostname: str) -> str:
    """Not secret, only distinct per machine: a changed value means a copied prefix."""
    return hashlib.sha256(f"{machine_id or ''}\0{hostname}".encode()).hexdigest()[:32]


def hostname() -> str:
    return socket.gethostname().split(".")[0] or "localhost"


def prefix_key(prefix: Path) -> str:
    """A short key for the prefix's real path, for the marker: two prefixes of one host
    differ in it, and --prefix through a symlink is the same prefix."""
    return hashlib.sha256(str(prefix.resolve()).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class SystemId:
    """The system ID this host goes by, and what must be saved for it to stick."""

    prefix: Path
    value: str
    save_id: bool
    fingerprint: str
    save_fingerprint: bool

    def save(self) -> None:
        if self.save_id:
            atomic_write(self.prefix / SYSTEM_ID_FILE, (self.value + "\n").encode())
        if self.save_fingerprint:
            atomic_write(self.prefix / FINGERPRINT_FILE, (self.fingerprint + "\n").encode())


def resolve_system_id(prefix: Path, machine_ids: Sequence[Path] = MACHINE_ID_FILES) -> SystemId:
    """The prefix's system ID, or the one to create. When the recorded fingerprint shows the
    prefix came from another machine, a fresh ``r_`` ID: the copy's runners belong to the
    machine it was copied from. Nothing is written until ``save()``."""
    machine_id = read_machine_id(machine_ids)
    current = fingerprint(machine_id, hostname())
    existing = read_system_id(prefix / SYSTEM_ID_FILE)
    recorded = read_system_id(prefix / FINGERPRINT_FILE, re.compile(r"^[0-9a-f]{32}$"))

    if existing and recorded in (None, current):
        value = existing
    elif existing:
        value = random_system_id()
        log.warning(
            "event=copied_prefix prefix=%s: machine ID or hostname changed since the "
            "system ID was made; this host takes a new one (%s) and its own runners",
            prefix,
            value,
        )
    else:
        value = system_id_from_machine_id(machine_id) if machine_id else random_system_id()
    return SystemId(prefix, value, value != existing, current, recorded != current)


def ensure_system_id(prefix: Path, machine_ids: Sequence[Path] = MACHINE_ID_FILES) -> str:
    """The prefix's system ID, created (and its fingerprint recorded) if missing."""
    system_id = resolve_system_id(prefix, machine_ids)
    system_id.save()
    return system_id.value


def read_system_id(path: Path, pattern: re.Pattern[str] = VALID_ID) -> str | None:
    """The ID in ``path``; None when there is none (or not a valid one). A FIFO or device
    there is bad input: taken for a missing file, it would be replaced by a new ID."""
    try:
        value = _read(path)
    except OSError:
        return None
    return value if pattern.match(value) else None


def _read(path: Path) -> str:
    return read_file(path, limit=MAX_ID_BYTES).decode("utf-8", errors="replace").strip()
