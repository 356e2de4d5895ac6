"""run_cli in the test process: each run starts as a child would and leaves the test
process as it found it; REGISTER_RUNNER_TEST_CHILD=1 brings back the child processes."""

from __future__ import annotations

import logging
import os
import sys

import pytest

from register_runner import health, secret
from register_runner.testing import inprocess
from register_runner.testing.prefix import CHILD_VARIABLE, run_cli

JOURNAL = {"JOURNAL_STREAM": "8:1234"}
# A site's --capture-tags module on PYTHONPATH, with a helper module beside it.
CAPTURE = """\
import warnings
import site_helper

def capture_tags():
    warnings.warn("inventory is stale")
    return site_helper.TAGS
"""


def sync(prefix, *args, **kwargs):
    return run_cli(["sync", "--prefix", str(prefix.root), *args], **kwargs)


def process_state() -> tuple:
    """What an in-process run may touch in the test process."""
    ours = logging.getLogger("register_runner")
    return (
        dict(os.environ),
        (sys.stdin, sys.stdout, sys.stderr),
        sys.path[:],
        (ours.handlers[:], ours.level, ours.propagate),
        dict(secret._known.forms),
    )


def test_a_run_leaves_the_test_process_as_it_found_it(prefix):
    before = process_state()
    folder = prefix.root / "credentials"

    result = sync(prefix, "-v", "--table", "--credentials-directory", str(folder), env=JOURNAL)

    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("<")  # the run had JOURNAL_STREAM: journald's format
    # The run read the access token: secret's registry is as it was all the same.
    assert process_state() == before


def test_a_run_does_not_take_the_test_processs_record_for_its_own(prefix, monkeypatch):
    # A library test in this process recorded a run; then a run that fails before it
    # has a state folder reports its own exit status in the metrics.
    health.record_run(
        prefix.root, "main", exit_status=0, runners=[], warnings=[], access_tokens=None
    )
    missing, metrics = prefix.root / "missing", prefix.root / "rr.prom"

    failed = run_cli(["sync", "--prefix", str(missing), "--metrics-file", str(metrics)])

    assert failed.returncode == 2
    assert 'register_runner_last_run_exit_code{instance="main"} 2' in metrics.read_text()


def test_warnings_and_pythonpath_modules_are_a_childs(gitlab, prefix, tmp_path):
    results = []
    for tags in ("rack-7", "rack-9"):
        site = tmp_path / tags
        site.mkdir()
        (site / "site_capture.py").write_text(CAPTURE)
        (site / "site_helper.py").write_text(f"TAGS = [{tags!r}]\n")
        results.append(
            sync(prefix, "--capture-tags", "site_capture", env={"PYTHONPATH": str(site)})
        )
        assert "site_helper" not in sys.modules and str(site) not in sys.path

    for result in results:
        assert result.returncode == 0, result.stderr
        # Shown on stderr each time, as the interpreter shows it; not kept by pytest.
        assert "UserWarning: inventory is stale" in result.stderr
    # Each run imported its own site_helper, not the one the run before had loaded.
    (runner,) = gitlab.runners()
    assert "rack-9" in runner.tag_list and "rack-7" not in runner.tag_list


@pytest.mark.parametrize(
    "args",
    [["--version"], ["sync", "--jobs", "0"], ["frobnicate"], ["plan", "--json"]],
    ids=["version", "usage", "unknown-command", "plan"],
)
def test_in_process_and_child_say_the_same(prefix, args):
    command = [*args, "--prefix", str(prefix.root)] if args[0] == "plan" else args

    here = run_cli(command, env=JOURNAL)
    child = run_cli(command, env=JOURNAL, child=True)

    assert (here.returncode, here.stdout, here.stderr) == (
        child.returncode,
        child.stdout,
        child.stderr,
    )


def test_the_variable_runs_every_cli_in_a_child(monkeypatch):
    def refuse(*args):
        raise AssertionError("ran in the test process")

    monkeypatch.setattr(inprocess, "run", refuse)
    monkeypatch.setenv(CHILD_VARIABLE, "1")

    assert run_cli(["--version"]).returncode == 0
