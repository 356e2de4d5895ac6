"""The template's ``client_configs``: each GitLab, its scope, its secrets and TLS files.

Secrets come from the template, a file, the environment or a systemd credential; a secret
file is one token, and one that others may change is refused (it decides where runners
are registered). Nothing read here is printed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Optional

from . import files, systemd_credentials
from .errors import InputError
from .model import RUNNER_TYPES, ClientConfig, Scope, normalize_url
from .secret import Secret
from .tomlfile import Where, locate

CLIENT_CONFIGS = "client_configs"  # the template's table of them, left out of the output
# Values tools such as `nspawn-runner toml` print where a real one is to be filled in.
PLACEHOLDERS = frozenset({"", "TODO", "todo", "CHANGEME", "changeme", "REPLACE_ME", "xxx"})
# access_token: a group or project access token works where a personal one does.
SECRET_KEYS = ("personal_access_token", "access_token", "registration_token")
SECRET_SOURCES = ("", "_file", "_env", "_credential")
TLS_FILE_KEYS = ("tls_ca_file", "tls_cert_file", "tls_key_file")
# A token is some tens of bytes: a larger file is not one, and is not read whole.
MAX_SECRET_BYTES = 4096
CLIENT_KEYS = {"url", "runner_type", "group_id", "project_id", *TLS_FILE_KEYS} | {
    key + source for key in SECRET_KEYS for source in SECRET_SOURCES
}


def client_configs(
    path: Path,
    text: str,
    document: Mapping[str, Any],
    environ: Mapping[str, str],
    check_permissions: bool = True,
) -> dict[str, ClientConfig]:
    raw = document.get("client_configs")
    if raw is None:
        raise InputError(
            f"{path}: no client_configs: add one [[client_configs]] with the "
            "GitLab url and an access token"
        )
    if not isinstance(raw, list) or not raw or not all(isinstance(c, dict) for c in raw):
        raise InputError(
            f"{locate(path, text, 'client_configs')}: client_configs must be a "
            "non-empty list of tables"
        )
    clients: dict[str, ClientConfig] = {}
    for entry in raw:
        client = _client_config(path, text, dict(entry), environ, check_permissions)
        if client.url in clients:
            raise InputError(
                f"{locate(path, text, 'client_configs')}: two client_configs for {client.url}"
            )
        clients[client.url] = client
    return clients


def _client_config(
    path: Path,
    text: str,
    entry: dict[str, Any],
    environ: Mapping[str, str],
    check_permissions: bool = True,
) -> ClientConfig:
    unknown = sorted(set(entry) - CLIENT_KEYS)
    if unknown:
        raise InputError(
            f"{locate(path, text, unknown[0])}: unknown client_configs key {unknown[0]!r}"
        )
    url = parse_url(entry.get("url"), locate(path, text, "url"))
    if url is None:
        raise InputError(
            f"{locate(path, text, 'url')}: client_configs entry needs "
            'url = "https://gitlab.example.com"'
        )
    scope = parse_scope(entry, path, text, Scope())
    personal, access, registration = (
        _secret(path, text, entry, key, environ, check_permissions) for key in SECRET_KEYS
    )
    if personal is not None and access is not None:
        raise InputError(
            f"{locate(path, text, 'access_token')}: set personal_access_token or "
            "access_token, not both"
        )
    access = personal or access
    if access is None and registration is None:
        raise InputError(
            f"{locate(path, text, 'url')}: client_configs for {url} has neither "
            "personal_access_token (or _file/_env/_credential) nor registration_token"
        )
    ca_file, cert_file, key_file = (
        _tls_file(path, text, entry, key, check_permissions) for key in TLS_FILE_KEYS
    )
    if key_file and not cert_file:
        raise InputError(
            f"{locate(path, text, 'tls_key_file')}: tls_key_file needs tls_cert_file too"
        )
    return ClientConfig(url, scope, access, registration, ca_file, cert_file, key_file)


def _tls_file(
    path: Path, text: str, entry: Mapping[str, Any], key: str, check_permissions: bool
) -> Optional[str]:
    """A CA, certificate or key file: it decides whom the tokens are sent to (or is a
    secret), so others must not be able to change it (nor read the key)."""
    value = entry.get(key)
    if value is None:
        return None
    where = locate(path, text, key)
    if not isinstance(value, str) or not value:
        raise InputError(f"{where}: {key} must name a file")
    try:
        info = files.stat_regular(Path(value))
    except OSError as error:
        raise InputError(
            f"{where}: {key} {value!r} is not a readable file: {error.strerror}"
        ) from None
    if check_permissions:
        # Without tls_key_file, the key is in the certificate's file.
        holds_key = key == "tls_key_file" or (
            key == "tls_cert_file" and "tls_key_file" not in entry
        )
        files.check_secure(Path(value), info, secret=holds_key)
    return value


def _secret(
    path: Path,
    text: str,
    entry: Mapping[str, Any],
    key: str,
    environ: Mapping[str, str],
    check_permissions: bool = True,
) -> Optional[Secret]:
    given = [source for source in SECRET_SOURCES if key + source in entry]
    if not given:
        return None
    if len(given) > 1:
        raise InputError(
            f"{locate(path, text, key + given[1])}: set only one of "
            + ", ".join(key + source for source in given)
        )
    source = given[0]
    setting = key + source
    value = entry[setting]
    where = locate(path, text, setting)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: {setting} must be a non-empty string")
    if source and looks_like_a_token(value):
        raise InputError(
            f"{where}: {setting} should name a {_SOURCE_NAMES[source]}, but its "
            f'value looks like a token itself; use {key} = "…" for that'
        )
    readers: dict[str, Callable[[], str]] = {
        "": lambda: value,
        "_file": lambda: _read_secret_file(where, setting, path.parent / value, check_permissions),
        "_env": lambda: _read_secret_env(where, setting, value, environ),
        "_credential": lambda: _read_credential(where, setting, value, environ),
    }
    secret = readers[source]().strip()
    if not secret:
        raise InputError(f"{where}: {setting} gives an empty secret")
    return Secret(secret)


_SOURCE_NAMES = {"_file": "file", "_env": "environment variable", "_credential": "credential"}


def looks_like_a_token(value: str) -> bool:
    """A file name, variable or credential name is short or has a / or a dot; a token is
    long and has neither. Such a value is never repeated in an error message."""
    value = value.strip()
    return len(value) >= 20 and not re.search(r"[/.]", value) and not value.isupper()


def _read_secret_file(
    where: Where, setting: str, file: Path, check_permissions: bool = False
) -> str:
    """The one token in ``file``. Its content is never printed, whatever is wrong; with
    ``check_permissions``, a file others may read or change is refused unread."""
    check = (
        (lambda info: files.check_secure(file, info, secret=True)) if check_permissions else None
    )
    try:
        data = files.read_file(file, limit=MAX_SECRET_BYTES, check=check)
    except OSError as error:
        raise InputError(f"{where}: {setting}: cannot read {file}: {error.strerror}") from None
    except InputError as error:  # not a regular file, too large, loose permissions
        raise InputError(f"{where}: {setting}: {error}") from None
    problem = secret_file_problem(data)
    if problem:
        raise InputError(
            f"{where}: {setting}: {file}: {problem}; a secret file holds one token on one "
            "line, optionally ending with a newline"
        )
    return data.decode("ascii").rstrip("\r\n")


def secret_file_problem(data: bytes) -> Optional[str]:
    """What makes ``data`` other than one token with at most one trailing LF or CRLF."""
    if data.startswith(b"\xef\xbb\xbf"):
        return "it starts with a byte-order mark"
    body = data[:-2] if data.endswith(b"\r\n") else data[:-1] if data.endswith(b"\n") else data
    if not body.strip():
        return "it is empty"
    if b"\0" in body:
        return "it holds a NUL byte"
    if b"\n" in body or b"\r" in body:
        return "it holds more than one line"
    if any(byte <= 0x20 or byte >= 0x7F for byte in body):
        return "it holds spaces, control characters or non-ASCII bytes"
    return None


def _read_secret_env(where: Where, setting: str, name: str, environ: Mapping[str, str]) -> str:
    if name not in environ:
        raise InputError(f"{where}: {setting}: environment variable {name} is not set")
    return environ[name]


def _read_credential(where: Where, setting: str, name: str, environ: Mapping[str, str]) -> str:
    folder = environ.get("CREDENTIALS_DIRECTORY")
    if folder:
        return _read_secret_file(where, setting, Path(folder) / name)
    # Outside the unit (a command from a shell): the file its LoadCredential= names.
    found = systemd_credentials.sources(name, environ)
    if len(found) == 1:
        return _read_secret_file(where, setting, found[0])
    folders = ", ".join(str(f) for f in systemd_credentials.unit_folders(environ))
    problem = (
        f"the units name several sources for it ({', '.join(map(str, found))})"
        if found
        else f"no LoadCredential={name}:/path in the units under {folders}"
    )
    raise InputError(
        f"{where}: {setting}: $CREDENTIALS_DIRECTORY is not set and {problem}; pass "
        "--credentials-directory DIR (a folder holding a file named " + name + ")"
    )


def parse_url(value: Any, where: Where) -> Optional[str]:
    if not isinstance(value, str) or value.strip() in PLACEHOLDERS:
        return None
    value = normalize_url(value)
    if not re.match(r"^https?://[^/\s]+", value):
        return None
    if "@" in value.split("/", 3)[2]:
        # Never printed: the part before the @ may be a password.
        raise InputError(
            f"{where}: the url holds a user name or password (user:…@host); remove it "
            "and give the access token as personal_access_token"
        )
    return value


def parse_scope(entry: Mapping[str, Any], path: Path, text: str, default: Scope) -> Scope:
    given = {key: entry[key] for key in ("runner_type", "group_id", "project_id") if key in entry}
    if not given:
        return default
    runner_type = given.get("runner_type")
    if runner_type is None:
        runner_type = (
            "project_type"
            if "project_id" in given
            else "group_type"
            if "group_id" in given
            else default.runner_type
        )
    if runner_type not in RUNNER_TYPES:
        raise InputError(
            f"{locate(path, text, 'runner_type')}: runner_type must be one of "
            + ", ".join(RUNNER_TYPES)
        )
    ids = {}
    for key in ("group_id", "project_id"):
        value = given.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InputError(f"{locate(path, text, key)}: {key} must be a number")
        ids[key] = value
    needed = {"group_type": "group_id", "project_type": "project_id"}.get(runner_type)
    if needed and ids[needed] is None:
        raise InputError(
            f'{locate(path, text, "runner_type")}: runner_type = "{runner_type}" needs {needed}'
        )
    return Scope(
        runner_type,
        ids["group_id"] if runner_type == "group_type" else None,
        ids["project_id"] if runner_type == "project_type" else None,
    )


# -- executor files -----------------------------------------------------------------------
