"""``config.<instance>.toml``: reading it back, rendering it, replacing it safely."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import tomli_w

from .clients import CLIENT_CONFIGS
from .errors import InputError
from .files import atomic_write, read_regular
from .model import (
    ClientConfig,
    Credentials,
    Executor,
    ExistingConfig,
    Globals,
    Observed,
    RunnerKey,
    StoredRunner,
)
from .secret import Secret
from .tags import SETTINGS_TABLE
from .timeutil import NEVER, parse_timestamp
from .tomlfile import parse_toml, read_toml, remove_with_comments

if TYPE_CHECKING:
    from .parsed import ParsedFiles

TOKEN_FIELDS = ("token", "token_obtained_at", "token_expires_at")
WRITE_ATTEMPTS = 5


def read_config(path: Path, parsed: Optional[ParsedFiles] = None) -> ExistingConfig:
    """The config as it is on disk; ``parsed`` remembers what was made of it."""
    raw = read_regular(path)
    if raw is None:
        return ExistingConfig(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not valid UTF-8") from None
    content = parsed.parse(path, text) if parsed is not None else read_toml(path, text)
    runners = content.get("runners", [])
    if not isinstance(runners, list) or not all(isinstance(r, dict) for r in runners):
        raise InputError(f"{path}: runners is not a list of [[runners]] tables")
    return ExistingConfig(path, raw, content)


def credentials_of(entry: Mapping[str, Any]) -> Optional[Credentials]:
    token = entry.get("token")
    if not isinstance(token, str) or not token:
        return None
    expires = _datetime(entry.get("token_expires_at"))
    return Credentials(
        Secret(token),
        _datetime(entry.get("token_obtained_at")),
        None if expires == NEVER else expires,
    )


def _datetime(value: Any) -> Optional[datetime]:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, str) and value:
        return parse_timestamp(value)
    return None


def runner_entry(
    name: str,
    url: str,
    runner_id: int,
    credentials: Credentials,
    tls_ca_file: Optional[str],
    settings: Mapping[str, Any],
    *,
    tls_cert_file: Optional[str] = None,
    tls_key_file: Optional[str] = None,
) -> dict[str, Any]:
    """One [[runners]] entry: the API-owned keys first, then the executor file's keys.
    The client_config's TLS files go along under gitlab-runner's own names."""
    entry: dict[str, Any] = {"name": name, "url": url, "id": runner_id}
    entry.update(credentials.as_entry())
    for key, value in (
        ("tls-ca-file", tls_ca_file),
        ("tls-cert-file", tls_cert_file),
        ("tls-key-file", tls_key_file),
    ):
        if value:
            entry[key] = value
    entry.update((k, v) for k, v in settings.items() if k not in entry)
    return entry


def runner_entries(
    executors: Sequence[Executor],
    clients: Mapping[str, ClientConfig],
    runners: Mapping[str, StoredRunner],
    credentials: Callable[[str], Optional[Credentials]],
    kept: Optional[Mapping[str, Mapping[str, Any]]] = None,
) -> list[dict[str, Any]]:
    """The [[runners]] entries, sorted by stem, of every executor that has a runner and a
    token (``credentials`` by stem). A runner that is not gitlab-runner has none: it
    would take that runner's jobs. ``kept``: entries of held runners (by stem), written
    as they are."""
    kept = kept or {}
    entries: list[tuple[str, dict[str, Any]]] = [(s, dict(e)) for s, e in kept.items()]
    for executor in executors:
        stored = runners.get(executor.stem)
        if executor.credentials_file is not None or stored is None:
            continue
        found = credentials(executor.stem)
        if found is None:
            continue
        client = clients.get(stored.url)
        entries.append(
            (
                executor.stem,
                runner_entry(
                    executor.name,
                    stored.url,
                    stored.id,
                    found,
                    client.tls_ca_file if client else None,
                    executor.settings,
                    tls_cert_file=client.tls_cert_file if client else None,
                    tls_key_file=client.tls_key_file if client else None,
                ),
            )
        )
    return [entry for _, entry in sorted(entries, key=lambda item: item[0])]


def kept_entries(
    config: ExistingConfig,
    observed: Observed,
    held: Iterable[str],
    rotated: Optional[Mapping[RunnerKey, Credentials]] = None,
) -> dict[str, dict[str, Any]]:
    """The config entries of the held stems' runners as they are, but for a token
    gitlab-runner rotated meanwhile (``rotated``)."""
    by_key = config.by_key()
    kept = {}
    for stem in held:
        runner = observed.runners.get(stem)
        key = (runner.url, runner.id) if runner is not None else None
        entry = by_key.get(key) if key is not None else None
        if key is None or entry is None:
            continue
        entry = dict(entry)
        newer = (rotated or {}).get(key)
        if newer is not None:
            entry.update(newer.as_entry())
        kept[stem] = entry
    return kept


def observed_credentials(
    observed: Observed, stem: str, rotated: Mapping[RunnerKey, Credentials]
) -> Optional[Credentials]:
    """The token a runner has now: the one gitlab-runner rotated in meanwhile, else the
    one read back."""
    runner = observed.runners.get(stem)
    if runner is None or runner.token is None:
        return None
    return rotated.get((runner.url, runner.id)) or Credentials(
        runner.token, runner.token_obtained_at, runner.token_expires_at
    )


def entries_as_observed(
    executors: Sequence[Executor],
    clients: Mapping[str, ClientConfig],
    observed: Observed,
    kept: Optional[Mapping[str, Mapping[str, Any]]] = None,
) -> list[dict[str, Any]]:
    """The entries a sync that changes nothing in GitLab would write (``plan``)."""
    runners = {
        stem: StoredRunner(r.id, r.url, r.scope, dict(r.applied))
        for stem, r in observed.runners.items()
    }
    return runner_entries(
        executors, clients, runners, lambda stem: observed_credentials(observed, stem, {}), kept
    )


def template_document(globals_: Globals) -> Any:
    """The template as tomlkit keeps it (comments and order), minus client_configs and
    [register_runner]: parsed only to write a config, never on a steady start."""
    document = parse_toml(globals_.path, globals_.text)
    for key in (CLIENT_CONFIGS, SETTINGS_TABLE):
        if key in document:
            remove_with_comments(document, key)
    return document


def render(globals_: Globals, entries: list[dict[str, Any]]) -> str:
    """The template's globals as tomlkit keeps them (comments and order), then the
    [[runners]] entries, which are plain values, written by tomli-w."""
    import tomlkit  # only to write: a steady start does without it

    text = tomlkit.dumps(template_document(globals_))
    if not entries:
        return text
    runners = tomli_w.dumps({"runners": [_timestamps(entry) for entry in entries]})
    return (text.rstrip("\n") + "\n\n" if text.strip() else "") + runners


class _Timestamp(datetime):
    """A datetime written as gitlab-runner writes it (``2024-01-31T12:00:00Z``); tomli-w
    writes ``str()`` of a datetime, which has a space and ``+00:00``."""

    def __str__(self) -> str:
        text = self.isoformat()
        return text[: -len("+00:00")] + "Z" if text.endswith("+00:00") else text


def _timestamps(value: Any) -> Any:
    if isinstance(value, datetime):
        return _Timestamp.fromisoformat(value.isoformat())
    if isinstance(value, dict):
        return {key: _timestamps(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_timestamps(item) for item in value]
    return value


def content_of(globals_: Globals, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """What a config holds, as plain values: equal for a file gitlab-runner re-serialised,
    so that it is not rewritten for looks, and cheap to compare before rendering."""
    content = dict(globals_.content)
    if entries:
        content["runners"] = entries
    return content


def write_config(
    existing: ExistingConfig,
    globals_: Globals,
    build: Callable[[Mapping[RunnerKey, Credentials]], list[dict[str, Any]]],
    parsed: Optional[ParsedFiles] = None,
) -> bool:
    """Write the globals and the [[runners]] entries ``build`` returns, unless the content
    would not change; ``parsed`` learns what was written.

    gitlab-runner may rotate a token and rewrite the file while this run works: the file
    is read again just before it is replaced, and a token that changed meanwhile is taken
    over (``build`` gets it) rather than reverted. Returns whether the file was replaced.
    """
    baseline = existing
    rotated: dict[RunnerKey, Credentials] = {}
    for _ in range(WRITE_ATTEMPTS):
        entries = build(rotated)
        current = read_regular(existing.path)
        if current != baseline.raw:
            now = read_config(existing.path)
            rotated.update(_rotated_since(baseline, now))
            baseline = now
            continue
        if current is not None and baseline.content == content_of(globals_, entries):
            return False
        if current is not None:
            atomic_write(existing.path.with_name(existing.path.name + ".bak"), current)
        text = render(globals_, entries)
        atomic_write(existing.path, text.encode())
        if parsed is not None:
            parsed.replaced(existing.path, text)
        return True
    raise InputError(
        f"{existing.path}: kept changing while register-runner tried to write "
        "it; is another tool rewriting it?"
    )


def _rotated_since(before: ExistingConfig, after: ExistingConfig) -> dict[RunnerKey, Credentials]:
    old = before.by_key()
    rotated = {}
    for key, entry in after.by_key().items():
        credentials = credentials_of(entry)
        if credentials is None:
            continue
        previous = old.get(key, {})
        if any(previous.get(field) != entry.get(field) for field in TOKEN_FIELDS):
            rotated[key] = credentials
    return rotated
