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
from pathlib import Path

from .files import atomic_write

log = logging.getLogger(__name__)

SYSTEM_ID_FILE = ".runner_system_id"
FINGERPRINT_FILE = ".runner_system_id.fingerprint"
MACHINE_ID_FILES = (Path("/var/lib/dbus/machine-id"), Path("/etc/machine-id"))
VALID_ID = re.compile(r"^[sr]_[0-9a-zA-Z]{12}$")


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
            value = path.read_text().strip()
        except OSError:
            continue
        if value:
            return value
    return None


def fingerprint(machine_id: str | None, hostname: str) -> str:
    """Not secret, only distinct per machine: a changed value means a copied prefix."""
    return hashlib.sha256(f"{machine_id or ''}\0{hostname}".encode()).hexdigest()[:32]


def hostname() -> str:
    return socket.gethostname().split(".")[0] or "localhost"


def ensure_system_id(
    prefix: Path, machine_ids: Sequence[Path] = MACHINE_ID_FILES, *, write: bool = True
) -> str:
    """The prefix's system ID, created if missing. When the recorded fingerprint shows the
    prefix came from another machine, a fresh ``r_`` ID: the copy's runners belong to the
    machine it was copied from. ``write=False`` works it out without saving anything."""
    id_file = prefix / SYSTEM_ID_FILE
    print_file = prefix / FINGERPRINT_FILE
    machine_id = read_machine_id(machine_ids)
    current = fingerprint(machine_id, hostname())
    existing = _read_valid(id_file)
    recorded = _read_valid(print_file, re.compile(r"^[0-9a-f]{32}$"))

    if existing and recorded in (None, current):
        system_id = existing
    elif existing:
        system_id = random_system_id()
        log.warning(
            "event=copied_prefix prefix=%s: machine ID or hostname changed since the "
            "system ID was made; this host takes a new one (%s) and its own runners",
            prefix,
            system_id,
        )
    else:
        system_id = system_id_from_machine_id(machine_id) if machine_id else random_system_id()
    if write and system_id != existing:
        atomic_write(id_file, (system_id + "\n").encode())
    if write and recorded != current:
        atomic_write(print_file, (current + "\n").encode())
    return system_id


def _read_valid(path: Path, pattern: re.Pattern[str] = VALID_ID) -> str | None:
    try:
        value = path.read_text().strip()
    except OSError:
        return None
    return value if pattern.match(value) else None
