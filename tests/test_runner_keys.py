"""A runner is known by its GitLab and its id together: two GitLabs hand out the same ids,
so nothing this host keeps about one runner (a deletion queued, a token not yet written)
may be taken for another GitLab's runner that has the same id."""

from __future__ import annotations

import json

import pytest

from register_runner.files import json_lines
from register_runner.testing.fake_gitlab import FakeGitLab
from register_runner.testing.prefix import make_prefix

SHELL = 'executor = "shell"\ntags = ["linux"]\n'


@pytest.fixture
def other():
    with FakeGitLab() as server:
        yield server


def _two_gitlabs(gitlab, other, pat, tmp_path, stems):
    """A prefix with runners on both GitLabs: ``stems`` maps a stem to its GitLab."""
    token_file = tmp_path / "other.pat"
    token_file.write_text(other.add_access_token(scopes=("api",), admin=True) + "\n")
    token_file.chmod(0o600)
    return make_prefix(
        tmp_path / "p",
        gitlab.url,
        pat,
        client_extra=f'\n[[client_configs]]\nurl = "{other.url}"\n'
        f'personal_access_token_file = "{token_file}"\n',
        executors={stem: f'url = "{where.url}"\n' + SHELL for stem, where in stems.items()},
    )


def _state_file(prefix):
    return prefix.root / ".register-runner" / "main.json"


def test_runners_of_two_gitlabs_with_one_id_are_both_deleted(gitlab, other, pat, tmp_path, cli):
    prefix = _two_gitlabs(
        gitlab, other, pat, tmp_path, {"here": gitlab, "there": other, "stays": gitlab}
    )
    assert cli(prefix, "sync", "--jobs", "1").returncode == 0  # in order: here gets 1
    assert prefix.runner("here")["id"] == prefix.runner("there")["id"]
    prefix.remove_executor("here")
    prefix.remove_executor("there")

    result = cli(prefix, "sync", "--max-deletions", "2")

    # Both deletions are queued, neither taken for the other: no orphan stays in GitLab.
    assert result.returncode == 0, result.stderr
    assert [r.id for r in gitlab.runners()] == [prefix.runner("stays")["id"]]
    assert other.runners() == []
    assert json.loads(_state_file(prefix).read_text())["pending_deletes"] == []


def test_a_token_not_yet_written_for_one_gitlab_is_never_used_for_another(
    gitlab, other, pat, tmp_path, cli
):
    prefix = _two_gitlabs(gitlab, other, pat, tmp_path, {"x": other})
    assert cli(prefix).returncode == 0
    entry = prefix.runner("x")
    # A token the state kept for runner x on the first GitLab, which has the same id there.
    elsewhere = gitlab.add_runner(description="x elsewhere")
    assert elsewhere.id == entry["id"]
    state = json.loads(_state_file(prefix).read_text())
    state["unwritten"]["x"] = {
        "id": elsewhere.id,
        "url": gitlab.url,
        "token": elsewhere.token,
        "obtained_at": None,
        "expires_at": None,
    }
    _state_file(prefix).write_text(json_lines(state))
    gitlab.clear_requests()
    other.clear_requests()

    result = cli(prefix)

    assert result.returncode == 0, result.stderr
    assert prefix.runner("x")["token"] == entry["token"] == other.runner(entry["id"]).token
    assert gitlab.mutating_requests() == [] and other.mutating_requests() == []
    assert len(other.runners()) == 1
    assert gitlab.runner(elsewhere.id).token == elsewhere.token
