"""The credentials file of a runner that is not gitlab-runner: systemd ``EnvironmentFile=``
lines with the GitLab url, the runner's id, token and system ID.

This module knows the file (checking its path, rendering, parsing, replacing and removing
it); ``custom_runners`` decides when. The first line marks a file as this tool's: a file
without it is never overwritten or removed.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Optional

from .errors import InputError
from .files import atomic_write, fsync_dir, read_regular
from .tomlfile import Where

HEADER = "# written by register-runner"
# The lines a runner reads, in the order they are written.
KEYS = (
    "GITLAB_URL",
    "RUNNER_ID",
    "RUNNER_TOKEN",
    "RUNNER_SYSTEM_ID",
    "RUNNER_TOKEN_OBTAINED_AT",  # for the rotation rule: obtained + 75% of the lifetime
    "RUNNER_TOKEN_EXPIRES_AT",
    "GITLAB_TLS_CA_FILE",  # only when the client_config names one
)
MAX_BYTES = 64 * 1024
# Values systemd reads the same quoted or not; anything else is double-quoted.
_PLAIN = re.compile(r"^[A-Za-z0-9_.:/@+,%=-]*$")
_ESCAPED = re.compile(r'\\(["\\`$])')


def header(version: str, host: str, instance: str, stem: str) -> str:
    # A runner that rotates its token and writes it back must keep this line.
    return f"{HEADER} {version} for {host} {instance}/{stem}; keep this line"


def render(first_line: str, values: Mapping[str, str]) -> bytes:
    lines = [first_line]
    for key in KEYS:
        if key in values:
            lines.append(f"{key}={_quoted(key, values[key])}")
    return ("\n".join(lines) + "\n").encode()


def _quoted(key: str, value: str) -> str:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InputError(f"{key}: a control character cannot go into an EnvironmentFile")
    if _PLAIN.match(value):
        return value
    # Inside double quotes systemd unescapes \" \\ \` \$, as a shell would.
    return '"' + re.sub(r'(["\\`$])', r"\\\1", value) + '"'


def parse(raw: bytes) -> dict[str, str]:
    """KEY=VALUE lines as systemd reads them: comments (# ;) and blank lines skipped,
    whitespace around keys and values dropped, one level of quotes removed."""
    values = {}
    for line in raw.decode("utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = _ESCAPED.sub(r"\1", value[1:-1]) if value[0] == '"' else value[1:-1]
        values[key.strip()] = value
    return values


def ours(raw: bytes) -> bool:
    return raw.startswith(HEADER.encode())


def read(path: Path) -> Optional[bytes]:
    """The file's bytes, None when there is none; a symlink, a FIFO, a folder or a huge
    file is bad input."""
    with contextlib.suppress(FileNotFoundError):
        # The runner's own user may put anything there: a FIFO must not hang the run.
        if stat.S_ISFIFO(os.lstat(path).st_mode):
            raise InputError(f"{path}: not a regular file; remove it or move it away")
    raw = read_regular(path)
    if raw is not None and len(raw) > MAX_BYTES:
        raise InputError(f"{path}: larger than {MAX_BYTES} bytes; not a credentials file")
    return raw


def write(path: Path, data: bytes, owner: Optional[str]) -> None:
    """Replace the file atomically, mode 0600, keeping its owner; a new file gets
    ``owner`` (a user name) when one is given."""
    ids = None
    if owner is not None:
        user = _user(owner)
        ids = (user.pw_uid, user.pw_gid)
    # A failure names the file; the token waits in the state for the next run.
    atomic_write(path, data, owner=ids)


def remove(path: Path) -> bool:
    """Remove the file if this tool wrote it; whether it did."""
    raw = read(path)
    if raw is None or not ours(raw):
        return False
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fsync_dir(path.parent)
    return True


def _user(name: str) -> Any:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise InputError(f"credentials_owner: no user {name!r} on this host") from None


# -- checking an executor file's credentials_file -----------------------------------------


def check_target(
    file: Path, where: Callable[[str], Where], keys: dict[str, Any], executor_dir: Path
) -> tuple[Optional[str], Optional[str]]:
    """Pop ``credentials_file`` and ``credentials_owner`` out of an executor file's keys;
    (path, owner), both None for a gitlab-runner executor. Bad input raises InputError."""
    path_value = keys.pop("credentials_file", None)
    owner = keys.pop("credentials_owner", None)
    if path_value is None:
        if owner is not None:
            raise InputError(
                f"{where('credentials_owner')}: credentials_owner needs credentials_file"
            )
        return None, None
    at = where("credentials_file")
    if "executor" in keys:
        raise InputError(
            f"{where('executor')}: set executor (a gitlab-runner runner) or credentials_file "
            "(a runner that is not gitlab-runner), not both"
        )
    if not isinstance(path_value, str) or not path_value.strip():
        raise InputError(f"{at}: credentials_file must be a path")
    if not os.path.isabs(path_value):
        raise InputError(f"{at}: credentials_file {path_value!r} must be an absolute path")
    path = Path(os.path.normpath(path_value))
    if owner is not None:
        if not isinstance(owner, str) or not owner:
            raise InputError(f"{where('credentials_owner')}: credentials_owner must be a user name")
        try:
            _user(owner)
        except InputError as error:
            raise InputError(f"{where('credentials_owner')}: {error}") from None
    _check_place(at, path, executor_dir)
    _check_existing(at, path)
    return str(path), owner


def _check_place(at: Where, path: Path, executor_dir: Path) -> None:
    folder = path.parent
    try:
        info = os.stat(folder)
    except FileNotFoundError:
        raise InputError(f"{at}: {folder}: no such folder; create it first") from None
    if not stat.S_ISDIR(info.st_mode):
        raise InputError(f"{at}: {folder}: not a folder")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        # Whoever can write there can swap the file the runner reads its token from.
        raise InputError(
            f"{at}: {folder} is writable by group or others (mode "
            f"{stat.S_IMODE(info.st_mode):04o}); put the credentials file elsewhere"
        )
    real = Path(os.path.realpath(folder))
    prefix = executor_dir.parent
    if _within(real, executor_dir):
        raise InputError(
            f"{at}: {path} is inside the executor folder {executor_dir}; put it elsewhere"
        )
    if _within(real, prefix / ".register-runner") or (
        real == Path(os.path.realpath(prefix))
        and (re.match(r"^config\..*\.toml", path.name) or path.name.startswith(".runner_system_id"))
    ):
        raise InputError(f"{at}: {path} is one of register-runner's own files")


def _within(real: Path, folder: Path) -> bool:
    top = Path(os.path.realpath(folder))
    return real == top or top in real.parents


def _check_existing(at: Where, path: Path) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise InputError(f"{at}: {path} is a symbolic link; refusing to replace it")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{at}: {path} exists and is not a regular file")
    try:
        raw = read(path)
    except InputError as error:
        raise InputError(f"{at}: {error}") from None
    if raw is not None and not ours(raw):
        raise InputError(
            f"{at}: {path} exists and was not written by register-runner (its first line "
            f"is not {HEADER!r}); it is left alone: move it away or choose another path"
        )


def unused_keys(where: Callable[[str], Where], keys: Mapping[str, Any]) -> list[str]:
    """A warning per key of such an executor file that nothing reads: it only goes to
    gitlab-runner's config, which this runner is kept out of."""
    return [
        f"{where(key)}: {key!r} is not used for a runner with credentials_file "
        "(it is not written into the config); ignored"
        for key in keys
    ]
