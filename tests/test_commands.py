"""verify, unregister, reset-token, rotation, several instances and GitLabs, the demo and
the secrets rule, end to end."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

from register_runner.testing.fake_gitlab import FakeGitLab
from register_runner.testing.prefix import make_prefix, run_cli

SHELL = 'executor = "shell"\ntags = ["linux"]\n'


# -- verify ----------------------------------------------------------------------------


def test_verify_one_token_from_a_file(gitlab, prefix, cli, tmp_path):
    assert cli(prefix).returncode == 0
    token_file = tmp_path / "token"
    token_file.write_text(prefix.runner("shell")["token"] + "\n")

    result = cli(prefix, "verify", "--url", gitlab.url, "--token-file", str(token_file))

    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout
    assert prefix.runner("shell")["token"] not in result.stdout + result.stderr


def test_verify_one_token_from_stdin_and_argument(gitlab, prefix, cli):
    assert cli(prefix).returncode == 0
    token = prefix.runner("shell")["token"]
    assert (
        cli(prefix, "verify", "--url", gitlab.url, "--token", "-", input=token + "\n").returncode
        == 0
    )
    assert cli(prefix, "verify", "--url", gitlab.url, "--token", token).returncode == 0


def test_verify_invalid_token_exits_1(gitlab, prefix, cli):
    result = cli(prefix, "verify", "--url", gitlab.url, "--token", "glrt-not-a-real-token")
    assert result.returncode == 1
    assert "invalid" in result.stdout


def test_verify_unreachable_exits_3(gitlab, prefix, cli):
    assert cli(prefix).returncode == 0
    before = prefix.snapshot()
    token = prefix.runner("shell")["token"]
    gitlab.down()
    result = cli(prefix, "verify", "--url", gitlab.url, "--token", token, "--deadline", "1")
    assert result.returncode == 3
    assert "token: could not tell whether the token is valid: " in result.stderr
    assert f"connection refused by 127.0.0.1:{gitlab.port}" in result.stderr
    assert "verify (unknown)" in result.stdout and token not in result.stdout + result.stderr
    assert prefix.snapshot() == before


def test_verify_5xx_exits_3(gitlab, prefix, cli):
    assert cli(prefix).returncode == 0
    before = prefix.snapshot()
    token = prefix.runner("shell")["token"]
    gitlab.fail_next(count=100, status=503)
    gitlab.clear_requests()
    result = cli(prefix, "verify", "--url", gitlab.url, "--token", token, "--deadline", "1")
    assert result.returncode == 3
    assert f"{gitlab.url}: verify token: GitLab answered 503; gave up after" in result.stderr
    assert token not in result.stdout + result.stderr
    assert gitlab.mutating_requests() == [] and prefix.snapshot() == before
    assert gitlab.runners()[0].token == token


def test_no_retry_is_sent_too_late_to_be_answered(gitlab, make, cli):
    """GitLab failing slowly: each runner's verify is retried while an answer can still
    come within the deadline, never sent in its last moment to be cut short by it. The
    reason given is GitLab's (a create cut short that way would be ambiguous, too)."""
    stems = ("a", "b", "c", "d", "e", "f")
    prefix = make(executors={stem: SHELL for stem in stems})
    assert cli(prefix).returncode == 0
    gitlab.fail_next(count=1000, status=503, path=r"^/runners/verify$")
    gitlab.latency = 0.2

    result = cli(prefix, "verify", "--deadline", "1", "--json")

    assert result.returncode == 3
    warnings = json.loads(result.stdout)["warnings"]
    assert sorted(w.split(":")[0] for w in warnings) == list(stems)
    assert all("verify token: GitLab answered 503; gave up after" in w for w in warnings), warnings


def test_verify_usage_errors_exit_2(gitlab, prefix, cli, tmp_path):
    assert cli(prefix, "verify", "--url", gitlab.url).returncode == 2
    assert cli(prefix, "verify", "--token", "x").returncode == 2
    assert (
        cli(prefix, "verify", "--url", gitlab.url, "--token", "a", "--token-file", "b").returncode
        == 2
    )
    missing = cli(prefix, "verify", "--url", gitlab.url, "--token-file", str(tmp_path / "no"))
    assert missing.returncode == 2 and str(tmp_path / "no") in missing.stderr
    assert cli(prefix, "verify", "--url", gitlab.url, "--token", "-", input="").returncode == 2


def test_verify_uses_the_prefix_system_id(gitlab, prefix, cli):
    assert cli(prefix).returncode == 0
    system_id = (prefix.root / ".runner_system_id").read_text().strip()
    gitlab.clear_requests()
    cli(prefix, "verify", "--url", gitlab.url, "--token", prefix.runner("shell")["token"])
    assert gitlab.requests[0].form["system_id"] == system_id


def test_verify_the_whole_config(gitlab, make, cli):
    prefix = make(executors={"a": SHELL, "b": SHELL})
    assert cli(prefix).returncode == 0
    assert cli(prefix, "verify").returncode == 0
    gitlab.revoke_runner_token(prefix.runner("b")["id"])

    result = cli(prefix, "verify", "--json")

    assert result.returncode == 1
    # Labelled by executor file stem, as every other command does.
    rows = {r["runner"]: r["result"] for r in json.loads(result.stdout)["actions"]}
    assert rows == {"a": "valid", "b": "invalid"}
    gitlab.fail_next(count=100, status=503, path=r"^/runners/verify$")
    before = prefix.snapshot()
    gitlab.clear_requests()
    failing = cli(prefix, "verify", "--deadline", "1", "--json")
    assert failing.returncode == 3
    warnings = json.loads(failing.stdout)["warnings"]
    assert sorted(w.split(":")[0] for w in warnings) == ["a", "b"]
    assert all("verify token: GitLab answered 503" in w for w in warnings)
    assert gitlab.mutating_requests() == [] and prefix.snapshot() == before


def test_verify_config_unreachable_exits_3(gitlab, prefix, cli):
    assert cli(prefix).returncode == 0
    before = prefix.snapshot()
    gitlab.down()
    result = cli(prefix, "verify", "--deadline", "1")
    assert result.returncode == 3
    assert "shell: could not tell whether the token is valid: " in result.stderr
    assert "connection refused" in result.stderr
    assert prefix.snapshot() == before


# -- unregister and reset-token -----------------------------------------------------------


def test_unregister_everything(gitlab, make, cli):
    foreign = gitlab.add_runner(runner_type="instance_type", description="not ours")
    prefix = make(executors={"a": SHELL, "b": SHELL})
    assert cli(prefix).returncode == 0

    result = cli(prefix, "unregister")

    assert result.returncode == 0, result.stderr
    assert [r.id for r in gitlab.runners()] == [foreign.id]
    assert prefix.runners() == []


def test_unregister_one_runner(gitlab, make, cli):
    prefix = make(executors={"a": SHELL, "b": SHELL})
    assert cli(prefix).returncode == 0
    keep = prefix.runner("a")

    assert cli(prefix, "unregister", "--runner", "b").returncode == 0

    assert [r.id for r in gitlab.runners()] == [keep["id"]]
    assert [r["id"] for r in prefix.runners()] == [keep["id"]]
    unknown = cli(prefix, "unregister", "--runner", "nope")
    assert unknown.returncode == 2 and "nope" in unknown.stderr


def test_unregister_while_gitlab_is_down_exits_3_and_keeps_the_runner(gitlab, prefix, cli):
    assert cli(prefix).returncode == 0
    gitlab.down()
    assert cli(prefix, "unregister", "--deadline", "1").returncode == 3
    gitlab.up()
    # The config already dropped it; the deletion is retried from the journal.
    assert cli(prefix, "unregister").returncode == 0
    assert gitlab.runners() == []


def test_unregister_gitlab_refuses_exits_1_and_says_to_delete_it_by_hand(gitlab, prefix, cli, pat):
    """Neither proof nor means: the access token rejected and the runner's own token no
    longer valid. A person must act (exit 1); nothing is deleted blindly."""
    assert cli(prefix).returncode == 0
    runner = prefix.runner("shell")["id"]
    gitlab.revoke_access_token(pat)
    gitlab.revoke_runner_token(runner)

    result = cli(prefix, "unregister")

    assert result.returncode == 1
    assert f"delete runner {runner}" in result.stderr and "by hand" in result.stderr
    assert gitlab.runner(runner) is not None


def test_reset_token_rotates_and_saves(gitlab, make, cli):
    prefix = make(executors={"a": SHELL, "b": SHELL})
    assert cli(prefix).returncode == 0
    before = {r["id"]: r["token"] for r in prefix.runners()}

    result = cli(prefix, "reset-token", "--runner", "a")

    assert result.returncode == 0, result.stderr
    after = {r["id"]: r["token"] for r in prefix.runners()}
    a_id = prefix.runner("a")["id"]
    assert after[a_id] != before[a_id] and after[a_id] == gitlab.runner(a_id).token
    b_id = prefix.runner("b")["id"]
    assert after[b_id] == before[b_id]
    assert cli(prefix, "verify").returncode == 0


def test_reset_token_without_manage_runner_uses_the_runner_token(gitlab, make, cli):
    creator = gitlab.add_access_token(scopes=("create_runner",), admin=True)
    prefix = make(access_token=creator)
    assert cli(prefix).returncode == 0
    old = prefix.runner("shell")["token"]
    assert cli(prefix, "reset-token").returncode == 0
    assert prefix.runner("shell")["token"] not in (old,)
    assert prefix.runner("shell")["token"] == gitlab.runners()[0].token


def test_sync_rotates_a_token_past_75_percent_of_its_lifetime(gitlab, prefix, cli):
    gitlab.runner_token_lifetime = 3600
    assert cli(prefix).returncode == 0
    entry = prefix.runner("shell")
    assert entry["token_expires_at"] > datetime.now(timezone.utc)
    gitlab.clear_requests()
    assert cli(prefix).returncode == 0
    assert gitlab.mutating_requests() == []
    # Pretend the token was obtained 4 h before it expires in 1 h: past 75% of its lifetime.
    old_obtained = entry["token_obtained_at"].strftime("%Y-%m-%dT%H:%M:%SZ")
    earlier = (entry["token_obtained_at"] - timedelta(hours=4)).strftime("%Y-%m-%dT%H:%M:%SZ")
    prefix.output.write_text(prefix.output.read_text().replace(old_obtained, earlier))

    result = cli(prefix)

    assert result.returncode == 0, result.stderr
    assert prefix.runner("shell")["token"] != entry["token"]
    assert prefix.runner("shell")["token"] == gitlab.runner(entry["id"]).token
    assert prefix.runner("shell")["id"] == entry["id"]


# -- several instances, several GitLabs ---------------------------------------------------


def test_two_instances_on_one_prefix_are_independent(gitlab, pat, tmp_path, cli):
    main = make_prefix(tmp_path / "p", gitlab.url, pat, instance="main")
    gpu = make_prefix(tmp_path / "p", gitlab.url, pat, instance="gpu", executors={"cuda": SHELL})
    assert cli(main).returncode == 0 and cli(gpu).returncode == 0
    assert len(gitlab.runners()) == 2
    names = {r.description for r in gitlab.runners()}
    assert any(n.endswith("-main-shell") for n in names)
    assert any(n.endswith("-gpu-cuda") for n in names)

    gpu.remove_executor("cuda")
    assert cli(gpu, "sync", "--force").returncode == 0
    assert [r.description for r in gitlab.runners()] == [main.runner("shell")["name"]]
    assert (tmp_path / "p" / ".runner_system_id").read_text().count("\n") == 1


def test_two_gitlab_instances(gitlab, pat, tmp_path, cli):
    with FakeGitLab() as other:
        other_pat = other.add_access_token(scopes=("api",), admin=True)
        token_file = tmp_path / "other.pat"
        token_file.write_text(other_pat)
        token_file.chmod(0o600)
        prefix = make_prefix(
            tmp_path / "p",
            gitlab.url,
            pat,
            client_extra=f'\n[[client_configs]]\nurl = "{other.url}"\n'
            f'personal_access_token_file = "{token_file}"\n',
            executors={
                "here": f'url = "{gitlab.url}"\n' + SHELL,
                "there": f'url = "{other.url}/"\n' + SHELL,
            },
        )

        result = cli(prefix)

        assert result.returncode == 0, result.stderr
        assert len(gitlab.runners()) == 1 and len(other.runners()) == 1
        assert prefix.runner("there")["url"] == other.url
        assert prefix.runner("there")["token"] == other.runners()[0].token
        prefix.write_executor("there", f'url = "{gitlab.url}"\n' + SHELL)
        assert cli(prefix).returncode == 0
        assert other.runners() == [] and len(gitlab.runners()) == 2


# -- secrets --------------------------------------------------------------------------------


def test_no_secret_in_any_output(gitlab, make, cli, pat, tmp_path):
    """Every command, verbose, through success and failure: no token, no access token."""
    registration = gitlab.registration_token(runner_type="instance_type")
    prefix = make(executors={"a": SHELL, "b": SHELL})
    outputs = []

    def run(*args, **kwargs):
        result = cli(prefix, *args, "--verbose", **kwargs)
        outputs.append(result.stdout + result.stderr)
        return result

    run("plan")
    run("sync")
    run("sync", "--json")
    run("plan", "--json")
    run("verify")
    tokens = [r.token for r in gitlab.runners()]
    run("verify", "--url", gitlab.url, "--token", "-", input=tokens[0])
    run("reset-token")
    gitlab.revoke_runner_token(prefix.runner("a")["id"])
    run("sync")
    gitlab.fail_next(count=3, status=500, path=r"^/runners/verify$")
    run("sync", "--deadline", "2")
    gitlab.fail_next(count=1, status=400, path=r"^/runners/\d+$")
    prefix.write_executor("b", SHELL + "locked = true\n")
    run("sync")
    gitlab.down()
    run("sync", "--deadline", "1")
    run("verify", "--deadline", "1")
    gitlab.up()
    run("unregister", "--runner", "a")
    gitlab.revoke_access_token(pat)
    run("sync")
    run("unregister")
    prefix.write_template(prefix.template.read_text() + "\n[[client_configs]\n")
    run("sync")

    tokens += [r.token for r in gitlab.runners()]
    tokens += [entry["token"] for entry in prefix.runners()]
    everything = "\n".join(outputs)
    for secret in {pat, registration, *tokens}:
        assert secret not in everything
    assert not re.search(r"glrt-[A-Za-z0-9_-]{8,}", everything)
    assert not re.search(r"glpat-[A-Za-z0-9_-]{8,}", everything)
    assert "event=api method=POST path=/api/v4/user/runners status=201" in everything


def test_help_shows_no_secret(gitlab, prefix, cli, pat):
    # Secrets where --help could pick them up: the environment and the command line.
    env = {"GITLAB_TOKEN": pat, "RUNNER_TOKEN": "glrt-helpsecret1234567"}
    for command in ("sync", "plan", "verify", "unregister", "reset-token", "system-id"):
        result = run_cli(
            [command, "--token", "glrt-helpsecret1234567", "--help"]
            if command == "verify"
            else [command, "--help"],
            env=env,
        )
        assert result.returncode == 0
        assert result.stdout.startswith("usage:")
        output = result.stdout + result.stderr
        assert pat not in output and "helpsecret" not in output


def test_demo_runs_out_of_the_box():
    result = run_cli(["demo"])
    assert result.returncode == 0, result.stderr
    assert "create  shell" in result.stdout and "keep    shell" in result.stdout
    assert "[runners.docker]" in result.stdout
    assert not re.search(r"glrt-[A-Za-z0-9_-]{8,}", result.stdout + result.stderr)
