"""``register-runner verify``: check one runner token, or every token in the generated
config. 0 valid, 1 invalid (GitLab answered 403), 3 could not tell."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from .. import api, report
from ..clients import MAX_SECRET_BYTES
from ..errors import InputError
from ..files import read_file
from ..secret import Secret


def run(args: argparse.Namespace) -> int:
    given = args.token is not None or args.token_file is not None
    if (args.url is None) != (not given):
        raise InputError("verify needs both --url and one of --token, --token-file, --token -")
    result = api.verify(
        args.prefix,
        args.instance,
        url=args.url,
        token=read_token(args.token, args.token_file) if given else None,
        system_id=args.system_id,
        tls_ca_file=args.tls_ca_file,
        deadline=args.deadline,
        timeout=args.timeout,
        jobs=args.jobs,
    )
    report.emit(
        args.json,
        {"command": "verify", "exit_status": result.exit_status},
        [row.as_row() for row in result.actions],
        result.warnings,
        table_asked=args.table,
    )
    return result.exit_status


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
