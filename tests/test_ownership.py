"""Ownership is proven, never assumed: runners are known by (GitLab, id); nothing is
deleted by id without this host's marker on it (or its token); a create whose outcome is
unknown is found by its marker, never sent again blindly; a 404 is an answer."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from register_runner.testing.fake_gitlab import FakeGitLab
from register_runner.testing.prefix import make_prefix

SHELL = 'executor = "shell"\ntags = ["linux"]\n'
MARKER = "[register-runner "
RECOMMENDED = ("create_runner", "manage_runner")


def _mutations(*gitlabs: FakeGitLab) -> list[str]:
    return [f"{q.method} {q.path}" for gl in gitlabs for q in gl.mutating_requests()]


def test_two_gitlabs_handing_out_the_same_ids_restart_is_a_no_op(gitlab, pat, tmp_path, cli):
    with FakeGitLab() as other:
        other_pat = other.add_access_token(scopes=("api",), admin=True)
        token_file = tmp_path / "other.pat"
        token_file.write_text(other_pat + "\n")
        token_file.chmod(0o600)
        prefix = make_prefix(
            tmp_path / "p",
            gitlab.url,
            pat,
            client_extra=f'\n[[client_configs]]\nurl = "{other.url}"\n'
            f'personal_access_token_file = "{token_file}"\n',
            executors={
                "here": f'url = "{gitlab.url}"\n' + SHELL,
                "there": f'url = "{other.url}"\n' + SHELL,
            },
        )
        assert cli(prefix).returncode == 0
        assert prefix.runner("here")["id"] == prefix.runner("there")["id"]  # both GitLabs: 1
        before = prefix.snapshot()
        gitlab.clear_requests()
        other.clear_requests()

        again = cli(prefix)

        assert again.returncode == 0, again.stderr
        assert _mutations(gitlab, other) == []
        assert prefix.snapshot() == before
        assert "missing" not in again.stderr
        assert len(gitlab.runners()) == 1 and len(other.runners()) == 1


def _restored_with_another_hosts_runners(gitlab, make, pat, tmp_path, cli):
    """Host A registers a and b; GitLab is restored from a backup older than them and hands
    their ids to host B's runners (another system ID)."""
    host_a = make(executors={"a": SHELL, "b": SHELL})
    assert cli(host_a).returncode == 0
    ids = sorted(r.id for r in gitlab.runners())
    gitlab.forget_runners()
    gitlab.reset_ids(ids[0])
    host_b = make_prefix(tmp_path / "host-b", gitlab.url, pat, executors={"x": SHELL, "y": SHELL})
    (host_b.root / ".runner_system_id").write_text("r_otherhost001\n")
    (host_b.root / ".runner_system_id").chmod(0o600)
    assert cli(host_b).returncode == 0
    b_runners = {r.id: r for r in gitlab.runners()}
    assert sorted(b_runners) == ids and all(
        "r_otherhost001" in r.maintenance_note for r in b_runners.values()
    )
    gitlab.clear_requests()
    return host_a, host_b, b_runners


def test_sync_force_after_a_restore_deletes_no_other_hosts_runner(gitlab, make, pat, tmp_path, cli):
    host_a, _, b_runners = _restored_with_another_hosts_runners(gitlab, make, pat, tmp_path, cli)

    result = cli(host_a, "sync", "--force")

    assert result.returncode == 0, result.stderr
    assert all(gitlab.runner(i) is not None for i in b_runners)  # B's runners untouched
    assert not [
        q
        for q in gitlab.mutating_requests()
        if q.method == "DELETE" and q.path.startswith("/runners/")
    ]
    assert "forgotten" in result.stderr or "not deleted" in result.stderr
    ours = [r for r in gitlab.runners() if r.id not in b_runners]
    assert sorted(r.description.rsplit("-", 1)[1] for r in ours) == ["a", "b"]
    # The ids are forgotten: the next run neither deletes nor warns about them again.
    gitlab.clear_requests()
    again = cli(host_a)
    assert again.returncode == 0 and _mutations(gitlab) == []
    assert "forgotten" not in again.stderr


def test_unregister_after_a_restore_deletes_no_other_hosts_runner(gitlab, make, pat, tmp_path, cli):
    host_a, _, b_runners = _restored_with_another_hosts_runners(gitlab, make, pat, tmp_path, cli)

    result = cli(host_a, "unregister")

    assert result.returncode == 0, result.stderr
    assert sorted(r.id for r in gitlab.runners()) == sorted(b_runners)
    assert [q.method for q in gitlab.mutating_requests()] == ["DELETE", "DELETE"]  # by token
    assert all(q.path == "/runners" for q in gitlab.mutating_requests())
    assert host_a.runners() == []


def test_removed_executor_is_deleted_by_its_token(gitlab, make, cli):
    prefix = make(executors={"a": SHELL, "b": SHELL, "c": SHELL})
    assert cli(prefix).returncode == 0
    prefix.remove_executor("c")
    gitlab.clear_requests()

    assert cli(prefix).returncode == 0
    assert [(q.method, q.path) for q in gitlab.mutating_requests()] == [("DELETE", "/runners")]
    assert len(gitlab.runners()) == 2


def test_stale_runner_with_a_dead_token_is_deleted_by_id_only_with_the_marker(gitlab, make, cli):
    prefix = make(executors={"a": SHELL, "b": SHELL, "c": SHELL})
    assert cli(prefix).returncode == 0
    c = prefix.runner("c")["id"]
    gitlab.revoke_runner_token(c)
    prefix.remove_executor("c")

    assert cli(prefix).returncode == 0
    assert gitlab.runner(c) is None
    assert ("DELETE", f"/runners/{c}") in [(q.method, q.path) for q in gitlab.mutating_requests()]


# -- unknown outcomes -----------------------------------------------------------------------

GARBAGE = {
    "truncated json": {"body": b'{"id": 5, "tok'},
    "empty 201": {"body": b"", "status": 201},
    "html page": {"body": b"<html><body>Sign in</body></html>", "content_type": "text/html"},
    "a list": {"body": b"[1, 2]"},
    "string id": {"body": b'{"id": "7", "token": "glrt-notreallyatoken1"}'},
    "no id": {"body": b'{"token": "glrt-notreallyatoken2"}'},
}
LOST = [("drop_after", {})] + [("garbage", options) for options in GARBAGE.values()]
LOST_IDS = ["connection closed after the create"] + [f"answer: {name}" for name in GARBAGE]


def _lose_first_create(gitlab, kind, options):
    gitlab.misbehave(kind, method="POST", path=r"^/user/runners$", **options)


@pytest.mark.parametrize(("kind", "options"), LOST, ids=LOST_IDS)
def test_lost_create_answer_is_adopted_by_its_marker_next_run(gitlab, make, cli, kind, options):
    prefix = make(executors={"a": SHELL, "b": SHELL})
    _lose_first_create(gitlab, kind, options)

    first = cli(prefix, "sync", "--jobs", "1")

    # GitLab failing, not a refusal: b's runner is in the config, so the host can start.
    assert first.returncode == 0, first.stderr
    assert len(gitlab.runners()) == 2
    state = json.loads((prefix.root / ".register-runner" / "main.json").read_text())
    assert sorted(state["pending_creates"]) == ["a"]
    assert all(isinstance(r["id"], int) for r in state["runners"].values())
    creates = [q for q in gitlab.requests if q.method == "POST" and q.path == "/user/runners"]
    assert len(creates) == 2  # never sent again in the same run

    second = cli(prefix)

    assert second.returncode == 0, second.stderr
    assert len(gitlab.runners()) == 2  # exactly one per executor file
    for stem in ("a", "b"):
        entry = prefix.runner(stem)
        assert gitlab.runner(entry["id"]).token == entry["token"]
    creates = [q for q in gitlab.requests if q.method == "POST" and q.path == "/user/runners"]
    assert len(creates) == 2


@pytest.mark.parametrize(("kind", "options"), LOST[:3], ids=LOST_IDS[:3])
def test_lost_create_answer_without_read_api_is_never_sent_again(gitlab, make, cli, kind, options):
    creator = gitlab.add_access_token(scopes=RECOMMENDED, admin=True)
    prefix = make(access_token=creator)
    _lose_first_create(gitlab, kind, options)

    first = cli(prefix)
    second = cli(prefix)

    # Nothing to keep on a fresh host: "GitLab failing" is 3, never 1.
    assert (first.returncode, second.returncode) == (3, 3), second.stderr
    assert "read_api" in second.stderr and "sync --force" in second.stderr
    assert len(gitlab.runners()) == 1
    creates = [q for q in gitlab.requests if q.method == "POST" and q.path == "/user/runners"]
    assert len(creates) == 1


def test_plan_shows_a_create_of_unknown_outcome_as_waiting(gitlab, make, cli):
    prefix = make()
    _lose_first_create(gitlab, "drop_after", {})
    assert cli(prefix).returncode == 3

    plan = cli(prefix, "plan", "--json")

    rows = json.loads(plan.stdout)["actions"]
    assert [r["action"] for r in rows if r["runner"] == "shell"] == ["wait"]


# -- 404 ------------------------------------------------------------------------------------


def test_a_url_with_a_wrong_path_is_one_clear_line_every_run(gitlab, pat, tmp_path, cli):
    wrong = gitlab.url + "/gitlab"
    prefix = make_prefix(tmp_path / "p", wrong, pat, executors={"a": SHELL, "b": SHELL})

    for _ in range(2):
        result = cli(prefix)
        assert result.returncode == 1, result.stderr
        assert "internal error" not in result.stderr
        assert "404" in result.stderr and wrong in result.stderr
    assert gitlab.runners() == []


def test_a_404_on_one_create_keeps_the_tokens_of_the_others(gitlab, make, cli):
    prefix = make(executors={"a": SHELL, "b": SHELL, "c": SHELL})
    gitlab.fail_next(1, 404, method="POST", path=r"^/user/runners$")

    first = cli(prefix, "sync", "--jobs", "1")

    assert first.returncode == 1 and "internal error" not in first.stderr
    assert len(gitlab.runners()) == 2 and len(prefix.runners()) == 2
    assert cli(prefix).returncode == 0
    assert len(gitlab.runners()) == 3
    for entry in prefix.runners():
        assert gitlab.runner(entry["id"]).token == entry["token"]


# -- the system ID at first boot ----------------------------------------------------------


def _no_machine_id() -> bool:
    probe = subprocess.run(
        ["unshare", "--mount", "sh", "-c", "mount --bind /dev/null /etc/machine-id"],
        capture_output=True,
    )
    return shutil.which("unshare") is not None and probe.returncode == 0


@pytest.mark.skipif(not _no_machine_id(), reason="needs unshare and bind mounts (root)")
def test_instances_racing_at_first_boot_share_one_system_id(gitlab, pat, tmp_path):
    instances = [f"i{n}" for n in range(10)]
    for instance in instances:
        make_prefix(tmp_path / "p", gitlab.url, pat, instance=instance)
    # A host without a machine ID: each run would make its own random r_ ID.
    script = (
        "for f in /etc/machine-id /var/lib/dbus/machine-id; do "
        "[ -e $f ] && mount --bind /dev/null $f; done; "
        + " & ".join(
            f"{sys.executable} -m register_runner sync --prefix {tmp_path / 'p'} "
            f"--instance {instance} >/dev/null 2>&1"
            for instance in instances
        )
        + "; wait"
    )

    subprocess.run(["unshare", "--mount", "sh", "-c", script], check=True, timeout=120)

    system_id = (tmp_path / "p" / ".runner_system_id").read_text().strip()
    assert system_id.startswith("r_")
    for instance in instances:
        state = json.loads((tmp_path / "p" / ".register-runner" / f"{instance}.json").read_text())
        assert state["system_id"] == system_id, instance
    assert len(gitlab.runners()) == len(instances)
    gitlab.clear_requests()
    subprocess.run(
        ["unshare", "--mount", "sh", "-c", script.replace(" & ", "; ")], check=True, timeout=120
    )
    assert _mutations(gitlab) == []  # nobody took its prefix for a copy


def test_marker_names_host_instance_executor_and_system_id(gitlab, prefix, cli):
    assert cli(prefix).returncode == 0
    (runner,) = gitlab.runners()
    system_id = Path(prefix.root / ".runner_system_id").read_text().strip()
    assert MARKER in runner.maintenance_note
    for part in ("instance=main", "executor=shell", f"system_id={system_id}"):
        assert part in runner.maintenance_note


# -- guards a mutation of the code must not get past ---------------------------------------


def test_deletion_left_by_an_earlier_run_waits_while_the_mass_invalid_guard_holds(
    gitlab, make, cli
):
    prefix = make(executors={"a": SHELL, "b": SHELL, "c": SHELL})
    assert cli(prefix).returncode == 0
    # What an earlier run leaves when GitLab failed its DELETE: c queued for deletion.
    state_file = prefix.root / ".register-runner" / "main.json"
    state = json.loads(state_file.read_text())
    c = state["runners"].pop("c")
    state["pending_deletes"] = [{"id": c["id"], "url": c["url"], "stem": "c", "token": None}]
    state_file.write_text(json.dumps(state))
    prefix.remove_executor("c")
    for stem in ("a", "b"):
        gitlab.revoke_runner_token(prefix.runner(stem)["id"])  # GitLab answers 403 for all
    gitlab.clear_requests()

    held = cli(prefix)

    assert held.returncode == 3 and "GitLab-side failure" in held.stderr
    assert gitlab.mutating_requests() == [] and gitlab.runner(c["id"]) is not None
    assert cli(prefix, "sync", "--force").returncode == 0
    assert gitlab.runner(c["id"]) is None


def test_recovery_leaves_a_twin_described_alike_but_marked_by_another_host(
    gitlab, make, pat, tmp_path, cli
):
    # Host B has the same host name, instance and executor, so the same description.
    twin = make_prefix(tmp_path / "twin", gitlab.url, pat)
    (twin.root / ".runner_system_id").write_text("r_twinhost0001\n")
    assert cli(twin).returncode == 0
    (theirs,) = gitlab.runners()
    prefix = make()
    _lose_first_create(gitlab, "drop_after", {})
    assert cli(prefix).returncode == 3
    ours = next(r for r in gitlab.runners() if r.id != theirs.id)
    assert ours.description == theirs.description

    assert cli(prefix).returncode == 0

    assert gitlab.runner(theirs.id).token == theirs.token  # neither reset nor deleted
    assert prefix.runner("shell")["id"] == ours.id
    assert len(gitlab.runners()) == 2


def test_recovery_of_a_recreate_adopts_the_new_runner_and_deletes_the_old(gitlab, make, cli):
    prefix = make()
    assert cli(prefix).returncode == 0
    old = prefix.runner("shell")["id"]
    gitlab.revoke_runner_token(old)
    _lose_first_create(gitlab, "drop_after", {})
    assert cli(prefix).returncode == 0  # the old config is kept
    new = max(r.id for r in gitlab.runners())

    result = cli(prefix)

    assert result.returncode == 0, result.stderr
    assert prefix.runner("shell")["id"] == new
    assert [r.id for r in gitlab.runners()] == [new]


def test_more_than_50_tags_with_the_host_wide_ones_is_bad_input(gitlab, make, cli):
    own = ", ".join(f'"t{n}"' for n in range(49))
    prefix = make(executors={"shell": f'executor = "shell"\ntags = [{own}]\n'})
    prefix.write_template(
        prefix.template.read_text().replace(
            "[[client_configs]]",
            '[register_runner]\ntags = ["site", "ib"]\n\n[[client_configs]]',
            1,
        )
    )
    result = cli(prefix)
    assert result.returncode == 2
    assert "51 tags" in result.stderr and "shell.toml" in result.stderr
    assert gitlab.mutating_requests() == []
