"""The alert rules shipped in contrib/prometheus/: valid for Prometheus (promtool check
rules), right on the situations in their unit tests (promtool test rules), and written
against the metrics that --metrics-file really writes.

Needs promtool (Debian's prometheus package; .ci/run installs it): without it these tests
fail under CI=true and skip elsewhere."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from register_runner import health, model

RULES = Path(__file__).resolve().parent.parent / "contrib" / "prometheus"
RULES_FILE = RULES / "register-runner.rules.yml"
TESTS_FILE = RULES / "register-runner.rules.test.yml"

pytestmark = pytest.mark.slow


def promtool(*args: str) -> subprocess.CompletedProcess:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool not found: apt-get install prometheus (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return subprocess.run(
        [found, *args], capture_output=True, text=True, cwd=str(RULES), timeout=60
    )


def test_promtool_accepts_the_rules():
    result = promtool("check", "rules", RULES_FILE.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


def test_the_rules_unit_tests_pass():
    result = promtool("test", "rules", TESTS_FILE.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_rules_use_only_metrics_that_register_runner_writes():
    run = model.Run(
        datetime(2026, 1, 1, tzinfo=timezone.utc),
        0,
        [{"runner": "shell", "id": 1, "verdict": "valid", "token_expires_at": "2026-02-01"}],
        [],
        {"https://gitlab.example.com": "2026-03-01"},
    )
    written = set(re.findall(r"^(register_runner_\w+)\{", health.render_metrics("main", run), re.M))
    used = set(re.findall(r"\bregister_runner_[a-z_]+\b", RULES_FILE.read_text()))
    assert used - written == set()
