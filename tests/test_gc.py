"""``register-runner gc``: dead and re-imaged hosts' runners are listed and, with --yes,
deleted; nothing else is ever touched. End to end: the CLI (and the Python API) against the
fake GitLab."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from conftest import ALL_SCOPES, GROUP_ID, PROJECT_ID

import register_runner
from register_runner.hostid import hostname
from register_runner.model import Identity
from register_runner.testing.fake_gitlab import FakeGitLab


def marked(gitlab, host, stem, system_id, *, days_silent, never=False):
    """A runner this tool made on ``host``, silent for ``days_silent`` days."""
    now = time.time()
    return gitlab.add_runner(
        description=f"{host}-main-{stem}",
        maintenance_note=Identity(host, "main", system_id).marker(stem),
        created_at=now - (days_silent + 100) * 86400 if not never else now - days_silent * 86400,
        contacted_at=None if never else now - days_silent * 86400,
    ).id


@pytest.fixture
def fleet(gitlab, prefix, cli):
    """This host (synced, its runner silent for 60 days: it is in the state all the same),
    a re-imaged host's old runners (same name, another system ID), a dead host's runners
    (one never contacted), a foreign runner, and runners silent for less than 30 days."""
    synced = cli(prefix)
    assert synced.returncode == 0, synced.stderr
    (own,) = [r.id for r in gitlab.runners()]
    gitlab.age_runner(own, 60)
    host = hostname()
    ids = {
        "own": own,
        "reimaged": {
            marked(gitlab, host, "shell", "s_0123456789ab", days_silent=45),
            marked(gitlab, host, "docker", "s_0123456789ab", days_silent=45),
        },
        "dead": {
            marked(gitlab, "node17", "shell", "s_00000000dead", days_silent=90),
            marked(gitlab, "node17", "nspawn", "s_00000000dead", days_silent=40, never=True),
        },
        "foreign": gitlab.add_runner(description="made by hand", created_at=0).id,
        # Stale to GitLab (7 days), not to gc (30 days): read, then left alone.
        "stale": marked(gitlab, "node19", "shell", "s_0000000node2", days_silent=10),
        "recent": {
            marked(gitlab, "node18", "shell", "s_0000000node1", days_silent=3),
            marked(gitlab, "node20", "shell", "s_0000000node3", days_silent=4, never=True),
        },
    }
    gitlab.age_runner(ids["foreign"], 100)
    gitlab.clear_requests()
    return ids


def gc(cli, prefix, *args):
    return cli(prefix, "gc", "--json", *args)


def listed(result) -> set[int]:
    return {row["id"] for row in json.loads(result.stdout)["actions"]}


def test_gc_lists_and_with_yes_deletes_dead_and_reimaged_hosts_runners_only(
    gitlab, prefix, cli, fleet
):
    dead = fleet["reimaged"] | fleet["dead"]
    planned = gc(cli, prefix)
    assert planned.returncode == 0, planned.stderr
    document = json.loads(planned.stdout)
    assert document["schema"] == 1 and document["dry_run"] is True
    assert listed(planned) == dead
    assert {row["result"] for row in document["actions"]} == {"planned"}
    never = [row for row in document["actions"] if "never contacted" in row["reason"]]
    assert len(never) == 1 and "40 days ago" in never[0]["reason"]
    assert gitlab.mutating_requests() == []
    # Lists of what GitLab calls stale, then a read of each of those runners only.
    lists = [q for q in gitlab.requests if q.path == "/runners/all"]
    assert lists and {q.query.get("status") for q in lists} == {"stale"}
    read = {int(q.path.rsplit("/", 1)[1]) for q in gitlab.requests if q.path[9:].isdigit()}
    assert read == dead | {fleet["foreign"], fleet["stale"]}
    assert cli(prefix, "gc", "--detailed-exitcode").returncode == 4

    deleted = gc(cli, prefix, "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(deleted.stdout)["deleted"] == 4 and listed(deleted) == dead
    left = {r.id for r in gitlab.runners()}
    assert left == {fleet["own"], fleet["foreign"], fleet["stale"], *fleet["recent"]}

    again = cli(prefix, "gc", "--yes", "--detailed-exitcode")
    assert again.returncode == 0, again.stderr
    assert {r.id for r in gitlab.runners()} == left
    synced = cli(prefix)
    assert synced.returncode == 0 and gitlab.runner(fleet["own"]) is not None


def test_a_shorter_age_reaches_runners_gitlab_calls_offline_or_never_contacted(
    gitlab, prefix, cli, fleet
):
    planned = gc(cli, prefix, "--older-than", "2d")
    assert planned.returncode == 0, planned.stderr
    recent = fleet["recent"]
    assert recent
    assert listed(planned) == fleet["reimaged"] | fleet["dead"] | recent | {fleet["stale"]}
    statuses = {q.query.get("status") for q in gitlab.requests if q.path == "/runners/all"}
    assert statuses == {"stale", "offline", "never_contacted"}
    week = gc(cli, prefix, "--older-than", "1w")
    assert listed(week) == fleet["reimaged"] | fleet["dead"] | {fleet["stale"]}


def test_this_hosts_runners_of_another_instance_are_never_listed(gitlab, prefix, cli, fleet):
    """Another instance on this host (its service stopped for months): its runners are not
    in this instance's state, yet they are this host's current runners, not a dead host's."""
    from register_runner.testing.prefix import run_cli

    (prefix.root / "config.template.gpu.toml").write_text(prefix.template.read_text())
    (prefix.root / "gpu").mkdir(mode=0o700)
    (prefix.root / "gpu" / "cuda.toml").write_text('executor = "shell"\ntags = ["gpu"]\n')
    before = {r.id for r in gitlab.runners()}
    synced = run_cli(["--prefix", str(prefix.root), "--instance", "gpu"])
    assert synced.returncode == 0, synced.stderr
    (gpu,) = {r.id for r in gitlab.runners()} - before
    gitlab.age_runner(gpu, 60)

    deleted = gc(cli, prefix, "--yes")

    assert deleted.returncode == 0, deleted.stderr
    assert listed(deleted) == fleet["reimaged"] | fleet["dead"]
    assert gitlab.runner(gpu) is not None


def test_every_gitlab_the_template_names_is_searched(gitlab, make, cli, tmp_path):
    """Two client_configs: a dead host's runners in each GitLab are listed and deleted
    there, ids alike in both (a runner is its GitLab and its id)."""
    with FakeGitLab() as other:
        token_file = tmp_path / "other.pat"
        token_file.write_text(other.add_access_token(scopes=ALL_SCOPES, admin=True))
        token_file.chmod(0o600)
        prefix = make(
            client_extra=f'\n[[client_configs]]\nurl = "{other.url}"\n'
            f'personal_access_token_file = "{token_file}"\n',
            executors={"shell": f'url = "{gitlab.url}"\nexecutor = "shell"\n'},
        )
        here = marked(gitlab, "node17", "shell", "s_00000000dead", days_silent=40)
        there = marked(other, "node17", "shell", "s_00000000dead", days_silent=40)
        assert here == there

        planned = gc(cli, prefix)
        assert planned.returncode == 0, planned.stderr
        where = {row["reason"].split(": ", 1)[0] for row in json.loads(planned.stdout)["actions"]}
        assert where == {f"on {gitlab.url}", f"on {other.url}"}

        deleted = gc(cli, prefix, "--yes")
        assert deleted.returncode == 0, deleted.stderr
        assert gitlab.runners() == [] and other.runners() == []


def test_the_deletion_limit_refuses_before_anything_is_deleted(gitlab, prefix, cli, fleet):
    before = {r.id for r in gitlab.runners()}
    refused = cli(prefix, "gc", "--yes", "--max-deletions", "3")
    assert refused.returncode == 2
    assert "refusing to delete: 4 runners to delete, more than the limit of 3" in refused.stderr
    assert gitlab.mutating_requests() == [] and {r.id for r in gitlab.runners()} == before
    planned = cli(prefix, "gc", "--max-deletions", "3")
    assert planned.returncode == 0 and "gc --yes would refuse" in planned.stderr
    assert cli(prefix, "gc", "--yes", "--max-deletions", "4").returncode == 0
    assert len(gitlab.runners()) == len(before) - 4


@pytest.mark.parametrize(
    "token, needs",
    [
        ({"scopes": ("create_runner", "manage_runner"), "admin": True}, "lacks the read_api scope"),
        ({"scopes": ALL_SCOPES}, "listing instance runners needs an admin's access token"),
    ],
)
def test_without_leave_to_list_gc_exits_1_and_says_what_is_needed(gitlab, make, cli, token, needs):
    gitlab.add_runner(maintenance_note=Identity("x", "main", "s_1").marker("a"), created_at=0)
    prefix = make(access_token=gitlab.add_access_token(**token))
    result = cli(prefix, "gc", "--yes")
    assert result.returncode == 1
    assert needs in result.stderr
    assert gitlab.mutating_requests() == [] and len(gitlab.runners()) == 1


@pytest.mark.parametrize(
    "scope, token, needs",
    [
        ("group", {"scopes": ALL_SCOPES}, "group 42 needs the access token of an owner of it"),
        ("project", {"scopes": ALL_SCOPES}, "project 7 needs the access token of a maintainer"),
        ("group", {"scopes": ("create_runner",), "groups": (GROUP_ID,)}, "lacks the read_api"),
    ],
)
def test_without_the_role_to_list_group_or_project_runners_gc_says_which(
    gitlab, make, cli, scope, token, needs
):
    note = Identity("node17", "main", "s_00000000dead").marker("shell")
    ids = {"group_id": GROUP_ID} if scope == "group" else {"project_id": PROJECT_ID}
    dead = gitlab.add_runner(f"{scope}_type", maintenance_note=note, created_at=0, **ids)
    ((key, value),) = ids.items()
    prefix = make(
        access_token=gitlab.add_access_token(**token),
        client_extra=f'runner_type = "{scope}_type"\n{key} = {value}\n',
    )
    result = cli(prefix, "gc", "--yes")
    assert result.returncode == 1
    assert needs in result.stderr and "read_api" in result.stderr
    assert gitlab.mutating_requests() == [] and gitlab.runner(dead.id) is not None


def test_bad_age_is_usage(prefix, cli):
    for bad in ("30", "1y", "-2d"):
        result = cli(prefix, "gc", "--older-than", bad)
        assert result.returncode == 2 and "--older-than" in result.stderr, bad
    short = cli(prefix, "gc", "--older-than", "90m")
    assert short.returncode == 2 and "--older-than 90m: at least 2h" in short.stderr


@pytest.mark.parametrize("age", ["36501d", "100000000d", "9999999999999999999999w"])
def test_an_age_longer_than_gitlab_has_existed_is_usage_not_a_crash(gitlab, prefix, cli, age):
    marked(gitlab, "node17", "shell", "s_00000000dead", days_silent=40)
    result = cli(prefix, "gc", "--older-than", age)
    assert result.returncode == 2, result.stderr
    assert "--older-than" in result.stderr and "internal error" not in result.stderr
    assert cli(prefix, "gc", "--older-than", "36500d").returncode == 0


def test_global_options_before_the_command_word(gitlab, prefix, fleet):
    from register_runner.testing.prefix import run_cli

    result = run_cli(["--prefix", str(prefix.root), "--json", "gc", "--older-than", "30d"])
    assert result.returncode == 0, result.stderr
    assert listed(result) == fleet["reimaged"] | fleet["dead"]


def test_python_api(gitlab, prefix, fleet):
    result = register_runner.gc(prefix=prefix.root, older_than=timedelta(days=30), yes=True)
    assert isinstance(result, register_runner.api.GcResult)
    assert result.exit_status == 0 and result.changed and not result.dry_run
    assert {a.id for a in result.actions} == fleet["reimaged"] | fleet["dead"]
    assert result.deleted == 4 and {a.result for a in result.actions} == {"done"}


def test_group_runners_are_listed_through_the_group_and_printed_as_a_table(gitlab, make, cli):
    note = Identity("node17", "main", "s_00000000dead").marker("shell")
    dead = gitlab.add_runner(
        "group_type", group_id=GROUP_ID, description="node17\nforged", maintenance_note=note
    )
    gitlab.age_runner(dead.id, 40)
    other = gitlab.add_runner("group_type", group_id=GROUP_ID + 1, maintenance_note=note)
    gitlab.age_runner(other.id, 40)
    owner = gitlab.add_access_token(scopes=ALL_SCOPES, groups=(GROUP_ID,))
    prefix = make(
        access_token=owner, client_extra=f'runner_type = "group_type"\ngroup_id = {GROUP_ID}\n'
    )
    result = cli(prefix, "gc")
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if str(dead.id) in line]
    assert line.split()[:3] == ["delete", "node17", "forged"] and "forged" in line
    assert "never contacted GitLab; created" in line and "40 days ago" in line
    lists = {q.path for q in gitlab.requests if q.method == "GET" and q.path.endswith("runners")}
    assert lists == {f"/groups/{GROUP_ID}/runners"}


def test_a_rate_limited_gitlab_is_waited_for_and_a_failing_one_is_exit_3(
    gitlab, prefix, cli, fleet
):
    gitlab.fail_next(status=429, method="GET", path=r"^/runners/\d+$", retry_after="1")
    waited = gc(cli, prefix)
    assert waited.returncode == 0, waited.stderr
    assert listed(waited) == fleet["reimaged"] | fleet["dead"]
    assert [q.status for q in gitlab.requests].count(429) == 1

    gitlab.fail_next(count=100, status=503, method="GET", path=r"^/runners/all$")
    failing = cli(prefix, "gc", "--yes", "--deadline", "1")
    assert failing.returncode == 3
    assert "list runners" in failing.stderr and "GitLab answered 503" in failing.stderr
    assert gitlab.mutating_requests() == []


# -- what mutation testing found unchecked -------------------------------------------------


def test_a_runner_gitlab_would_not_show_is_skipped_and_the_rest_still_listed(
    gitlab, prefix, cli, fleet
):
    unreadable, *others = sorted(fleet["dead"] | fleet["reimaged"])
    gitlab.fail_next(count=100, status=403, method="GET", path=rf"^/runners/{unreadable}$")
    result = gc(cli, prefix)
    assert result.returncode == 1
    assert listed(result) == set(others)
    (line,) = result.stderr.splitlines()
    assert f"read runner {unreadable}: forbidden (403)" in line


def test_a_delete_gitlab_refuses_is_a_failed_row_and_one_it_lost_already_gone(
    gitlab, prefix, cli, fleet
):
    refused, lost, *deleted = sorted(fleet["dead"] | fleet["reimaged"])
    gitlab.fail_next(count=100, status=403, method="DELETE", path=rf"^/runners/{refused}$")
    gitlab.fail_next(count=1, status=404, method="DELETE", path=rf"^/runners/{lost}$")
    result = gc(cli, prefix, "--yes")
    assert result.returncode == 1
    rows = {row["id"]: row for row in json.loads(result.stdout)["actions"]}
    assert rows[refused]["result"] == "failed" and "403" in rows[refused]["error"]
    assert rows[refused]["reason"].startswith("on http")
    assert rows[lost]["result"] == "already gone"
    assert {rows[i]["result"] for i in deleted} == {"done"}


def test_a_runner_of_a_create_not_settled_yet_is_left_to_recovery(gitlab, prefix, cli):
    # A create answered 500 after GitLab acted: the runner carries this host's marker but
    # is in no state or config yet; recovery adopts it, gc must not delete it first.
    body = json.dumps({"message": "500 Internal Server Error"}).encode()
    gitlab.misbehave("garbage", method="POST", path=r"^/user/runners$", status=500, body=body)
    assert cli(prefix).returncode == 3
    (made,) = gitlab.runners()
    gitlab.age_runner(made.id, 60)  # never contacted, created long ago: "dead" to gc

    result = cli(prefix, "gc", "--yes", "--json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["actions"] == []
    assert gitlab.runner(made.id) is not None
    assert cli(prefix).returncode == 0
    assert prefix.runner("shell")["id"] == made.id  # recovered, not recreated


def test_under_journald_what_ends_gc_in_exit_1_is_an_error_and_a_failing_gitlab_a_warning(
    gitlab, make, cli
):
    """As sync logs its refusals: the line explaining an exit 1 has priority 3, a GitLab
    that was failing (exit 3, try again later) priority 4."""
    journal = {"JOURNAL_STREAM": "8:1234"}
    gitlab.add_runner(maintenance_note=Identity("x", "main", "s_1").marker("a"), created_at=0)
    scopes = {"scopes": ("create_runner", "manage_runner"), "admin": True}
    prefix = make(access_token=gitlab.add_access_token(**scopes))

    refused = cli(prefix, "gc", "--yes", env=journal)

    assert refused.returncode == 1
    (line,) = [line for line in refused.stderr.splitlines() if "lacks the read_api" in line]
    assert line.startswith("<3>event=refused "), line

    gitlab.fail_next(count=100, status=503, method="GET", path=r"^/runners/all$")
    failing = cli(prefix, "gc", "--yes", "--deadline", "1", env=journal)

    assert failing.returncode == 3
    (line,) = [line for line in failing.stderr.splitlines() if "GitLab answered 503" in line]
    assert line.startswith("<4>event=warning "), line
