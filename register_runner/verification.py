"""verify: whether GitLab takes runner tokens, checked with this host's system ID (or
none: no runner manager is made up). No state changes; one call per token."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from . import custom_runners, state
from .errors import InputError
from .hostid import SYSTEM_ID_FILE, VALID_ID, read_system_id
from .model import ActionResult, ClientConfig, Kind, Scope, Verdict, normalize_url
from .output import credentials_of, output_path, read_config
from .secret import Secret
from .workspace import MAX_JOBS, Options

# (name, client, token, the id the host knows it by)
Check = tuple[str, ClientConfig, Secret, Optional[int]]


def check_system_id(value: str) -> None:
    if not VALID_ID.match(value):
        raise InputError(f"--system-id {value!r}: expected s_ or r_ and 12 letters or digits")


def prefix_system_id(prefix: Path) -> Optional[str]:
    """The prefix's ID if it has one: verifying with a made-up ID would create a stray
    runner manager in GitLab."""
    return read_system_id(prefix / SYSTEM_ID_FILE)


def config_checks(options: Options) -> list[Check]:
    """A check of every token in the generated config and the custom runners' files."""
    path = output_path(options.prefix, options.instance)
    config = read_config(path)
    stored = state.load(options.prefix, options.instance)
    if config.raw is None and not stored.credentials_files:
        raise InputError(f"{path}: no such file; run register-runner first")
    # Runners are known by their executor file's stem everywhere else too, and by their
    # GitLab and id together.
    stems: dict[tuple[str, Any], str] = {(r.url, r.id): stem for stem, r in stored.runners.items()}
    checks: list[Check] = []
    for index, entry in enumerate(config.entries, 1):
        credentials = credentials_of(entry)
        url = normalize_url(str(entry.get("url", "")))
        if credentials is None or not url:
            raise InputError(f"{path}: runner #{index} has no url or token")
        client = ClientConfig(
            url,
            Scope(),
            tls_ca_file=entry.get("tls-ca-file"),
            tls_cert_file=entry.get("tls-cert-file"),
            tls_key_file=entry.get("tls-key-file"),
        )
        checks.append(
            (
                stems.get((url, entry.get("id"))) or str(entry.get("name", f"#{index}")),
                client,
                credentials.token,
                entry.get("id"),
            )
        )
    # Runners that are not gitlab-runner: their tokens are in their credentials files.
    for stem, found in custom_runners.stored_files(stored):
        if found.credentials is None or not found.url:
            raise InputError(f"{stored.credentials_files[stem]}: no GITLAB_URL or RUNNER_TOKEN")
        client = ClientConfig(found.url, Scope(), tls_ca_file=found.tls_ca_file)
        checks.append((stem, client, found.credentials.token, found.id))
    return checks


def verify(
    options: Options, checks: list[Check], system_id: Optional[str]
) -> tuple[list[ActionResult], list[str], int]:
    """Each token checked, concurrently: its row (result "valid", "invalid" or "unknown"),
    a warning for each "unknown" saying why, and the exit status (1 any invalid, 3 any
    unknown, else 0)."""
    from .gitlab import Connection, Deadline, Pool

    connection = Connection(Deadline(options.deadline), options.timeout, system_id=system_id or "")
    pool = Pool(connection, options.jobs or MAX_JOBS)

    def check(item: Check) -> tuple[Verdict, Optional[int], str]:
        _, client, token, _ = item
        api = pool.client(client)
        verdict, issued = api.verify(token, system_id)
        why = api.last_failure if verdict is Verdict.UNKNOWN else ""
        return verdict, issued.id if issued else None, why

    try:
        results = pool.map(check, checks)
    finally:
        pool.close()
    rows = [
        ActionResult(
            Kind.VERIFY, name, found or known, verdict.value, f"{client.url} {token.masked}"
        )
        for (name, client, token, known), (verdict, found, _) in zip(checks, results)
    ]
    # "unknown" alone does not say whether to wait or to fix something: say why.
    warnings = [
        f"{name}: could not tell whether the token is valid: {why}"
        for (name, *_), (verdict, _, why) in zip(checks, results)
        if verdict is Verdict.UNKNOWN
    ]
    verdicts = {verdict for verdict, _, _ in results}
    status = 1 if Verdict.INVALID in verdicts else 3 if Verdict.UNKNOWN in verdicts else 0
    return rows, warnings, status
