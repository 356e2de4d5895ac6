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
from collections.abc import Callable, Iterator, Mapping
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


def filesystem_error(path: Path, error: OSError, doing: str = "write") -> Error:
    """One line naming ``path``: exit 3 when it may heal (a full disk, an I/O error), 2
    when the prefix must be fixed (read-only, a folder where a file should be,
    permissions)."""
    reason = error.strerror or type(error).__name__
    if error.errno in MAY_HEAL:
        return TransientError(f"{path}: cannot {doing}: {reason}")
    return InputError(f"{path}: cannot {doing}: {reason}")


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


# Every read of an input, secret, state or output file: a FIFO opens at once instead of
# waiting for a writer that never comes, a terminal does not become the process's, and a
# capture-tags program does not inherit the descriptor.
READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
GROUP_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH
GROUP_OTHERS_READ = stat.S_IRGRP | stat.S_IROTH
_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def read_file(
    path: Path,
    *,
    limit: Optional[int] = None,
    follow_symlinks: bool = True,
    check: Optional[Callable[[os.stat_result], None]] = None,
) -> bytes:
    """The bytes of the regular file ``path``. Anything else there (a FIFO, a socket, a
    device, a folder) is an InputError naming the path and what it is, found without
    blocking and before any read; so is a file larger than ``limit`` bytes. ``check`` is
    given the open file's status before its content is read (its permissions). The
    open's own OSError (no such file, permission denied, ELOOP for a symlink when
    ``follow_symlinks`` is off) is the caller's to word."""
    fd, info = _open_regular(path, follow_symlinks)
    try:
        if check is not None:
            check(info)
        return _read_all(fd, path, info.st_size, limit)
    finally:
        os.close(fd)


def stat_regular(path: Path) -> os.stat_result:
    """The status of the regular file ``path``, checked as ``read_file`` checks it, for a
    file another library opens by name later (OpenSSL would block on a FIFO)."""
    fd, info = _open_regular(path, follow_symlinks=True)
    os.close(fd)
    return info


def _open_regular(path: Path, follow_symlinks: bool) -> tuple[int, os.stat_result]:
    flags = READ_FLAGS | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as error:
        if error.errno == errno.ENXIO:  # what open() says of a socket
            raise not_regular(path, _mode(path, follow_symlinks)) from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise not_regular(path, info.st_mode)
    return fd, info


def not_regular(path: Path, mode: int) -> InputError:
    what = next((name for test, name in _KINDS if test(mode)), "a dangling symbolic link")
    return InputError(f"{path}: {what}, not a regular file; put a file there or remove it")


def _mode(path: Path, follow_symlinks: bool) -> int:
    try:
        return os.stat(path, follow_symlinks=follow_symlinks).st_mode
    except OSError:
        return 0


def _read_all(fd: int, path: Path, size: int, limit: Optional[int]) -> bytes:
    # One read of the size fstat gave, and one more to see the end (or a file still being
    # written): no buffer of ``limit`` bytes for each of hundreds of small files.
    chunks: list[bytes] = []
    total = 0
    while True:
        wanted = size + 1 if not chunks else 1 << 16
        if limit is not None:
            wanted = min(wanted, limit + 1 - total)
        try:
            chunk = os.read(fd, wanted)
        except OSError as error:
            raise filesystem_error(path, error, "read") from None
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if limit is not None and total > limit:
            raise InputError(f"{path}: larger than {limit} bytes; not the file expected there")


def read_regular(path: Path) -> bytes | None:
    """The bytes of ``path``; None if it does not exist. A symlink there is refused: the
    output is ours, and a link may point anywhere."""
    try:
        return read_file(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as error:
        if error.errno == errno.ELOOP or os.path.islink(path):
            raise InputError(
                f"{path}: is a symbolic link; refusing to read or replace it"
            ) from None
        raise InputError(f"{path}: cannot read: {error.strerror}") from None


def check_secure(
    path: Path, info: Optional[os.stat_result] = None, *, secret: bool = False
) -> None:
    """A prefix (or an input file) others can write to lets them choose which runners this
    host runs and where its access token is sent; a ``secret`` file others can read gives
    them the token, as ssh refuses a private key. ``info``: the status of a file already
    open (else ``path`` is looked up; a missing one passes)."""
    if info is None:
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return
    mode = stat.S_IMODE(info.st_mode)
    loose = GROUP_OTHERS_WRITE | (GROUP_OTHERS_READ if secret else 0)
    if mode & loose:
        what = "writable" if mode & GROUP_OTHERS_WRITE else "readable"
        fix = f"chmod 600 {path}" if secret else "chmod go-w it"
        raise InputError(
            f"{path}: {what} by group or others (mode {mode:04o}); {fix}, or pass "
            "--insecure-permissions"
        )
    if info.st_uid not in (0, os.geteuid()):
        raise InputError(
            f"{path}: owned by uid {info.st_uid}, not by root or the user "
            "running register-runner; pass --insecure-permissions to allow it"
        )


def check_secure_file(path: Path) -> None:
    """``check_secure`` for an input file read later: anything there that is not a
    regular file is named as what it is first (a device's mode 0666 is not its problem);
    a missing one passes."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(info.st_mode):
        raise not_regular(path, info.st_mode)
    check_secure(path, info)


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
