"""Killed at any point, the next run converges: no duplicate, no orphan, no lost token.
Two runs on one prefix never both mutate."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from register_runner.testing.prefix import start_cli

SHELL = 'executor = "shell"\ntags = ["linux"]\n'
MARKER = "[register-runner "

# (method, path, when): every kind of request sync mutates with, held before GitLab acts
# and after it acted but before the answer reached the tool.
CRASH_POINTS = [
    (method, path, when)
    for method, path in (
        ("POST", r"^/user/runners$"),
        ("PUT", r"^/runners/\d+$"),
        ("DELETE", r"^/runners/\d+$"),
    )
    for when in ("before", "after")
]


def prepare(gitlab, make, cli):
    """Synced runners a, b, c; then a's token revoked (recreate), b's tags changed
    (update), c's file removed (delete) and d added (create)."""
    prefix = make(executors={"a": SHELL, "b": SHELL, "c": SHELL})
    assert cli(prefix).returncode == 0
    gitlab.revoke_runner_token(prefix.runner("a")["id"])
    prefix.write_executor("b", 'executor = "shell"\ntags = ["linux", "gpu"]\n')
    prefix.remove_executor("c")
    prefix.write_executor("d", SHELL)
    return prefix


def assert_converged(gitlab, prefix, foreign_ids=()):
    ours = [r for r in gitlab.runners() if MARKER in (r.maintenance_note or "")]
    by_stem = {}
    for runner in ours:
        stem = runner.description.rsplit("-", 1)[1]
        assert stem not in by_stem, f"duplicate runner for {stem}"
        by_stem[stem] = runner
    assert sorted(by_stem) == ["a", "b", "d"]
    for stem, runner in by_stem.items():
        entry = prefix.runner(stem)
        assert entry["id"] == runner.id and entry["token"] == runner.token
    assert sorted(by_stem["b"].tag_list) == ["gpu", "linux"]
    assert len(prefix.runners()) == 3
    assert all(gitlab.runner(i) is not None for i in foreign_ids)


@pytest.mark.parametrize(("method", "path", "when"), CRASH_POINTS)
def test_sigkill_at_each_mutation_point_then_rerun_converges(gitlab, make, cli, method, path, when):
    foreign = gitlab.add_runner(runner_type="instance_type", description="not ours")
    prefix = prepare(gitlab, make, cli)
    block = gitlab.block(method=method, path=path, when=when)
    process = start_cli(["sync", "--prefix", str(prefix.root), "--jobs", "1"])
    try:
        assert block.reached.wait(30), "the sync never reached the crash point"
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        block.release()
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    assert gitlab.wait_idle(30), "GitLab is still handling the killed run's request"

    result = cli(prefix)

    assert result.returncode == 0, result.stderr
    assert_converged(gitlab, prefix, [foreign.id])
    gitlab.clear_requests()
    assert cli(prefix).returncode == 0
    assert gitlab.mutating_requests() == []


def test_kill_between_two_creates_recovers_the_first(gitlab, make, cli):
    """The first create was answered, but the token was only in memory when the run died."""
    prefix = make(executors={"a": SHELL, "b": SHELL})
    gitlab.clear_requests()
    block = gitlab.block(method="POST", path=r"^/user/runners$", when="before")
    process = start_cli(["sync", "--prefix", str(prefix.root), "--jobs", "1"])
    try:
        assert block.reached.wait(30)
        # Let the first create through, hold the second.
        block.release()
        second = gitlab.block(method="POST", path=r"^/user/runners$", when="before")
        assert second.reached.wait(30)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        second.release()
    finally:
        if process.poll() is None:
            process.kill()
    assert gitlab.wait_idle(30), "GitLab is still handling the killed run's request"

    assert cli(prefix).returncode == 0

    ours = [r for r in gitlab.runners() if MARKER in (r.maintenance_note or "")]
    assert sorted(r.description.rsplit("-", 1)[1] for r in ours) == ["a", "b"]
    assert {r["id"] for r in prefix.runners()} == {r.id for r in ours}


KILL_AT_CONFIG_WRITE = """
import os, signal, sys
import register_runner.apply as apply
def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
apply.write_config = killed
from register_runner.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_between_state_and_config_write_loses_no_token(gitlab, make, cli):
    """Killed after the state was saved and before the config was written: the tokens the
    run obtained are in the state, so the next run writes them; nothing is recreated."""
    prefix = make(executors={"a": SHELL, "b": SHELL})
    killed = subprocess.run(
        [sys.executable, "-c", KILL_AT_CONFIG_WRITE, "sync", "--prefix", str(prefix.root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert killed.returncode == -signal.SIGKILL
    assert not prefix.output.exists() and len(gitlab.runners()) == 2
    gitlab.clear_requests()

    result = cli(prefix)

    assert result.returncode == 0, result.stderr
    assert [q for q in gitlab.mutating_requests() if q.path == "/user/runners"] == []
    for stem in ("a", "b"):
        entry = prefix.runner(stem)
        assert gitlab.runner(entry["id"]).token == entry["token"]
    state = json.loads((prefix.root / ".register-runner" / "main.json").read_text())
    assert state["unwritten"] == {}  # the tokens left the state once the config had them


def test_recovery_without_read_api_never_creates_twice(gitlab, make, cli):
    creator = gitlab.add_access_token(scopes=("create_runner", "manage_runner"), admin=True)
    prefix = make(access_token=creator)
    block = gitlab.block(method="POST", path=r"^/user/runners$", when="after")
    process = start_cli(["sync", "--prefix", str(prefix.root)])
    try:
        assert block.reached.wait(30)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        block.release()

    result = cli(prefix)

    # Without read_api the runner the killed run made cannot be found: the create is not
    # sent again (a duplicate), the run is "GitLab failing" with nothing to keep (3).
    assert result.returncode == 3, result.stderr
    assert "read_api" in result.stderr and "sync --force" in result.stderr
    assert len(gitlab.runners()) == 1
    again = cli(prefix)
    assert again.returncode == 3 and "read_api" in again.stderr
    assert len(gitlab.runners()) == 1
    # The operator checked GitLab and deleted it by hand: --force creates it again.
    gitlab.forget_runners() if hasattr(gitlab, "forget_runners") else None
    for runner in gitlab.runners():
        gitlab._runners.pop(runner.id)
    forced = cli(prefix, "sync", "--force")
    assert forced.returncode == 0, forced.stderr
    assert [r.id for r in gitlab.runners()] == [prefix.runner("shell")["id"]]


def test_second_run_waits_for_the_lock_then_gives_up(gitlab, prefix, cli):
    block = gitlab.block(method="POST", path=r"^/user/runners$", when="before")
    first = start_cli(["sync", "--prefix", str(prefix.root)])
    try:
        assert block.reached.wait(30)
        second = cli(prefix, "sync", "--lock-timeout", "0.5", "--json")
        assert second.returncode == 3
        assert "lock" in second.stderr and second.stderr.count("\n") == 1
    finally:
        block.release()
        first.wait(30)
    assert first.returncode == 0
    assert len(gitlab.runners()) == 1
    assert json.loads(cli(prefix, "sync", "--json").stdout)["exit_status"] == 0


def openers(path: Path) -> int:
    """How many open files, in every process we can see, are ``path``."""
    count = 0
    for fd in glob.glob("/proc/[0-9]*/fd/*"):
        with contextlib.suppress(OSError):
            count += os.readlink(fd) == str(path)
    return count


def test_second_run_that_waits_long_enough_goes_through(gitlab, prefix, cli):
    import threading

    block = gitlab.block(method="POST", path=r"^/user/runners$", when="before")
    first = start_cli(["sync", "--prefix", str(prefix.root)])
    assert block.reached.wait(30)
    results = {}
    waiter = threading.Thread(
        target=lambda: results.setdefault("second", cli(prefix, "sync", "--lock-timeout", "30"))
    )
    waiter.start()
    # The first run holds the lock until released: let it go once the second has the
    # lock file open too (it tries the lock right after), not after a fixed wait.
    lock = prefix.root / ".register-runner" / f"{prefix.instance}.lock"
    waited = time.monotonic()
    while openers(lock) < 2 and time.monotonic() - waited < 30:
        time.sleep(0.02)
    block.release()
    waiter.join(60)
    first.wait(30)
    assert first.returncode == 0 and results["second"].returncode == 0
    assert len(gitlab.runners()) == 1


def test_token_rotated_while_sync_runs_is_taken_over(gitlab, make, cli):
    """gitlab-runner rotates a token and rewrites the config while a sync is creating
    another runner: the sync's write keeps the rotated token instead of reverting it."""
    prefix = make(executors={"a": SHELL})
    assert cli(prefix).returncode == 0
    entry = prefix.runner("a")
    prefix.write_executor("b", SHELL)
    block = gitlab.block(method="POST", path=r"^/user/runners$", when="before")
    process = start_cli(["sync", "--prefix", str(prefix.root)])
    try:
        assert block.reached.wait(30)
        rotated = gitlab.rotate_runner_token(entry["id"])
        prefix.output.write_text(prefix.output.read_text().replace(entry["token"], rotated))
    finally:
        block.release()
    process.wait(30)

    assert process.returncode == 0, process.stderr.read()
    assert prefix.runner("a")["token"] == rotated
    assert prefix.runner("b")["token"] == gitlab.runner(prefix.runner("b")["id"]).token
    assert cli(prefix, "verify").returncode == 0
