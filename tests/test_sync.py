"""End to end: the real CLI, over HTTP, against the fake GitLab."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat

import pytest
from conftest import GROUP_ID, PROJECT_ID

from register_runner.testing.prefix import make_prefix

# The access token's own expiry, asked on every sync alongside the verifications.
TOKEN_SELF = "/personal_access_tokens/self"
SHELL = 'executor = "shell"\ntags = ["linux", "shell"]\n'
DOCKER = """executor = "docker"
tags = ["docker"]
limit = 4
[docker]
  image = "debian:bookworm"
  volumes = ["/cache"]
[cache]
  Type = "s3"
  [cache.s3]
    BucketName = "runner-cache"
"""
NSPAWN = """[[runners]]
  url = "TODO"
  token = "TODO"
  executor = "custom"
  builds_dir = "/builds"
  [runners.custom]
    run_exec = "/usr/bin/nspawn-runner"
    run_args = ["run"]
"""


def ours(gitlab):
    return [r for r in gitlab.runners() if "[register-runner " in (r.maintenance_note or "")]


def test_fresh_sync_creates_every_executor_and_writes_the_config(gitlab, make, cli):
    prefix = make(executors={"shell": SHELL, "docker": DOCKER, "nspawn": NSPAWN})

    result = cli(prefix)

    assert result.returncode == 0, result.stderr
    created = {r.id: r for r in gitlab.runners()}
    assert len(created) == 3
    runners = prefix.runners()
    assert [r["name"].rsplit("-", 1)[1] for r in runners] == ["docker", "nspawn", "shell"]
    for entry in runners:
        runner = created[entry["id"]]
        assert entry["token"] == runner.token
        assert entry["url"] == gitlab.url
        assert isinstance(entry["token_obtained_at"], dt.datetime)
        assert entry["token_expires_at"] == dt.datetime(1, 1, 1, tzinfo=dt.timezone.utc)
        assert "tags" not in entry and "tag_list" not in entry
    docker = prefix.runner("docker")
    assert docker["docker"] == {"image": "debian:bookworm", "volumes": ["/cache"]}
    assert docker["cache"] == {"Type": "s3", "s3": {"BucketName": "runner-cache"}}
    assert docker["limit"] == 4
    nspawn = prefix.runner("nspawn")
    assert nspawn["custom"] == {"run_exec": "/usr/bin/nspawn-runner", "run_args": ["run"]}
    assert nspawn["token"] != "TODO"
    assert created[docker["id"]].tag_list == ["docker"]
    assert created[docker["id"]].run_untagged is False
    assert stat.S_IMODE(prefix.output.stat().st_mode) == 0o600
    assert prefix.output_document()["concurrent"] == 4


def test_second_sync_makes_no_mutating_call_and_leaves_the_file_untouched(gitlab, make, cli):
    prefix = make(executors={"shell": SHELL, "docker": DOCKER, "nspawn": NSPAWN})
    assert cli(prefix).returncode == 0
    before = prefix.output.read_bytes(), prefix.output.stat().st_mtime_ns
    gitlab.clear_requests()

    result = cli(prefix)

    assert result.returncode == 0, result.stderr
    assert gitlab.mutating_requests() == []
    assert sorted(r.path for r in gitlab.requests) == [TOKEN_SELF] + ["/runners/verify"] * 3
    assert (prefix.output.read_bytes(), prefix.output.stat().st_mtime_ns) == before


def test_the_access_token_is_asked_about_on_every_sync(gitlab, prefix, cli):
    for _ in range(2):
        gitlab.clear_requests()
        assert cli(prefix).returncode == 0
        assert sum(r.path == TOKEN_SELF for r in gitlab.requests) == 1


def test_verify_sends_the_host_system_id(gitlab, prefix, cli):
    assert cli(prefix).returncode == 0
    system_id = (prefix.root / ".runner_system_id").read_text().strip()
    gitlab.clear_requests()
    assert cli(prefix).returncode == 0
    (verify,) = [r for r in gitlab.requests if r.path != TOKEN_SELF]
    assert verify.form["system_id"] == system_id
    (runner,) = gitlab.runners()
    assert system_id in runner.managers


def test_removed_executor_file_deletes_its_runner(gitlab, make, cli):
    prefix = make(executors={"shell": SHELL, "docker": DOCKER})
    assert cli(prefix).returncode == 0
    docker_id = prefix.runner("docker")["id"]

    prefix.remove_executor("docker")
    result = cli(prefix)

    assert result.returncode == 0, result.stderr
    assert gitlab.runner(docker_id) is None
    assert [r["name"].rsplit("-", 1)[1] for r in prefix.runners()] == ["shell"]
    assert len(gitlab.runners()) == 1


def test_revoked_token_is_replaced_without_duplicate(gitlab, make, cli):
    prefix = make(executors={"shell": SHELL, "docker": DOCKER, "nspawn": NSPAWN})
    assert cli(prefix).returncode == 0
    old = prefix.runner("shell")
    gitlab.revoke_runner_token(old["id"])

    result = cli(prefix)

    assert result.returncode == 0, result.stderr
    new = prefix.runner("shell")
    assert new["id"] != old["id"]
    assert gitlab.runner(old["id"]) is None
    assert len(gitlab.runners()) == 3
    assert gitlab.runner(new["id"]).token == new["token"]


def test_token_rotated_by_gitlab_runner_is_kept(gitlab, prefix, cli):
    assert cli(prefix).returncode == 0
    entry = prefix.runner("shell")
    rotated = gitlab.rotate_runner_token(entry["id"])
    text = prefix.output.read_text().replace(entry["token"], rotated)
    text = text.replace(
        entry["token_obtained_at"].strftime("%Y-%m-%dT%H:%M:%SZ"), "2030-01-01T00:00:00Z"
    )
    prefix.output.write_text(text)
    gitlab.clear_requests()

    result = cli(prefix)

    assert result.returncode == 0, result.stderr
    assert gitlab.mutating_requests() == []
    assert prefix.runner("shell")["token"] == rotated
    assert prefix.output.read_text() == text


def test_foreign_runners_are_never_touched(gitlab, make, cli):
    foreign = gitlab.add_runner(
        runner_type="instance_type", description="someone else's", tag_list=("linux",)
    )
    prefix = make(executors={"shell": SHELL, "docker": DOCKER})
    assert cli(prefix).returncode == 0
    prefix.remove_executor("docker")
    prefix.remove_executor("shell")
    prefix.write_executor("other", SHELL)

    assert cli(prefix, "sync", "--force").returncode == 0

    assert gitlab.runner(foreign.id) is not None
    assert [r.description for r in gitlab.runners() if r.id != foreign.id] == [
        prefix.runner("other")["name"]
    ]


def test_existing_system_id_is_reused(gitlab, prefix, cli):
    (prefix.root / ".runner_system_id").write_text("r_abcdefABCDEF\n")
    assert cli(prefix).returncode == 0
    assert (prefix.root / ".runner_system_id").read_text() == "r_abcdefABCDEF\n"
    assert "r_abcdefABCDEF" in gitlab.runners()[0].maintenance_note


def test_legacy_registration_token(gitlab, tmp_path, cli):
    token = gitlab.registration_token(runner_type="instance_type")
    prefix = make_prefix(tmp_path / "p", gitlab.url, registration_token=token)

    result = cli(prefix)

    assert result.returncode == 0, result.stderr
    (runner,) = gitlab.runners()
    assert prefix.runner("shell")["token"] == runner.token
    assert runner.token.startswith("glrtr-")
    assert result.stderr.count("GR1348941") == 0


def test_legacy_registration_disabled_says_to_switch(gitlab, tmp_path, cli):
    gitlab.allow_registration_tokens = False
    token = gitlab.registration_token(runner_type="instance_type")
    prefix = make_prefix(tmp_path / "p", gitlab.url, registration_token=token)

    result = cli(prefix)

    assert result.returncode == 1
    assert "410" in result.stderr and "create_runner" in result.stderr
    assert gitlab.runners() == []


@pytest.mark.parametrize(
    "scope",
    [
        f'runner_type = "group_type"\ngroup_id = {GROUP_ID}\n',
        f'runner_type = "project_type"\nproject_id = {PROJECT_ID}\n',
    ],
)
def test_group_and_project_runners_with_a_non_admin_token(gitlab, make, cli, scope):
    owner = gitlab.add_access_token(
        scopes=("create_runner", "manage_runner"), groups=(GROUP_ID,), projects=(PROJECT_ID,)
    )
    prefix = make(access_token=owner, client_extra=scope)

    result = cli(prefix)

    assert result.returncode == 0, result.stderr
    (runner,) = gitlab.runners()
    kind = "group" if "group" in scope else "project"
    assert runner.runner_type == f"{kind}_type"
    assert getattr(runner, f"{kind}_id") == (GROUP_ID if kind == "group" else PROJECT_ID)


def test_instance_runner_needs_an_admin_token(gitlab, make, cli):
    user = gitlab.add_access_token(scopes=("create_runner",), groups=(GROUP_ID,))
    prefix = make(access_token=user)

    result = cli(prefix)

    assert result.returncode == 1
    assert "403" in result.stderr
    assert gitlab.runners() == []


def test_changed_attribute_is_updated_in_place(gitlab, prefix, cli):
    assert cli(prefix).returncode == 0
    entry = prefix.runner("shell")
    prefix.write_executor(
        "shell",
        'executor = "shell"\ntags = ["linux", "gpu"]\nmaximum_timeout = 7200\nlocked = true\n',
    )
    gitlab.clear_requests()

    result = cli(prefix)

    assert result.returncode == 0, result.stderr
    assert [(r.method, r.path) for r in gitlab.mutating_requests()] == [
        ("PUT", f"/runners/{entry['id']}")
    ]
    runner = gitlab.runner(entry["id"])
    assert sorted(runner.tag_list) == ["gpu", "linux"]
    assert runner.maximum_timeout == 7200 and runner.locked is True
    assert prefix.runner("shell")["token"] == entry["token"]
    gitlab.clear_requests()
    assert cli(prefix).returncode == 0
    assert gitlab.mutating_requests() == []


def test_changed_scope_means_a_new_runner(gitlab, prefix, cli):
    assert cli(prefix).returncode == 0
    old = prefix.runner("shell")
    prefix.write_executor("shell", SHELL + f'runner_type = "group_type"\ngroup_id = {GROUP_ID}\n')

    assert cli(prefix).returncode == 0

    new = prefix.runner("shell")
    assert new["id"] != old["id"] and gitlab.runner(old["id"]) is None
    assert gitlab.runner(new["id"]).runner_type == "group_type"


def test_output_has_tls_ca_file_and_pass_through_keys(gitlab, make, cli, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("not used over http\n")
    prefix = make(
        client_extra=f'tls_ca_file = "{ca}"\n',
        executors={"shell": 'executor = "shell"\nenvironment = ["A=1"]\nunknown_key = "kept"\n'},
    )

    assert cli(prefix).returncode == 0

    entry = prefix.runner("shell")
    assert list(entry)[:7] == [
        "name",
        "url",
        "id",
        "token",
        "token_obtained_at",
        "token_expires_at",
        "tls-ca-file",
    ]
    assert entry["tls-ca-file"] == str(ca)
    assert entry["environment"] == ["A=1"] and entry["unknown_key"] == "kept"


def test_run_untagged_defaults(gitlab, make, cli):
    prefix = make(executors={"tagged": SHELL, "untagged": 'executor = "shell"\n'})
    assert cli(prefix).returncode == 0
    by_name = {r.description.rsplit("-", 1)[1]: r for r in gitlab.runners()}
    assert by_name["tagged"].run_untagged is False
    assert by_name["untagged"].run_untagged is True


def test_emptied_executor_folder_is_refused(gitlab, make, cli):
    prefix = make(executors={"shell": SHELL, "docker": DOCKER})
    assert cli(prefix).returncode == 0
    for stem in ("shell", "docker"):
        prefix.remove_executor(stem)
    before = prefix.snapshot()
    gitlab.clear_requests()

    result = cli(prefix)

    assert result.returncode == 2
    assert "no executor files" in result.stderr
    assert gitlab.requests == [] and prefix.snapshot() == before
    assert cli(prefix, "sync", "--force").returncode == 0
    assert gitlab.runners() == [] and prefix.runners() == []


def test_missing_executor_folder_is_refused_too(gitlab, prefix, cli):
    assert cli(prefix).returncode == 0
    prefix.remove_executor("shell")
    prefix.executor_dir.rmdir()
    result = cli(prefix)
    assert result.returncode == 2 and len(gitlab.runners()) == 1


def test_mass_invalid_guard_holds_everything(gitlab, make, cli):
    prefix = make(executors={"a": SHELL, "b": SHELL, "c": SHELL})
    assert cli(prefix).returncode == 0
    for runner in gitlab.runners():
        gitlab.revoke_runner_token(runner.id)
    before = prefix.snapshot()
    gitlab.clear_requests()

    result = cli(prefix)

    # GitLab still lists them with this host's marker: GitLab-side, try again later.
    assert result.returncode == 3
    assert "held by the mass-invalid guard: GitLab still lists these runners" in result.stderr
    assert gitlab.mutating_requests() == []
    assert prefix.output.read_bytes() == before["config.main.toml"][0]
    assert cli(prefix, "sync", "--force").returncode == 0
    assert len(gitlab.runners()) == 3
    assert all(
        r.token == prefix.runner(r.description.rsplit("-", 1)[1])["token"] for r in gitlab.runners()
    )


def test_one_invalid_token_of_three_is_not_mass_invalid(gitlab, make, cli):
    prefix = make(executors={"a": SHELL, "b": SHELL, "c": SHELL})
    assert cli(prefix).returncode == 0
    before = {stem: prefix.runner(stem)["id"] for stem in "abc"}
    gitlab.revoke_runner_token(before["a"])
    assert cli(prefix).returncode == 0
    assert len(gitlab.runners()) == 3
    # a was recreated (not held by the guard), b and c kept.
    assert prefix.runner("a")["id"] not in before.values()
    assert gitlab.runner(before["a"]) is None
    assert [prefix.runner(stem)["id"] for stem in "bc"] == [before["b"], before["c"]]


def test_copied_prefix_registers_its_own_runners(gitlab, make, cli):
    prefix = make(executors={"shell": SHELL})
    assert cli(prefix).returncode == 0
    original = prefix.runner("shell")
    # What a copy looks like from the inside: the fingerprint is another machine's.
    (prefix.root / ".runner_system_id.fingerprint").write_text("0" * 32 + "\n")

    result = cli(prefix)

    assert result.returncode == 0, result.stderr
    assert "copied" in result.stderr
    system_id = (prefix.root / ".runner_system_id").read_text().strip()
    assert system_id.startswith("r_")
    assert gitlab.runner(original["id"]) is not None
    assert prefix.runner("shell")["id"] != original["id"]
    assert len(gitlab.runners()) == 2


def test_plan_shows_the_plan_and_changes_nothing(gitlab, make, cli):
    prefix = make(executors={"shell": SHELL, "docker": DOCKER})
    before = prefix.snapshot()

    result = cli(prefix, "plan", "--detailed-exitcode")

    assert result.returncode == 4, result.stderr
    assert "create  docker" in result.stdout and "create  shell" in result.stdout
    assert gitlab.mutating_requests() == [] and prefix.snapshot() == before
    assert not (prefix.root / ".runner_system_id").exists()
    assert cli(prefix).returncode == 0
    result = cli(prefix, "plan", "--detailed-exitcode")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "unchanged" in result.stdout


def test_plan_and_sync_agree(gitlab, make, cli):
    prefix = make(executors={"shell": SHELL, "docker": DOCKER, "gone": SHELL})
    assert cli(prefix).returncode == 0
    gitlab.revoke_runner_token(prefix.runner("shell")["id"])
    prefix.remove_executor("gone")
    prefix.write_executor("docker", DOCKER.replace('["docker"]', '["docker", "x"]'))
    prefix.write_executor("new", SHELL)

    planned = cli(prefix, "plan", "--json")
    synced = cli(prefix, "sync", "--json")

    plan_actions = {(a["action"], a["runner"]) for a in json.loads(planned.stdout)["actions"]}
    done = {(a["action"], a["runner"]) for a in json.loads(synced.stdout)["actions"]}
    assert plan_actions == done
    assert {
        ("recreate", "shell"),
        ("delete", "gone"),
        ("update", "docker"),
        ("create", "new"),
    } <= done


def test_plan_exits_3_when_gitlab_is_unreachable(gitlab, prefix, cli):
    assert cli(prefix).returncode == 0
    before = prefix.snapshot()
    gitlab.down()
    result = cli(prefix, "plan", "--deadline", "1")
    assert result.returncode == 3
    assert "could not verify 1 token(s) (shell): GitLab unreachable or failing" in result.stderr
    assert "connection refused" in result.stderr
    assert prefix.snapshot() == before


def test_system_id_command(gitlab, prefix, cli):
    result = cli(prefix, "system-id")
    assert result.returncode == 0
    assert result.stdout.strip() == (prefix.root / ".runner_system_id").read_text().strip()
    assert cli(prefix, "system-id").stdout == result.stdout


def test_output_keeps_its_owner_and_mode(gitlab, prefix, cli):
    assert cli(prefix).returncode == 0
    os.chmod(prefix.output, 0o644)
    os.chown(prefix.output, 4242, 4343)  # gitlab-runner's user, say
    prefix.write_executor("shell", SHELL + "limit = 2\n")
    assert cli(prefix).returncode == 0
    info = prefix.output.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert (info.st_uid, info.st_gid) == (4242, 4343)
    assert prefix.runner("shell")["limit"] == 2
    backup = prefix.root / "config.main.toml.bak"
    assert "limit" not in backup.read_text()
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600


def test_refresh_corrects_a_change_made_in_gitlab(gitlab, prefix, cli):
    prefix.write_executor("shell", SHELL + "locked = true\n")
    assert cli(prefix).returncode == 0
    runner_id = prefix.runner("shell")["id"]
    # Someone unlocks the runner and changes its tags in the GitLab UI.
    import requests

    admin = gitlab.add_access_token(scopes=("api",), admin=True)
    requests.put(
        f"{gitlab.url}/api/v4/runners/{runner_id}",
        headers={"PRIVATE-TOKEN": admin},
        json={"locked": False, "tag_list": ["other"]},
        timeout=10,
    ).raise_for_status()
    gitlab.clear_requests()
    assert cli(prefix).returncode == 0
    assert gitlab.mutating_requests() == []  # without --refresh: judged against the state

    plan = cli(prefix, "plan", "--refresh", "--detailed-exitcode")
    assert plan.returncode == 4 and "locked: false -> true" in plan.stdout
    assert cli(prefix, "sync", "--refresh").returncode == 0

    runner = gitlab.runner(runner_id)
    assert runner.locked is True and sorted(runner.tag_list) == ["linux", "shell"]
    assert cli(prefix, "plan", "--refresh", "--detailed-exitcode").returncode == 0


def test_no_prune_only_adds(gitlab, make, cli):
    prefix = make(executors={"a": SHELL, "b": SHELL})
    assert cli(prefix).returncode == 0
    prefix.remove_executor("b")
    prefix.write_executor("c", SHELL)

    assert cli(prefix, "sync", "--no-prune").returncode == 0

    assert len(gitlab.runners()) == 3
    assert cli(prefix).returncode == 0
    assert len(gitlab.runners()) == 2


def test_max_deletions(gitlab, make, cli):
    prefix = make(executors={s: SHELL for s in "abcd"})
    assert cli(prefix).returncode == 0
    for stem in "bcd":
        prefix.remove_executor(stem)
    gitlab.clear_requests()

    refused = cli(prefix)

    assert refused.returncode == 2 and "refusing to delete 3 of 4" in refused.stderr
    assert gitlab.mutating_requests() == []
    assert cli(prefix, "sync", "--max-deletions", "2").returncode == 2
    assert cli(prefix, "sync", "--max-deletions", "3").returncode == 0
    assert len(gitlab.runners()) == 1
