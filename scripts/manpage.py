#!/usr/bin/env python3
"""Write man/register-runner.1 from the command line's own parser (register_runner/cli.py),
with argparse-manpage, plus the sections in man/register-runner.include.

Usage:
    scripts/manpage.py           regenerate it (the date changes only with the text)
    scripts/manpage.py --check   exit 1 when the committed page is not what the parser
                                 gives (tests/test_manpage.py runs this)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "man" / "register-runner.1"
INCLUDE = ROOT / "man" / "register-runner.include"
DATE = re.compile(r'^\.TH \S+ "1" "(\d{4})\\-(\d\d)\\-(\d\d)"')


def render(epoch: int) -> str:
    sys.path.insert(0, str(ROOT))
    from register_runner import __version__

    # The date comes from SOURCE_DATE_EPOCH, and argparse wraps the usage lines at
    # $COLUMNS (the terminal's width otherwise): both fixed, the same parser gives the
    # same page on every machine.
    environment = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch), "COLUMNS": "80"}
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
    )
    command = [
        # Its command line, the interface it documents (the module has no __main__).
        *(
            sys.executable,
            "-c",
            "import sys; from argparse_manpage.cli import main; sys.exit(main())",
        ),
        *("--module", "register_runner.cli", "--function", "build_parser"),
        *("--prog", "register-runner", "--project-name", "register-runner"),
        *("--version", __version__, "--manual-title", "register-runner manual"),
        "--description",
        "keep a host's GitLab runners registered and its gitlab-runner config correct",
        *("--include", str(INCLUDE)),
    ]
    return subprocess.run(
        command, env=environment, check=True, capture_output=True, text=True
    ).stdout


def committed_epoch() -> int | None:
    """The date in the committed page, so that regenerating an unchanged page is a no-op."""
    if not PAGE.exists():
        return None
    match = DATE.match(PAGE.read_text(encoding="utf-8"))
    if not match:
        return None
    day = datetime(*map(int, match.groups()), tzinfo=timezone.utc)
    return int(day.timestamp())


def main(arguments: list[str]) -> int:
    if arguments not in ([], ["--check"]):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    epoch = committed_epoch()
    current = PAGE.read_text(encoding="utf-8") if PAGE.exists() else None
    if epoch is not None and render(epoch) == current:
        return 0
    if arguments:
        print(
            f"{PAGE.relative_to(ROOT)} is not what the command line gives: "
            "run scripts/manpage.py and commit it",
            file=sys.stderr,
        )
        return 1
    PAGE.write_text(render(int(time.time())), encoding="utf-8")
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
