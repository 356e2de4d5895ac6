"""The committed man page, man/register-runner.1, is what the command line gives: a
changed option or help text without `scripts/manpage.py` fails here."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from register_runner import cli

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "man" / "register-runner.1"


def test_the_committed_man_page_is_current():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "manpage.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr) == (0, "")


def test_the_man_page_documents_every_command_and_no_secret():
    text = PAGE.read_text(encoding="utf-8").replace("\\-", "-")
    for command in cli.COMMANDS:
        assert f".SH COMMAND \\fI\\,'register-runner {command}'" in text
    # Token prefixes GitLab hands out: runner, personal access and registration tokens.
    assert not re.search(r"glrt-|glpat-|glrtr-|GR1348941", text)
