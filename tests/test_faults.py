"""GitLab unreachable, failing or rate-limiting: bounded retries, the last good config kept,
never a re-registration on anything but a 403."""

from __future__ import annotations

import json
import time

SHELL = 'executor = "shell"\ntags = ["linux"]\n'


def test_gitlab_down_keeps_the_config_and_exits_0(gitlab, prefix, cli):
    assert cli(prefix).returncode == 0
    before = prefix.snapshot()
    gitlab.down()

    started = time.monotonic()
    result = cli(prefix, "sync", "--deadline", "1")
    elapsed = time.monotonic() - started

    assert result.returncode == 0, result.stderr
    assert "could not verify" in result.stderr
    assert prefix.output.read_bytes() == before["config.main.toml"][0]
    assert elapsed < 10


def test_gitlab_down_with_strict_exits_3(gitlab, prefix, cli):
    assert cli(prefix).returncode == 0
    before = prefix.snapshot()
    gitlab.down()
    result = cli(prefix, "sync", "--deadline", "1", "--strict")
    assert result.returncode == 3
    assert "could not verify 1 token(s) (shell): GitLab unreachable or failing" in result.stderr
    assert prefix.snapshot() == before


def test_fresh_host_without_gitlab_exits_3_and_writes_nothing(gitlab, prefix, cli):
    gitlab.down()

    result = cli(prefix, "sync", "--deadline", "1")

    assert result.returncode == 3, result.stderr
    assert not prefix.output.exists()
    gitlab.up()
    assert cli(prefix).returncode == 0
    assert len(gitlab.runners()) == 1 and len(prefix.runners()) == 1


def test_pass_through_change_during_outage_is_still_applied(gitlab, make, cli):
    prefix = make(executors={"shell": SHELL, "new": SHELL})
    prefix.remove_executor("new")
    assert cli(prefix).returncode == 0
    gitlab.down()
    prefix.write_executor("shell", SHELL + "limit = 3\n")
    prefix.write_executor("new", SHELL)

    result = cli(prefix, "sync", "--deadline", "1")

    assert result.returncode == 0, result.stderr
    assert prefix.runner("shell")["limit"] == 3
    assert [r["name"] for r in prefix.runners()] == [prefix.runner("shell")["name"]]
    gitlab.up()
    assert cli(prefix).returncode == 0
    assert len(prefix.runners()) == 2


def test_5xx_on_verify_is_retried_not_reregistered(gitlab, prefix, cli):
    assert cli(prefix).returncode == 0
    entry = prefix.runner("shell")
    gitlab.fail_next(count=2, status=502, path=r"^/runners/verify$")
    gitlab.clear_requests()

    result = cli(prefix)

    assert result.returncode == 0, result.stderr
    verifies = [r for r in gitlab.requests if r.path == "/runners/verify"]
    assert [r.status for r in verifies] == [502, 502, 200]
    assert gitlab.mutating_requests() == []
    assert prefix.runner("shell")["id"] == entry["id"]


def test_verify_failing_past_the_deadline_never_reregisters(gitlab, prefix, cli):
    assert cli(prefix).returncode == 0
    gitlab.fail_next(count=1000, status=500, path=r"^/runners/verify$")
    gitlab.clear_requests()

    result = cli(prefix, "sync", "--deadline", "1")

    assert result.returncode == 0
    assert gitlab.mutating_requests() == []
    assert len(gitlab.runners()) == 1


def test_429_retry_after_is_waited_for(gitlab, prefix, cli):
    gitlab.fail_next(count=1, status=429, path=r"^/user/runners$", retry_after=1)

    started = time.monotonic()
    result = cli(prefix)
    elapsed = time.monotonic() - started

    assert result.returncode == 0, result.stderr
    assert [r.status for r in gitlab.requests if r.path == "/user/runners"] == [429, 201]
    assert len(gitlab.runners()) == 1
    assert elapsed >= 1.0


def test_429_longer_than_the_deadline_gives_up_in_time(gitlab, prefix, cli):
    gitlab.fail_next(count=1, status=429, path=r"^/user/runners$", retry_after=120)

    started = time.monotonic()
    result = cli(prefix, "sync", "--deadline", "2")

    assert time.monotonic() - started < 15
    assert result.returncode == 3
    assert gitlab.runners() == []


def test_ambiguous_504_on_create_is_not_retried_and_recovered_next_run(gitlab, prefix, cli):
    # A gateway timeout may hide a runner that was created: retrying could make a twin.
    block = gitlab.block(method="POST", path=r"^/user/runners$", when="after")
    process_result = {}

    import threading

    def run():
        process_result["r"] = cli(prefix, "sync", "--timeout", "1", "--deadline", "3")

    worker = threading.Thread(target=run)
    worker.start()
    assert block.reached.wait(30)
    worker.join(30)
    block.release()

    first = process_result["r"]
    assert first.returncode == 3, first.stderr
    assert len(gitlab.runners()) == 1  # created in GitLab, token lost on the way
    lost = gitlab.runners()[0].id

    second = cli(prefix)

    # Found by its marker and adopted (its token reset): no second create, no duplicate.
    assert second.returncode == 0, second.stderr
    assert [r.id for r in gitlab.runners()] == [lost]
    assert prefix.runner("shell")["id"] == lost
    assert prefix.runner("shell")["token"] == gitlab.runner(lost).token
    assert "event=recovered" in second.stderr
    assert not [q for q in gitlab.mutating_requests() if q.path == "/user/runners"][1:]


def test_revoked_access_token_is_a_refusal(gitlab, prefix, cli, pat):
    gitlab.revoke_access_token(pat)
    result = cli(prefix)
    assert result.returncode == 1
    assert "401" in result.stderr and gitlab.url in result.stderr


def test_token_without_manage_runner_still_works_and_says_so_once(gitlab, make, cli):
    creator = gitlab.add_access_token(scopes=("create_runner",), admin=True)
    prefix = make(access_token=creator, executors={"a": SHELL, "b": SHELL})
    assert cli(prefix).returncode == 0
    prefix.write_executor("a", SHELL + "locked = true\n")
    prefix.write_executor("b", SHELL + "locked = true\n")

    result = cli(prefix)

    assert result.returncode == 0, result.stderr
    assert result.stderr.count("lacks the manage_runner scope") == 1


def test_refresh_without_manage_runner_says_so_once(gitlab, make, cli):
    # observe (reading the runners back) and apply (updating them) meet the same missing
    # scope: one line in the journal for the run, not one per runner and phase.
    creator = gitlab.add_access_token(scopes=("create_runner",), admin=True)
    prefix = make(access_token=creator, executors={"a": SHELL, "b": SHELL})
    assert cli(prefix).returncode == 0
    prefix.write_executor("a", SHELL + "locked = true\n")
    prefix.write_executor("b", SHELL + "locked = true\n")

    result = cli(prefix, "sync", "--refresh", "--json")

    assert result.returncode == 0, result.stderr
    assert result.stderr.count("lacks the manage_runner scope") == 1, result.stderr
    warnings = json.loads(result.stdout)["warnings"]
    assert sum("lacks the manage_runner scope" in w for w in warnings) == 1
    status = json.loads(cli(prefix, "status", "--json").stdout)
    assert sum("lacks the manage_runner scope" in w for w in status["warnings"]) == 1


def test_deleting_without_manage_runner_falls_back_to_the_runner_token(gitlab, make, cli):
    creator = gitlab.add_access_token(scopes=("create_runner",), admin=True)
    prefix = make(access_token=creator, executors={"a": SHELL, "b": SHELL})
    assert cli(prefix).returncode == 0
    prefix.remove_executor("b")

    result = cli(prefix)

    assert result.returncode == 0, result.stderr
    assert len(gitlab.runners()) == 1


def test_json_summary_reports_waiting_actions(gitlab, make, cli):
    prefix = make(executors={"a": SHELL})
    assert cli(prefix).returncode == 0
    prefix.write_executor("b", SHELL)
    gitlab.fail_next(count=100, status=503, path=r"^/user/runners$")

    result = cli(prefix, "sync", "--json", "--deadline", "1")

    summary = json.loads(result.stdout)
    assert result.returncode == 0 and summary["exit_status"] == 0
    assert {(a["action"], a["runner"], a["result"]) for a in summary["actions"]} >= {
        ("create", "b", "waiting"),
        ("keep", "a", "kept"),
    }


def test_outage_with_a_good_config_does_not_wait_out_the_deadline(gitlab, prefix, cli):
    """Default options (deadline 30 s): a GitLab refusing connections is given up on after
    a few seconds when the runners can start from the config. Loose bound: a loaded
    machine must not fail it; the benchmark measures it."""
    assert cli(prefix).returncode == 0
    gitlab.down()

    started = time.monotonic()
    result = cli(prefix)
    elapsed = time.monotonic() - started

    assert result.returncode == 0, result.stderr
    assert "connection refused" in result.stderr
    assert elapsed < 20, elapsed


def test_fresh_host_keeps_trying_until_the_deadline(gitlab, prefix, cli):
    gitlab.down()
    started = time.monotonic()
    result = cli(prefix, "sync", "--deadline", "5")
    assert result.returncode == 3
    assert time.monotonic() - started >= 4.0  # nothing to start with: worth waiting for
