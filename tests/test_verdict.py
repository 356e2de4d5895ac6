"""Never silently dead, end to end against the fake GitLab: the mass-invalid guard settled
by GitLab's answers, the access token checked on every sync, and one health verdict that
`status`, its JSON, the metrics and the Python API all give."""

from __future__ import annotations

import fcntl
import json
import os

from test_status import metrics

import register_runner
from register_runner.testing.prefix import start_cli

SHELL = 'executor = "shell"\n'
VERIFY = r"^/runners/verify$"
TOKEN_SELF = r"^/personal_access_tokens/self$"


def health(prefix, cli, metrics_file) -> tuple[int, dict]:
    """`status`'s exit and JSON, once checked that the metrics and the JSON say the same."""
    status = cli(prefix, "status", "--json")
    report = json.loads(status.stdout)
    gauge = metrics(metrics_file)[("register_runner_healthy", frozenset({("instance", "main")}))]
    assert report["healthy"] is (status.returncode == 0) is (gauge == 1)
    return status.returncode, report


def verdicts(report: dict) -> dict[str, str]:
    return {row["runner"]: row["verdict"] for row in report["runners"]}


def test_gitlab_restored_from_a_backup_heals_in_one_sync_without_force(gitlab, make, cli, tmp_path):
    prefix = make(executors={"a": SHELL, "b": SHELL, "c": SHELL})
    assert cli(prefix).returncode == 0
    # The backup predates the runners; the ids are handed out again, here to others.
    gitlab.forget_runners()
    gitlab.reset_ids(1)
    others = [gitlab.add_runner(description=f"someone else's {n}") for n in (1, 2)]
    gitlab.clear_requests()
    metrics_file = tmp_path / "rr.prom"

    result = cli(prefix, "sync", "--metrics-file", str(metrics_file))

    assert result.returncode == 0, result.stderr
    assert "no longer has those runners" in result.stderr
    assert (
        sorted((q.method, q.path) for q in gitlab.mutating_requests())
        == [("POST", "/user/runners")] * 3
    )
    mine = {r.id: r for r in gitlab.runners() if "[register-runner " in (r.maintenance_note or "")}
    assert sorted(prefix.runner(stem)["id"] for stem in "abc") == sorted(mine)
    assert all(
        prefix.runner(stem)["token"] == mine[prefix.runner(stem)["id"]].token for stem in "abc"
    )
    assert [gitlab.runner(o.id).token for o in others] == [o.token for o in others]
    code, report = health(prefix, cli, metrics_file)
    assert code == 0 and verdicts(report) == {"a": "valid", "b": "valid", "c": "valid"}


def test_tokens_refused_while_gitlab_lists_the_runners_hold_with_exit_3_until_it_heals(
    gitlab, make, cli, tmp_path
):
    prefix = make(executors={"a": SHELL, "b": SHELL, "c": SHELL})
    assert cli(prefix).returncode == 0
    before = prefix.output.read_bytes(), prefix.output.stat().st_mtime_ns
    metrics_file = tmp_path / "rr.prom"
    gitlab.clear_requests()

    for _ in range(2):  # maintenance mode: every verify is 403, the runners are there
        gitlab.fail_next(count=3, status=403, path=VERIFY)
        result = cli(prefix, "sync", "--metrics-file", str(metrics_file))

        assert result.returncode == 3, result.stderr
        assert (
            "held by the mass-invalid guard: GitLab still lists these runners (a, b, c)"
            in result.stderr
        )
        assert gitlab.mutating_requests() == []
        assert (prefix.output.read_bytes(), prefix.output.stat().st_mtime_ns) == before
        code, report = health(prefix, cli, metrics_file)
        assert code == 1 and verdicts(report) == {"a": "held", "b": "held", "c": "held"}

    gitlab.fail_next(count=3, status=403, path=VERIFY)
    held = register_runner.sync(prefix=prefix.root)
    assert (held.exit_status, held.healthy) == (3, False)
    healed = register_runner.sync(prefix=prefix.root)
    assert (healed.exit_status, healed.healthy, healed.changed) == (0, True, False)
    assert gitlab.mutating_requests() == []


def test_a_token_that_may_not_read_runners_holds_with_exit_1_naming_the_scope(
    gitlab, make, cli, tmp_path
):
    token = gitlab.add_access_token(scopes=("create_runner",), admin=True)
    prefix = make(executors={"a": SHELL, "b": SHELL}, access_token=token)
    assert cli(prefix).returncode == 0
    for runner in gitlab.runners():
        gitlab.revoke_runner_token(runner.id)
    before = prefix.output.read_bytes()
    metrics_file = tmp_path / "rr.prom"
    gitlab.clear_requests()

    result = cli(prefix, "sync", "--metrics-file", str(metrics_file))

    assert result.returncode == 1, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "mass-invalid guard" in line]
    assert "read_api or manage_runner scope" in line and "--force" in line
    assert gitlab.mutating_requests() == [] and prefix.output.read_bytes() == before
    code, report = health(prefix, cli, metrics_file)
    assert code == 1 and verdicts(report) == {"a": "held", "b": "held"}

    assert cli(prefix, "sync", "--force", "--metrics-file", str(metrics_file)).returncode == 0
    assert health(prefix, cli, metrics_file)[0] == 0


def test_a_revoked_access_token_is_exit_1_on_every_run_with_the_config_kept(
    gitlab, make, pat, cli, tmp_path
):
    prefix = make(executors={"a": SHELL, "b": SHELL})
    assert cli(prefix).returncode == 0
    gitlab.revoke_access_token(pat)
    before = prefix.output.read_bytes(), prefix.output.stat().st_mtime_ns
    metrics_file = tmp_path / "rr.prom"
    gitlab.clear_requests()

    for step in ("nothing to create", "a new executor file"):
        if step == "a new executor file":
            prefix.write_executor("c", SHELL)
        result = cli(prefix, "sync", "--metrics-file", str(metrics_file))

        assert result.returncode == 1, (step, result.stderr)
        (line,) = [line for line in result.stderr.splitlines() if "rejected (401" in line]
        assert gitlab.url in line and pat not in result.stderr
        assert gitlab.mutating_requests() == []
        assert (prefix.output.read_bytes(), prefix.output.stat().st_mtime_ns) == before
        code, report = health(prefix, cli, metrics_file)
        assert code == 1
        assert report["access_tokens"][0]["rejected"] is True
        assert verdicts(report)["a"] == "valid"


def test_the_access_token_is_asked_about_alongside_the_verifications(gitlab, prefix, cli):
    assert cli(prefix).returncode == 0
    verifying = gitlab.block(method="POST", path=VERIFY, when="before")
    asking = gitlab.block(method="GET", path=TOKEN_SELF, when="before")
    run = start_cli(["sync", "--prefix", str(prefix.root)])
    try:
        # Both are in flight at once: the token's check is no round trip after the others.
        assert verifying.reached.wait(30)
        assert asking.reached.wait(30)
    finally:
        verifying.release()
        asking.release()
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stderr


def test_a_failing_access_token_check_leaves_the_deadline_to_the_creates(gitlab, prefix, cli):
    """The expiry check is advisory: asked once, so a GitLab failing it cannot spend a
    fresh host's deadline on it before the first create is sent."""
    gitlab.fail_next(count=50, status=503, method="GET", path=TOKEN_SELF)

    result = cli(prefix, "sync", "--deadline", "2")

    assert result.returncode == 0, result.stderr
    assert [q.path for q in gitlab.requests if q.method == "GET"] == [
        "/personal_access_tokens/self"
    ]
    assert [r.id for r in gitlab.runners()] == [prefix.runner("shell")["id"]]
    assert cli(prefix, "status").returncode == 0


def test_gitlab_unreachable_is_not_known_healthy(gitlab, prefix, cli, tmp_path):
    metrics_file = tmp_path / "rr.prom"
    assert cli(prefix, "sync", "--metrics-file", str(metrics_file)).returncode == 0
    assert health(prefix, cli, metrics_file)[0] == 0
    gitlab.down()

    result = cli(prefix, "sync", "--deadline", "1", "--metrics-file", str(metrics_file))

    assert result.returncode == 0, result.stderr  # the runner starts with the last config
    code, report = health(prefix, cli, metrics_file)
    assert code == 3 and verdicts(report) == {"shell": "unknown"}


def test_a_revoked_access_token_is_the_one_cause_named_when_every_token_is_refused(
    gitlab, make, pat, cli
):
    prefix = make(executors={"a": SHELL, "b": SHELL})
    assert cli(prefix).returncode == 0
    for runner in gitlab.runners():
        gitlab.revoke_runner_token(runner.id)
    gitlab.revoke_access_token(pat)
    gitlab.clear_requests()

    result = cli(prefix)

    assert result.returncode == 1, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert "the access token was rejected (401" in line
    # Nothing more is asked with a token GitLab has just refused.
    assert [q.path for q in gitlab.requests if q.method == "GET"] == [
        "/personal_access_tokens/self"
    ]
    assert gitlab.mutating_requests() == []


def test_a_fresh_host_gitlab_could_not_serve_yet_is_not_known_rather_than_broken(
    gitlab, prefix, cli, tmp_path
):
    metrics_file = tmp_path / "rr.prom"
    gitlab.down()

    result = cli(prefix, "sync", "--deadline", "1", "--metrics-file", str(metrics_file))

    assert result.returncode == 3, result.stderr  # nothing good to keep: try again later
    code, report = health(prefix, cli, metrics_file)
    assert code == 3 and verdicts(report) == {"shell": "unknown"}
    gitlab.up()
    assert cli(prefix, "sync", "--metrics-file", str(metrics_file)).returncode == 0
    assert health(prefix, cli, metrics_file)[0] == 0


# -- the guard's edges: how many, and what GitLab says of each -----------------------------


def test_two_of_three_tokens_refused_is_mass_invalid_and_held(gitlab, make, cli, tmp_path):
    prefix = make(executors={"a": SHELL, "b": SHELL, "c": SHELL})
    assert cli(prefix).returncode == 0
    for stem in "ab":
        gitlab.revoke_runner_token(prefix.runner(stem)["id"])
    before = prefix.output.read_bytes(), prefix.output.stat().st_mtime_ns
    metrics_file = tmp_path / "rr.prom"
    gitlab.clear_requests()

    result = cli(prefix, "sync", "--metrics-file", str(metrics_file))

    assert result.returncode == 3, result.stderr
    assert (
        "held by the mass-invalid guard: GitLab still lists these runners (a, b)" in result.stderr
    )
    assert "rejected 2 of 3 runner tokens" in result.stderr
    assert gitlab.mutating_requests() == []
    assert (prefix.output.read_bytes(), prefix.output.stat().st_mtime_ns) == before
    code, report = health(prefix, cli, metrics_file)
    assert code == 1 and verdicts(report) == {"a": "held", "b": "held", "c": "valid"}


def test_one_of_two_tokens_refused_is_not_mass_invalid(gitlab, make, cli, tmp_path):
    prefix = make(executors={"a": SHELL, "b": SHELL})
    assert cli(prefix).returncode == 0
    old = {stem: prefix.runner(stem)["id"] for stem in "ab"}
    gitlab.revoke_runner_token(old["a"])
    metrics_file = tmp_path / "rr.prom"

    result = cli(prefix, "sync", "--metrics-file", str(metrics_file))

    assert result.returncode == 0, result.stderr
    assert "mass-invalid" not in result.stderr
    assert prefix.runner("a")["id"] not in old.values() and gitlab.runner(old["a"]) is None
    assert prefix.runner("b")["id"] == old["b"]
    code, report = health(prefix, cli, metrics_file)
    assert code == 0 and verdicts(report) == {"a": "valid", "b": "valid"}


def test_gitlab_not_answering_about_the_refused_runners_holds(gitlab, make, cli, tmp_path):
    prefix = make(executors={"a": SHELL, "b": SHELL})
    assert cli(prefix).returncode == 0
    for runner in gitlab.runners():
        gitlab.revoke_runner_token(runner.id)
    gitlab.fail_next(count=1000, status=503, method="GET", path=r"^/runners/\d+$")
    before = prefix.output.read_bytes()
    metrics_file = tmp_path / "rr.prom"
    gitlab.clear_requests()

    result = cli(prefix, "sync", "--deadline", "2", "--metrics-file", str(metrics_file))

    assert result.returncode == 3, result.stderr
    assert "held by the mass-invalid guard" in result.stderr
    assert "GitLab did not answer about these runners (a, b)" in result.stderr
    assert gitlab.mutating_requests() == [] and prefix.output.read_bytes() == before
    code, report = health(prefix, cli, metrics_file)
    assert code == 1 and verdicts(report) == {"a": "held", "b": "held"}


def test_one_runner_gone_and_one_still_listed_holds_both(gitlab, make, cli, tmp_path):
    """Only a proof for every refused token releases the guard: one runner GitLab still
    lists as this host's says the 403s may be GitLab's."""
    prefix = make(executors={"a": SHELL, "b": SHELL})
    assert cli(prefix).returncode == 0
    for runner in gitlab.runners():
        gitlab.revoke_runner_token(runner.id)
    gitlab.forget_runners([prefix.runner("a")["id"]])
    metrics_file = tmp_path / "rr.prom"
    gitlab.clear_requests()

    result = cli(prefix, "sync", "--metrics-file", str(metrics_file))

    assert result.returncode == 3, result.stderr
    assert "GitLab still lists these runners (b)" in result.stderr
    assert gitlab.mutating_requests() == []
    code, report = health(prefix, cli, metrics_file)
    assert code == 1 and verdicts(report) == {"a": "held", "b": "held"}


def test_a_bad_executor_file_while_the_guard_holds_changes_nothing_either(
    gitlab, make, cli, tmp_path
):
    prefix = make(executors={"a": SHELL, "b": SHELL, "c": SHELL})
    assert cli(prefix).returncode == 0
    for runner in gitlab.runners():
        gitlab.revoke_runner_token(runner.id)
    broken = prefix.write_executor("c", "executor = [\n")
    before = prefix.output.read_bytes()
    metrics_file = tmp_path / "rr.prom"
    gitlab.clear_requests()

    result = cli(prefix, "sync", "--metrics-file", str(metrics_file))

    assert result.returncode == 2, result.stderr  # a person must fix the file first
    assert str(broken) in result.stderr
    assert "GitLab still lists these runners (a, b)" in result.stderr
    assert gitlab.mutating_requests() == [] and prefix.output.read_bytes() == before
    code, report = health(prefix, cli, metrics_file)
    assert code == 1 and verdicts(report)["a"] == verdicts(report)["b"] == "held"


def test_a_busy_lock_is_recorded_and_exported_as_not_known(gitlab, prefix, cli, tmp_path):
    assert cli(prefix).returncode == 0
    metrics_file = tmp_path / "rr.prom"
    lock = os.open(prefix.root / ".register-runner" / "main.lock", os.O_RDWR)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run holds it
        result = cli(prefix, "sync", "--lock-timeout", "0", "--metrics-file", str(metrics_file))
    finally:
        os.close(lock)

    assert result.returncode == 3 and "holds the lock" in result.stderr, result.stderr
    code, report = health(prefix, cli, metrics_file)
    assert code == 3 and report["last_run"]["exit_status"] == 3
    assert verdicts(report) == {"shell": "unknown"}
    exit_code = metrics(metrics_file)[
        ("register_runner_last_run_exit_code", frozenset({("instance", "main")}))
    ]
    assert exit_code == 3
