"""``register-runner verify``: check one runner token, or every token in the generated
config. 0 valid, 1 invalid (GitLab answered 403), 3 could not tell."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Optional

from .. import custom_runners, report, state
from ..clients import MAX_SECRET_BYTES
from ..errors import InputError
from ..files import read_file
from ..hostid import SYSTEM_ID_FILE, VALID_ID, read_system_id
from ..model import ClientConfig, Scope, Verdict, normalize_url
from ..output import credentials_of, output_path, read_config
from ..secret import Secret
from ..workspace import MAX_JOBS, Options

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    options = Options.from_args(args)
    given = args.token is not None or args.token_file is not None
    if args.url is None and not given:
        return verify_config(options, as_json=args.json)
    if args.url is None or not given:
        raise InputError("verify needs both --url and one of --token, --token-file, --token -")
    token = read_token(args.token, args.token_file)
    system_id = args.system_id or prefix_system_id(options.prefix)
    if args.system_id and not VALID_ID.match(args.system_id):
        raise InputError(
            f"--system-id {args.system_id!r}: expected s_ or r_ and 12 letters or digits"
        )
    client = ClientConfig(normalize_url(args.url), Scope(), tls_ca_file=args.tls_ca_file)
    return verify_tokens(options, [("token", client, token, None)], system_id, args.json)


def read_token(value: Optional[str], path: Optional[Path]) -> Secret:
    if path is not None:
        try:
            text = read_file(path, limit=MAX_SECRET_BYTES).decode("utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(
                f"{path}: cannot read the token: {getattr(error, 'strerror', None) or 'not UTF-8'}"
            ) from None
        source = str(path)
    elif value == "-":
        text, source = sys.stdin.readline(), "standard input"
    else:
        text, source = value or "", "--token"
    token = text.strip()
    if not token or any(c.isspace() for c in token):
        raise InputError(f"{source}: expected one runner token")
    return Secret(token)


def prefix_system_id(prefix: Path) -> Optional[str]:
    """The prefix's ID if it has one: verifying with a made-up ID would create a stray
    runner manager in GitLab."""
    return read_system_id(prefix / SYSTEM_ID_FILE)


def verify_config(options: Options, *, as_json: bool) -> int:
    path = output_path(options.prefix, options.instance)
    config = read_config(path)
    stored = state.load(options.prefix, options.instance)
    if config.raw is None and not stored.credentials_files:
        raise InputError(f"{path}: no such file; run register-runner first")
    # Runners are known by their executor file's stem everywhere else too, and by their
    # GitLab and id together.
    stems: dict[tuple[str, Any], str] = {(r.url, r.id): stem for stem, r in stored.runners.items()}
    checks = []
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
    return verify_tokens(options, checks, prefix_system_id(options.prefix), as_json)


def verify_tokens(options: Options, checks: list, system_id: Optional[str], as_json: bool) -> int:
    from ..gitlab import Connection, Deadline, Pool

    connection = Connection(Deadline(options.deadline), options.timeout, system_id=system_id or "")
    pool = Pool(connection, options.jobs or MAX_JOBS)

    def check(item: tuple) -> tuple[Verdict, Optional[int], str]:
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
        {
            "action": "verify",
            "runner": name,
            "id": found or known,
            "result": verdict.value,
            "reason": f"{client.url} {token.masked}",
        }
        for (name, client, token, known), (verdict, found, _) in zip(checks, results)
    ]
    # "unknown" alone does not say whether to wait or to fix something: say why.
    warnings = [
        f"{name}: could not tell whether the token is valid: {why}"
        for (name, *_), (verdict, _, why) in zip(checks, results)
        if verdict is Verdict.UNKNOWN
    ]
    for warning in warnings:
        log.warning("%s", warning)
    verdicts = {verdict for verdict, _, _ in results}
    status = 1 if Verdict.INVALID in verdicts else 3 if Verdict.UNKNOWN in verdicts else 0
    report.emit(as_json, {"command": "verify", "exit_status": status}, rows, warnings)
    return status
