"""Safe file writes, the prefix lock and permission checks: the only module that replaces
files under the prefix."""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import InputError, TransientError

STATE_DIR = ".register-runner"


def state_dir(prefix: Path, *, create: bool = False) -> Path:
    """Where the journal and the lock live: under the prefix, never in /tmp."""
    folder = prefix / STATE_DIR
    if create:
        folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def atomic_write(
    path: Path, data: bytes, *, mode: int = 0o600, owner: tuple[int, int] | None = None
) -> None:
    """Replace ``path`` with ``data`` so that a reader (or a crash) sees either the old or
    the new complete file. Keeps the owner of the file it replaces (``owner``, a uid and
    gid, is given to a new file); a symlink planted at ``path`` is replaced, never
    followed."""
    previous = _lstat(path)
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
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


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
    """Hold an exclusive flock on ``path``; wait up to ``timeout`` seconds for it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
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
