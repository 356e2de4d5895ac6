"""``register-runner demo``: try the tool without a GitLab. Builds a throwaway prefix from
the bundled examples, starts the built-in fake GitLab on 127.0.0.1, and runs plan, sync and
a second sync, showing what each did. Touches nothing outside its own folder."""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any, Optional

from .. import api, report
from ..output import output_path
from ..secret import mask
from ..testing.fake_gitlab import FakeGitLab

EXAMPLE_URL = "https://gitlab.example.com"
EXAMPLE_GROUP = 42


def run(args: argparse.Namespace) -> int:
    return demo(args.keep, table=args.table)


def demo(keep: Optional[Path], *, table: bool) -> int:
    if keep is not None:
        keep.mkdir(parents=True)
        return _demo(keep, table)
    with tempfile.TemporaryDirectory(prefix="register-runner-demo-") as folder:
        return _demo(Path(folder), table)


def _demo(prefix: Path, table: bool) -> int:
    prefix.chmod(0o700)
    with FakeGitLab() as gitlab:
        token = gitlab.add_access_token(
            scopes=("create_runner", "manage_runner", "read_api"), groups=(EXAMPLE_GROUP,)
        )
        build_prefix(prefix, gitlab.url, token)
        _heading(f"fake GitLab at {gitlab.url}; prefix {prefix}")
        status = 0
        for title, step in (
            ("register-runner plan", lambda: _shown(table, api.plan(prefix, deadline=10.0))),
            (
                "register-runner (sync)",
                lambda: _shown(table, api.sync(prefix, deadline=10.0, lock_timeout=5.0)),
            ),
            (
                "register-runner (sync again: nothing to do)",
                lambda: _shown(table, api.sync(prefix, deadline=10.0, lock_timeout=5.0)),
            ),
        ):
            _heading(title)
            status = step() or status
        _heading(f"{output_path(prefix, 'main').name} (tokens masked)")
        print(masked(output_path(prefix, "main").read_text()))
        mutating = [f"{r.method} {r.path}" for r in gitlab.mutating_requests()]
        _heading(
            f"GitLab saw {len(gitlab.requests)} requests, {len(mutating)} changing "
            f"something: {', '.join(mutating)}"
        )
    return status


def _shown(table: bool, result: api.Result) -> int:
    report.emit_result(False, result, table_asked=table)
    return result.exit_status


def build_prefix(prefix: Path, url: str, token: str) -> None:
    """The bundled examples, pointed at ``url``, with the access token in a file."""
    secrets = prefix / "secrets"
    secrets.mkdir(mode=0o700, exist_ok=True)
    (secrets / "gitlab.pat").write_text(token + "\n")
    (secrets / "gitlab.pat").chmod(0o600)
    for relative, text in _examples(resources.files("register_runner") / "examples"):
        target = prefix / relative
        target.parent.mkdir(mode=0o700, exist_ok=True)
        text = text.replace(EXAMPLE_URL, url)
        text = re.sub(
            r'personal_access_token_file = ".*"',
            f'personal_access_token_file = "{secrets / "gitlab.pat"}"',
            text,
        )
        target.write_text(text)


def _examples(folder: Any, relative: str = "") -> Iterator[tuple[str, str]]:
    """The bundled example files; read through importlib so that it works from the zipapp."""
    for item in sorted(folder.iterdir(), key=lambda i: i.name):
        path = f"{relative}{item.name}"
        if item.is_dir():
            yield from _examples(item, path + "/")
        elif item.name.endswith(".toml"):
            yield path, item.read_text(encoding="utf-8")


def masked(text: str) -> str:
    return re.sub(
        r'^(\s*token = ")([^"]+)(")', lambda m: m[1] + mask(m[2]) + m[3], text, flags=re.MULTILINE
    )


def _heading(title: str) -> None:
    width = min(100, shutil.get_terminal_size((100, 20)).columns)
    print(f"\n=== {title} " + "=" * max(0, width - len(title) - 5), flush=True)
