"""Reading the template and the executor files into the model.

Everything is validated here, before any API call: a problem is an InputError naming the
file (and the line, where one can be told), and nothing has been changed yet.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional, Union, cast

from . import credentials, files, tags
from .clients import CLIENT_CONFIGS, PLACEHOLDERS, client_configs, parse_scope, parse_url
from .errors import HostInputError, InputError
from .model import BadFile, ClientConfig, Executor, Globals, Identity, Inputs, typed
from .parsed import ParsedFiles
from .tags import TagPolicy
from .tomlfile import Located, Where, locate, parse_toml, read_toml

MAX_FILE_BYTES = 1 << 20
# gitlab-runner keys that come from the API: an executor file has no say in them.
API_OWNED_KEYS = ("id", "token", "token_obtained_at", "token_expires_at")
ACCESS_LEVELS = ("not_protected", "ref_protected")
MAX_TAGS = 50
MIN_TIMEOUT = 600
MAX_NOTE = 1024
# [register_runner] host: it goes into the marker and the default names, so nothing that
# could break either (a space, a bracket, "=").
HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")
# The keys of a [[runners]] entry gitlab-runner knows (gitlab-api.md "Keys gitlab-runner
# knows"). It ignores any other silently, so a typo there is warned about, and still
# copied: a newer gitlab-runner may know the key.
# fmt: off
RUNNER_KEYS = frozenset((
    "name", "limit", "output_limit", "request_concurrency", "strict_check_interval",
    "unhealthy_requests_limit", "unhealthy_interval", "job_status_final_update_retry_limit",
    "url", "id", "token", "token_obtained_at", "token_expires_at", "tls-ca-file",
    "tls-cert-file", "tls-key-file", "upload_timeout", "response_header_timeout", "labels",
    "executor", "builds_dir", "cache_dir", "clone_url", "environment", "proxy_exec",
    "pre_get_sources_script", "post_get_sources_script", "pre_build_script",
    "post_build_script", "prepare_timeout", "get_sources_timeout", "debug_trace_disabled",
    "safe_directory_checkout", "clean_git_config", "shell", "step_runner_image",
    "use_slot_cgroups", "slot_cgroup_template", "feature_flags", "custom_build_dir", "referees",
    "cache", "artifact", "monitoring", "instance", "ssh", "docker", "parallels", "virtualbox",
    "machine", "kubernetes", "custom", "autoscaler", "experimental", "boot_verify",
))
# fmt: on
# Executor-file keys register-runner itself reads, never meant for gitlab-runner.
OWN_EXECUTOR_KEYS = frozenset({"credentials_file", "credentials_owner", "env_tags"})


def template_path(prefix: Path, instance: str) -> Path:
    return prefix / f"config.template.{instance}.toml"


def load(
    prefix: Path,
    identity: Identity,
    environ: Mapping[str, str],
    *,
    capture_tags_file: Union[str, Path, None] = None,
    tag_schema_file: Optional[Path] = None,
    check_permissions: bool = True,
    parsed: Optional[ParsedFiles] = None,
    isolate: bool = False,
) -> Inputs:
    """``check_permissions``: refuse secret and TLS files others may write (False for
    --insecure-permissions). ``parsed``: executor files an earlier run parsed.
    ``isolate``: a bad executor file is listed in ``bad`` (its runner is held, the others
    go on) instead of raising; the host-wide input still raises."""
    parsed = parsed or ParsedFiles(None)
    path = template_path(prefix, identity.instance)
    text = read_text(path)
    document = read_toml(path, text)
    clients = client_configs(path, text, document, environ, check_permissions)
    identity = with_host(path, text, document, identity)
    if "runners" in document:
        raise InputError(
            f"{locate(path, text, 'runners')}: [[runners]] do not belong in the "
            f"template; put each in its own file under {identity.instance}/"
        )
    policy = _tag_policy(
        path,
        text,
        document,
        identity,
        environ,
        capture_tags_file,
        tag_schema_file,
        check_permissions,
    )
    executor_dir = prefix / identity.instance
    warnings: list[str] = []
    found: list[Executor] = []
    bad: list[BadFile] = []
    for entry in _listing(executor_dir):
        file = executor_dir / entry.name
        try:
            _check_entry(executor_dir, entry)
            found.append(
                _executor(file, clients, identity, policy, warnings, parsed, check_permissions)
            )
        except HostInputError:
            raise
        except InputError as error:
            # A name that is not text never had a runner: its stem only has to print safely.
            stem = file.stem if not files.name_problem(file.name) else ascii(file.stem)
            bad.append(BadFile(stem, file, str(error)))
    executors = _unique(found, bad)
    bad.sort(key=lambda b: b.path)
    for held in bad:
        parsed.forget(held.path)
    if bad and not isolate:
        raise InputError(bad[0].error)
    left_out = (CLIENT_CONFIGS, tags.SETTINGS_TABLE)
    globals_ = Globals(path, text, {k: v for k, v in document.items() if k not in left_out})
    return Inputs(
        path,
        globals_,
        clients,
        executors,
        executor_dir,
        identity,
        policy,
        tuple(warnings),
        tuple(bad),
    )


def with_host(path: Path, text: str, document: Mapping[str, Any], identity: Identity) -> Identity:
    """``identity`` named as the template's ``[register_runner] host`` says: a fleet's
    inventory name instead of the kernel's host name, for the marker and the default
    names. The system ID stays the machine's."""
    settings = document.get(tags.SETTINGS_TABLE)
    host = settings.get("host") if isinstance(settings, dict) else None
    if host is None:
        return identity
    if not isinstance(host, str) or not HOST_NAME.fullmatch(host):
        raise InputError(
            f"{locate(path, text, 'host')}: host must be a host name (letters, digits, "
            f"'.', '-' and '_'), not {host!r}"
        )
    return replace(identity, host=host)


def _tag_policy(
    path: Path,
    text: str,
    document: Mapping[str, Any],
    identity: Identity,
    environ: Mapping[str, str],
    capture_tags: Union[str, Path, None],
    tag_schema_file: Optional[Path],
    check_permissions: bool,
) -> TagPolicy:
    """The template's [register_runner] table (removed from the output) and the tag
    options: how every runner of this instance is tagged beyond its own tags."""
    settings = document.get(tags.SETTINGS_TABLE, {})
    where = locate(path, text, tags.SETTINGS_TABLE)
    if not isinstance(settings, dict):
        raise InputError(f"{where}: {tags.SETTINGS_TABLE} must be a table")
    unknown = sorted(set(settings) - set(tags.SETTINGS_KEYS))
    if unknown:
        raise InputError(
            f"{locate(path, text, unknown[0])}: unknown [{tags.SETTINGS_TABLE}] "
            f"key {unknown[0]!r} (known: {', '.join(tags.SETTINGS_KEYS)})"
        )
    host_tags = _tags(locate(path, text, "tags"), settings.get("tags")) or []
    identity_tags = settings.get("identity_tags", False)
    if not isinstance(identity_tags, bool) and identity_tags != tags.GITLAB_RUNNER_AUTH:
        raise InputError(
            f"{locate(path, text, 'identity_tags')}: identity_tags must be true, false or "
            f'"{tags.GITLAB_RUNNER_AUTH}"'
        )
    capture_tags = _option(path, text, settings, "capture_tags", capture_tags)
    # A Path: _option joins a tag_schema to the prefix.
    tag_schema_file = cast(
        Optional[Path], _option(path, text, settings, "tag_schema", tag_schema_file)
    )
    if identity_tags is True:
        host_tags += tags.identity_tags(identity.host, identity.instance)
    origin = tags.capture_origin(capture_tags) if capture_tags is not None else None
    if check_permissions and origin is not None:
        # Code this tool runs as root with the access token in reach, wherever it is named.
        files.check_secure(origin)
    schema = tags.load_schema(Path(tag_schema_file)) if tag_schema_file is not None else None
    return TagPolicy(
        tuple(sorted(set(host_tags))),
        schema,
        tag_schema_file,
        tags.load_capture(capture_tags) if capture_tags is not None else None,
        hostname=tags.legacy_hostname(),
        instance=identity.instance,
        gitlab_runner_auth=identity_tags == tags.GITLAB_RUNNER_AUTH,
        environ=environ,
    )


def _option(
    path: Path, text: str, settings: Mapping[str, Any], key: str, given: Union[str, Path, None]
) -> Union[str, Path, None]:
    """A [register_runner] setting that is also a command-line option: a file name is
    relative to the prefix; the option, when given too, must name the same."""
    value = settings.get(key)
    if value is None:
        return given
    where = locate(path, text, key)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: {key} must be a non-empty string")
    if key == "tag_schema" or tags.is_file_name(value):
        value = path.parent / value
    if key == "tag_schema":
        same = lambda a, b: Path(a).resolve() == Path(b).resolve()  # noqa: E731
    else:  # a module name and the path of its file are the same plugin
        same = lambda a, b: tags.capture_origin(a) == tags.capture_origin(b)  # noqa: E731
    if given is not None and not same(given, value):
        raise InputError(
            f"{where}: {key} = {str(value)!r} but --{key.replace('_', '-')} {given}; give "
            "one of them (the template's is used by every command)"
        )
    return value


def _listing(folder: Path) -> list[os.DirEntry[str]]:
    if not folder.exists():
        return []
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    with os.scandir(folder) as listing:
        # The listing's file types spare a stat per file (there may be hundreds).
        return sorted(
            (entry for entry in listing if _is_executor_name(entry.name)),
            key=lambda entry: entry.name,
        )


def _check_entry(folder: Path, entry: os.DirEntry[str]) -> None:
    problem = files.name_problem(entry.name)
    if problem:
        raise InputError(f"{folder}/{entry.name!a}: {problem}; rename the file")
    if not entry.is_file():
        raise files.not_regular(folder / entry.name, _mode(entry))


def _mode(entry: os.DirEntry[str]) -> int:
    try:
        return entry.stat().st_mode
    except OSError:
        return 0  # a dangling symlink


def _is_executor_name(name: str) -> bool:
    return name.endswith(".toml") and not name.startswith(".")


def read_text(path: Path, *, check_permissions: bool = False) -> str:
    """The UTF-8 text of the input file ``path``; ``check_permissions``: refused, unread,
    when others may write it or it is not root's or the caller's."""
    check = (lambda info: files.check_secure(path, info)) if check_permissions else None
    try:
        data = files.read_file(path, limit=MAX_FILE_BYTES, check=check)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read: {error.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not valid UTF-8 (byte {error.start})") from None


# -- the template -------------------------------------------------------------------------


def _executor(
    path: Path,
    clients: Mapping[str, ClientConfig],
    identity: Identity,
    policy: TagPolicy,
    warnings: list[str],
    parsed: ParsedFiles,
    check_permissions: bool,
) -> Executor:
    text = read_text(path, check_permissions=check_permissions)
    document: Mapping[str, Any] = parsed.parse(path, text)
    if isinstance(document.get("runners"), dict):
        # Plain values cannot tell [runners.docker] from an inline runners = {...}.
        document = parse_toml(path, text)
    keys = _runner_keys(path, text, document)
    where = lambda key: Located(path, text, key)  # noqa: E731

    url = _client_url(path, where, keys.pop("url", None), clients)
    client = clients[url]
    token = keys.pop("token", None)
    if token is not None and token not in PLACEHOLDERS:
        raise InputError(
            f"{where('token')}: runner tokens are managed by register-runner; "
            'remove token (or leave it as "TODO")'
        )
    for key in API_OWNED_KEYS:
        keys.pop(key, None)
    scope = parse_scope(keys, path, text, client.scope)
    for key in ("runner_type", "group_id", "project_id"):
        keys.pop(key, None)
    # A runner that is not gitlab-runner names the file its credentials go to instead.
    credentials_file, owner = credentials.check_target(path, where, keys, path.parent)
    if credentials_file is None and (
        not isinstance(keys.get("executor"), str) or not keys["executor"]
    ):
        raise InputError(f'{path}: executor = "shell" (or docker, custom, …) is missing')

    attributes = _attributes(path, text, keys, identity, policy)
    name = keys.pop("name", identity.default_name(path.stem))
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"{where('name')}: name must be a non-empty string")
    attributes.setdefault("description", name)
    if credentials_file is None:
        warnings.extend(_unknown_keys(where, keys))
    else:
        warnings.extend(credentials.unused_keys(where, keys))
    return Executor(
        path.stem, str(path), url, scope, name, attributes, keys, credentials_file, owner
    )


def _unknown_keys(where: Callable[[str], Where], keys: Mapping[str, Any]) -> list[str]:
    """A warning per key gitlab-runner would ignore, with the closest one it knows."""
    warnings = []
    for key in keys:
        if key in RUNNER_KEYS or key in OWN_EXECUTOR_KEYS:
            continue
        import difflib  # only for a key gitlab-runner does not know

        close = difflib.get_close_matches(key, RUNNER_KEYS, n=1)
        hint = f"did you mean {close[0]}?" if close else "a newer gitlab-runner may know it"
        warnings.append(
            f"{where(key)}: gitlab-runner does not know the key {key!r} ({hint}); copied as is"
        )
    return warnings


def _runner_keys(path: Path, text: str, document: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of the one [[runners]] entry a file describes, in either shape; ``document``
    is tomlkit's or plain values."""
    runners = document.get("runners")
    if isinstance(runners, list) and runners and all(isinstance(r, dict) for r in runners):
        if len(runners) != 1:
            raise InputError(
                f"{locate(path, text, 'runners')}: {len(runners)} [[runners]] "
                "entries; put one runner in each file"
            )
        others = [key for key in document if key != "runners"]
        if others:
            raise InputError(
                f"{locate(path, text, others[0])}: {others[0]!r} outside "
                "[[runners]]; a file holds either one [[runners]] entry or flat keys"
            )
        return dict(_plain(runners[0]))
    keys = dict(_plain(document))
    if isinstance(runners, dict) and _is_table(runners):
        # A flat file that spells its sub-tables [runners.docker]: same meaning as [docker].
        keys.pop("runners")
        keys.update(_plain(runners))
    return keys


def _is_table(value: Any) -> bool:
    """A [table] of a tomlkit document (not an inline one): only tomlkit tells them apart,
    and only a document _executor parsed with it gets here."""
    from tomlkit.items import Table

    return isinstance(value, Table)


def _plain(value: Any) -> Any:
    return value.unwrap() if hasattr(value, "unwrap") else value


def _client_url(
    path: Path, where: Callable[[str], Where], raw: Any, clients: Mapping[str, ClientConfig]
) -> str:
    url = parse_url(raw, where("url"))
    if url is None:
        if raw is not None and not (isinstance(raw, str) and raw.strip() in PLACEHOLDERS):
            raise InputError(f"{where('url')}: url {raw!r} is not an http(s) URL")
        if len(clients) == 1:
            return next(iter(clients))
        raise InputError(
            f"{path}: several client_configs; set url to one of " + ", ".join(sorted(clients))
        )
    if url not in clients:
        raise InputError(
            f"{where('url')}: url {url} matches no client_configs entry "
            f"(known: {', '.join(sorted(clients))})"
        )
    return url


def _attributes(
    path: Path, text: str, keys: dict[str, Any], identity: Identity, policy: TagPolicy
) -> dict[str, Any]:
    """Pop the registration attributes out of ``keys``, checked as GitLab would check them."""
    where = lambda key: Located(path, text, key)  # noqa: E731
    if "tags" in keys and "tag_list" in keys:
        raise InputError(f"{where('tag_list')}: set tags or tag_list, not both")
    attributes: dict[str, Any] = {}
    tag_key = "tags" if "tags" in keys else "tag_list"
    own = _tags(where(tag_key), keys.pop(tag_key, None))
    # An input, like the registration attributes: never copied into the output.
    env_tags = _tags(where("env_tags"), keys.pop("env_tags", None), split=False)
    tags = policy.tags_for(str(path), keys.get("executor"), env_tags, own)
    if tags is not None:
        if len(tags) > MAX_TAGS:
            raise InputError(
                f"{where(tag_key)}: {len(tags)} tags with the host's; GitLab "
                f"accepts at most {MAX_TAGS}"
            )
        policy.check(str(path), tags)
        attributes["tag_list"] = tags
    for key in ("run_untagged", "locked", "paused"):
        if key in keys:
            attributes[key] = _typed(where(key), key, keys.pop(key), bool, "true or false")
    for key in ("description", "maintenance_note"):
        if key in keys:
            attributes[key] = _typed(where(key), key, keys.pop(key), str, "a string")
    if "access_level" in keys:
        level = keys.pop("access_level")
        if level not in ACCESS_LEVELS:
            raise InputError(
                f"{where('access_level')}: access_level must be one of " + ", ".join(ACCESS_LEVELS)
            )
        attributes["access_level"] = level
    if "maximum_timeout" in keys:
        timeout = _typed(
            where("maximum_timeout"),
            "maximum_timeout",
            keys.pop("maximum_timeout"),
            int,
            "a number of seconds",
        )
        if timeout < MIN_TIMEOUT:
            raise InputError(
                f"{where('maximum_timeout')}: maximum_timeout must be at least "
                f"{MIN_TIMEOUT} seconds (GitLab refuses less)"
            )
        attributes["maximum_timeout"] = timeout

    # A runner with tags takes only the jobs tagged for it; GitLab refuses
    # run_untagged = false without tags.
    attributes.setdefault("run_untagged", not tags)
    if not attributes["run_untagged"] and not tags:
        raise InputError(
            f"{where('run_untagged')}: run_untagged = false needs at least one tag "
            "(GitLab refuses it)"
        )
    note = attributes.get("maintenance_note")
    marker = identity.marker(path.stem)
    attributes["maintenance_note"] = f"{note}\n{marker}" if note else marker
    if len(attributes["maintenance_note"]) > MAX_NOTE:
        raise InputError(
            f"{where('maintenance_note')}: maintenance_note is too long (GitLab "
            f"keeps {MAX_NOTE} characters and register-runner adds its marker)"
        )
    return attributes


def _tags(where: Where, raw: Any, *, split: bool = True) -> Optional[list[str]]:
    """A list of tags (or, ``split``, a comma-separated string); with ``split`` off, a list
    of names (env_tags), kept in order."""
    if raw is None:
        return None
    if isinstance(raw, str) and split:
        raw = raw.split(",")
    if not isinstance(raw, list) or not all(isinstance(tag, str) for tag in raw):
        raise InputError(f"{where}: {'tags' if split else 'env_tags'} must be a list of strings")
    if not split:
        return list(raw)
    tags = sorted({tag.strip() for tag in raw if tag.strip()})
    if len(tags) > MAX_TAGS:
        raise InputError(f"{where}: {len(tags)} tags; GitLab accepts at most {MAX_TAGS}")
    return tags


def _typed(where: Where, key: str, value: Any, kind: type, described: str) -> Any:
    try:
        return typed(value, kind)
    except TypeError:
        raise InputError(f"{where}: {key} must be {described}") from None


def _unique(executors: list[Executor], bad: list[BadFile]) -> tuple[Executor, ...]:
    """The executors, less each that takes a runner name or a credentials file an earlier
    one (by file name) has: that one is bad input, the first keeps its runner."""
    names: dict[str, str] = {}
    targets: dict[str, str] = {}
    kept = []
    for executor in executors:
        if executor.name in names:
            error = (
                f"{executor.path}: runner name {executor.name!r} is also used by "
                f"{names[executor.name]}"
            )
        elif executor.credentials_file is not None and executor.credentials_file in targets:
            error = (
                f"{executor.path}: credentials_file {executor.credentials_file} is also used "
                f"by {targets[executor.credentials_file]}"
            )
        else:
            names[executor.name] = executor.path
            if executor.credentials_file is not None:
                targets[executor.credentials_file] = executor.path
            kept.append(executor)
            continue
        bad.append(BadFile(executor.stem, Path(executor.path), error))
    return tuple(kept)
