"""Safe file writes, the prefix lock and permission checks: the only module that replaces
files under the prefix."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import stat
import time
import unicodedata
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Optional

from .errors import Error, InputError, TransientError

STATE_DIR = ".register-runner"
# Errors a full or failing disk gives: they may heal by themselves. Every other OSError
# (read-only, permission, a folder where a file should be...) needs the prefix fixed.
MAY_HEAL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN, errno.EINTR})
# The lock is for runs that write; where nothing can be written there is nothing to guard.
CANNOT_WRITE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})

log = logging.getLogger(__name__)


def state_dir(prefix: Path, *, create: bool = False) -> Path:
    """Where the journal and the lock live: under the prefix, never in /tmp. On a
    read-only prefix it is not created: a run with nothing to change needs no lock."""
    folder = prefix / STATE_DIR
    info = _lstat(folder)
    if info is not None and not stat.S_ISDIR(info.st_mode):
        raise InputError(
            f"{folder}: not a folder; remove it (register-runner keeps its state there)"
        )
    if create and info is None:
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except OSError as error:
            if error.errno not in CANNOT_WRITE:
                raise filesystem_error(folder, error) from None
    return folder


def filesystem_error(path: Path, error: OSError) -> Error:
    """One line naming ``path``: exit 3 when it may heal (a full disk), 2 when the prefix
    must be fixed (read-only, a folder where a file should be, permissions)."""
    reason = error.strerror or type(error).__name__
    if error.errno in MAY_HEAL:
        return TransientError(f"{path}: cannot write: {reason}")
    return InputError(f"{path}: cannot write: {reason}")


def name_problem(name: str) -> Optional[str]:
    """Why a file name cannot stand for a runner: names go into GitLab, the config and
    log lines, so they must be text and must not hold control characters."""
    if name.isascii() and name.isprintable():
        return None  # nearly every name: no need to look at each character
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "the name is not valid UTF-8"
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        return "the name holds control characters"
    return None


def check_instance_name(name: str) -> None:
    """``--instance`` becomes part of paths under the prefix: one plain path component."""
    problem = name_problem(name)
    if problem or not name or name in (".", "..") or "/" in name or name.startswith("."):
        raise InputError(
            f"--instance {name!a}: must be a plain name (letters, digits, - and _), not a path"
        )


def atomic_write(
    path: Path, data: bytes, *, mode: int = 0o600, owner: Optional[tuple[int, int]] = None
) -> None:
    """Replace ``path`` with ``data`` so that a reader (or a crash) sees either the old or
    the new complete file. Keeps the owner of the file it replaces (``owner``, a uid and
    gid, is given to a new file); a symlink planted at ``path`` is replaced, never
    followed. A failure is one line naming the path."""
    try:
        _atomic_write(path, data, mode, owner)
    except OSError as error:
        raise filesystem_error(path, error) from None


def _atomic_write(path: Path, data: bytes, mode: int, owner: Optional[tuple[int, int]]) -> None:
    previous = _lstat(path)
    if previous is not None and stat.S_ISDIR(previous.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            if previous is not None and stat.S_ISREG(previous.st_mode):
                _keep_owner(handle.fileno(), previous)
            elif owner is not None:
                os.fchown(handle.fileno(), *owner)
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    fsync_dir(path.parent)


def _keep_owner(fd: int, previous: os.stat_result) -> None:
    if (previous.st_uid, previous.st_gid) != (os.geteuid(), os.getegid()):
        with contextlib.suppress(PermissionError):
            os.fchown(fd, previous.st_uid, previous.st_gid)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def read_regular(path: Path) -> bytes | None:
    """The bytes of ``path``; None if it does not exist. A symlink there is refused: the
    output is ours, and a link may point anywhere."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as error:
        if os.path.islink(path):
            raise InputError(
                f"{path}: is a symbolic link; refusing to read or replace it"
            ) from None
        raise InputError(f"{path}: cannot read: {error.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        # Checked before fdopen, which refuses a folder with an error naming no path.
        os.close(fd)
        raise InputError(f"{path}: not a regular file; remove it or move it away")
    with os.fdopen(fd, "rb") as handle:
        try:
            return handle.read()
        except OSError as error:
            raise filesystem_error(path, error) from None


def check_secure(path: Path) -> None:
    """A prefix (or an input file) others can write to lets them choose which runners this
    host runs and where its access token is sent."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise InputError(
            f"{path}: writable by group or others (mode "
            f"{stat.S_IMODE(info.st_mode):04o}); chmod go-w it, or pass "
            "--insecure-permissions"
        )
    if info.st_uid not in (0, os.geteuid()):
        raise InputError(
            f"{path}: owned by uid {info.st_uid}, not by root or the user "
            "running register-runner; pass --insecure-permissions to allow it"
        )


@contextlib.contextmanager
def exclusive_lock(path: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive flock on ``path``; wait up to ``timeout`` seconds for it. Where
    the lock file cannot be created (a read-only prefix) the run goes on without it:
    nothing can be written there, and a run that must write fails naming the path."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as error:
        if error.errno == errno.ELOOP or os.path.islink(path):
            raise InputError(f"{path}: is a symbolic link; refusing to follow it") from None
        if error.errno in CANNOT_WRITE or (
            error.errno == errno.ENOENT and path.parent.name == STATE_DIR
        ):
            log.debug("event=unlocked path=%s reason=%s", path, error.strerror)
            yield
            return
        raise filesystem_error(path, error) from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TransientError(
                        f"{path}: another register-runner holds the lock; gave up after "
                        f"{timeout:g} s (--lock-timeout)"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def json_lines(raw: Mapping[str, Any]) -> str:
    """JSON with one line per item of each top-level list or table (one per runner in
    the state and the last-run record): as readable as an indented file, and written by
    json's C encoder (``indent=`` uses the pure-Python one, ten times slower)."""
    lines = []
    for key, value in sorted(raw.items()):
        name = json.dumps(key)
        if isinstance(value, dict) and value:
            inner = ",\n".join(
                f"  {json.dumps(k)}: {json.dumps(v, sort_keys=True)}"
                for k, v in sorted(value.items())
            )
            lines.append(f" {name}: {{\n{inner}\n }}")
        elif isinstance(value, list) and value:
            inner = ",\n".join(f"  {json.dumps(v, sort_keys=True)}" for v in value)
            lines.append(f" {name}: [\n{inner}\n ]")
        else:
            lines.append(f" {name}: {json.dumps(value, sort_keys=True)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"
