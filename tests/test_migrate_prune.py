"""prune-legacy and plan's leftovers end to end, with runners described as gitlab-runner-auth
described them put into the fake GitLab directly (test_migrate_llnl.py runs the real tool)."""

from __future__ import annotations

import json
import socket
import time

HOST = socket.gethostname()
LEFTOVER = f"{HOST} main shell Runner"


def synced(make, cli):
    prefix = make()
    assert cli(prefix).returncode == 0
    return prefix


def test_plan_lists_leftovers_without_counting_them_as_changes(gitlab, make, cli):
    prefix = synced(make, cli)
    leftover = gitlab.add_runner(description=LEFTOVER).id
    gitlab.add_runner(description=f"{HOST} other shell Runner")

    result = cli(prefix, "plan", "--json", "--detailed-exitcode")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [(a["action"], a["id"]) for a in report["actions"] if a["action"] == "leftover"] == [
        ("leftover", leftover)
    ]
    assert any("prune-legacy" in w for w in report["warnings"])


def test_prune_legacy_lists_by_default_and_deletes_only_provable_leftovers(gitlab, make, cli):
    prefix = synced(make, cli)
    ours = gitlab.runners()[0].id
    old = gitlab.add_runner(description=LEFTOVER).id
    online = gitlab.add_runner(description=LEFTOVER, contacted_at=time.time()).id
    marked = gitlab.add_runner(
        description=LEFTOVER, maintenance_note="[register-runner host=x instance=main]"
    ).id
    foreign = gitlab.add_runner(description=f"not{HOST} main shell Runner").id

    gitlab.clear_requests()
    listed = cli(prefix, "prune-legacy", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {a["id"] for a in json.loads(listed.stdout)["actions"]} == {old, online, marked}
    assert gitlab.mutating_requests() == []

    pruned = cli(prefix, "prune-legacy", "--yes")
    assert pruned.returncode == 0, pruned.stderr
    assert {r.id for r in gitlab.runners()} == {ours, online, marked, foreign}
    assert "online" in pruned.stderr and "marker" in pruned.stderr


def test_prune_legacy_waits_for_sync_to_adopt_gitlab_runner_auths_entries(gitlab, make, cli):
    prefix = make()
    prefix.output.write_text(
        f'[[runners]]\nurl = "{gitlab.url}"\ntoken = "glrt-x"\nexecutor = "shell"\n'
        f'description = "{LEFTOVER}"\n'
    )
    gitlab.add_runner(description=LEFTOVER)
    result = cli(prefix, "prune-legacy", "--yes")
    assert result.returncode == 1
    assert "run register-runner (sync) first" in result.stderr and "glrt-x" not in result.stderr
    assert gitlab.requests == []


def test_prune_legacy_without_read_api_says_so(gitlab, make, cli):
    token = gitlab.add_access_token(scopes=("create_runner", "manage_runner"), admin=True)
    prefix = make(access_token=token)
    assert cli(prefix).returncode == 0
    gitlab.add_runner(description=LEFTOVER)
    result = cli(prefix, "prune-legacy", "--yes")
    assert result.returncode == 1 and "read_api" in result.stderr
    assert len(gitlab.runners()) == 2
