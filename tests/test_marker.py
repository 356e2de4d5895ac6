"""The marker tells prefixes apart: two prefixes of one host with the same instance name
never adopt, reset or delete each other's runners. Markers written by the last release
(without the prefix key) stay valid for the prefix that wrote them, and an existing host
upgrades without a single mutating call."""

from __future__ import annotations

import json
import re
import socket
import urllib.request

from register_runner.files import json_lines
from register_runner.testing.prefix import make_prefix

SHELL = 'executor = "shell"\ntags = ["linux"]\n'
SYSTEM_ID = "r_samehost0001"


def _state_path(prefix):
    return prefix.root / ".register-runner" / f"{prefix.instance}.json"


def _last_release_marker(prefix, stem):
    """The marker as the last release wrote it: host, instance, executor, system ID."""
    system_id = (prefix.root / ".runner_system_id").read_text().strip()
    host = socket.gethostname().split(".")[0] or "localhost"
    return (
        f"[register-runner host={host} instance={prefix.instance} executor={stem} "
        f"system_id={system_id}]"
    )


def _put_note(gitlab, pat, runner_id, note):
    request = urllib.request.Request(
        f"{gitlab.api_url}/runners/{runner_id}",
        data=json.dumps({"maintenance_note": note}).encode(),
        headers={"PRIVATE-TOKEN": pat, "Content-Type": "application/json"},
        method="PUT",
    )
    with urllib.request.urlopen(request) as answer:
        assert answer.status == 200


def _as_the_last_release_left_it(gitlab, pat, prefix):
    """GitLab's runners and the state as the last release wrote them for this prefix."""
    state = json.loads(_state_path(prefix).read_text())
    for stem, stored in state["runners"].items():
        marker = _last_release_marker(prefix, stem)
        own, _, current = _note(gitlab, stored).rpartition("[")
        assert re.fullmatch(re.escape(marker[1:-1]) + r" prefix=[0-9a-f]{8}\]", current)
        stored["applied"]["maintenance_note"] = own + marker
        _put_note(gitlab, pat, stored["id"], own + marker)
    for stem, pending in state["pending_creates"].items():
        pending["marker"] = pending["attributes"]["maintenance_note"] = _last_release_marker(
            prefix, stem
        )
    _state_path(prefix).write_text(json_lines(state))  # as the tool writes it
    gitlab.clear_requests()


def _note(gitlab, stored):
    return gitlab.runner(stored["id"]).maintenance_note


def _same_host(make, **options):
    prefix = make(**options)
    (prefix.root / ".runner_system_id").write_text(SYSTEM_ID + "\n")
    (prefix.root / ".runner_system_id").chmod(0o600)
    return prefix


def test_a_host_the_last_release_set_up_upgrades_without_a_mutating_call(gitlab, make, pat, cli):
    prefix = make(executors={"a": SHELL, "b": 'executor = "shell"\nmaintenance_note = "x"\n'})
    assert cli(prefix).returncode == 0
    _as_the_last_release_left_it(gitlab, pat, prefix)
    before = prefix.snapshot()

    for args in (["sync"], ["plan", "--detailed-exitcode"], ["sync", "--refresh"]):
        result = cli(prefix, *args)
        assert result.returncode == 0, (args, result.stderr)
        assert gitlab.mutating_requests() == [], args
        if args == ["sync"]:
            assert prefix.snapshot() == before  # neither the state nor the config written
    assert _note(gitlab, {"id": prefix.runner("a")["id"]}) == _last_release_marker(prefix, "a")


def test_runners_the_last_release_marked_are_still_provably_this_prefixs(gitlab, make, pat, cli):
    prefix = make(executors={"a": SHELL, "b": SHELL, "c": SHELL})
    assert cli(prefix).returncode == 0
    _as_the_last_release_left_it(gitlab, pat, prefix)
    gone = prefix.runner("c")["id"]
    gitlab.revoke_runner_token(gone)  # no token to delete it by: only the marker proves it
    prefix.remove_executor("c")

    result = cli(prefix)

    assert result.returncode == 0, result.stderr
    assert gitlab.runner(gone) is None
    assert [f"{q.method} {q.path}" for q in gitlab.mutating_requests()] == [
        "DELETE /runners",
        f"DELETE /runners/{gone}",
    ]


def test_a_create_the_last_release_lost_is_adopted_by_its_marker(gitlab, make, pat, cli):
    prefix = make()
    gitlab.misbehave("drop_after", method="POST", path=r"^/user/runners$")
    assert cli(prefix).returncode == 3
    (lost,) = gitlab.runners()
    _put_note(gitlab, pat, lost.id, _last_release_marker(prefix, "shell"))
    _as_the_last_release_left_it(gitlab, pat, prefix)

    result = cli(prefix)

    assert result.returncode == 0, result.stderr
    assert [r.id for r in gitlab.runners()] == [lost.id]
    assert prefix.runner("shell")["token"] == gitlab.runner(lost.id).token


def test_two_prefixes_with_one_instance_name_never_take_each_others_runners(gitlab, make, pat, cli):
    first = _same_host(make)
    assert cli(first).returncode == 0
    theirs = first.runner("shell")
    second = _same_host(make)
    gitlab.misbehave("drop_after", method="POST", path=r"^/user/runners$")
    assert cli(second).returncode == 3
    ours = next(r for r in gitlab.runners() if r.id != theirs["id"])
    assert ours.description == gitlab.runner(theirs["id"]).description  # alike but for the key

    result = cli(second)

    assert result.returncode == 0, result.stderr
    assert second.runner("shell")["id"] == ours.id
    assert gitlab.runner(theirs["id"]).token == theirs["token"]  # neither reset nor deleted
    assert len(gitlab.runners()) == 2
    gitlab.clear_requests()
    assert cli(first).returncode == 0
    assert gitlab.mutating_requests() == []
    assert first.runner("shell") == theirs


def test_a_prefix_left_by_the_last_release_is_not_taken_by_a_new_one(gitlab, make, pat, cli):
    first = _same_host(make)
    assert cli(first).returncode == 0
    _as_the_last_release_left_it(gitlab, pat, first)
    theirs = first.runner("shell")
    second = _same_host(make)
    gitlab.misbehave("drop_after", method="POST", path=r"^/user/runners$")
    assert cli(second).returncode == 3

    result = cli(second)

    assert result.returncode == 0, result.stderr
    assert second.runner("shell")["id"] != theirs["id"]
    assert gitlab.runner(theirs["id"]).token == theirs["token"]
    assert len(gitlab.runners()) == 2


def test_the_same_prefix_through_a_symlink_keeps_its_marker(gitlab, pat, tmp_path, cli):
    prefix = make_prefix(tmp_path / "real", gitlab.url, pat)
    assert cli(prefix).returncode == 0
    (tmp_path / "link").symlink_to(tmp_path / "real")
    gitlab.clear_requests()

    result = cli(type(prefix)(tmp_path / "link", "main"))

    assert result.returncode == 0, result.stderr
    assert gitlab.mutating_requests() == []


# -- [register_runner] host = "NAME" ----------------------------------------------------


def _set_host(prefix, line):
    """The line in the template's [register_runner] table; its line number."""
    text = prefix.template.read_text()
    table = f"[register_runner]\n{line}\n\n[[client_configs]]"
    prefix.write_template(text.replace("[[client_configs]]", table, 1))
    return text[: text.index("[[client_configs]]")].count("\n") + 2


def test_the_templates_host_name_goes_into_the_marker_and_the_names(gitlab, prefix, cli):
    _set_host(prefix, 'host = "web-01.fleet"')

    result = cli(prefix)

    assert result.returncode == 0, result.stderr
    system_id = (prefix.root / ".runner_system_id").read_text().strip()
    (runner,) = gitlab.runners()
    assert runner.description == "web-01.fleet-main-shell"
    assert prefix.runner("shell")["name"] == "web-01.fleet-main-shell"
    assert re.fullmatch(
        r"\[register-runner host=web-01\.fleet instance=main executor=shell "
        rf"system_id={system_id} prefix=[0-9a-f]{{8}}\]",
        runner.maintenance_note,
    )
    assert system_id.startswith(("s_", "r_"))  # the machine's, whatever the name says
    assert "register_runner" not in prefix.output.read_text()


def test_a_changed_host_name_renames_the_runners_in_place(gitlab, make, cli):
    prefix = make(executors={"a": SHELL, "b": SHELL})
    assert cli(prefix).returncode == 0
    before = {stem: prefix.runner(stem) for stem in ("a", "b")}
    _set_host(prefix, 'host = "web-01"')
    gitlab.clear_requests()

    renamed = cli(prefix)

    # Still this host's runners (their ids and tokens are): updated, not orphaned.
    assert renamed.returncode == 0, renamed.stderr
    # Sorted both sides: the two creates run concurrently, so either may get the lower id.
    assert sorted(f"{q.method} {q.path}" for q in gitlab.mutating_requests()) == sorted(
        [f"PUT /runners/{before['a']['id']}", f"PUT /runners/{before['b']['id']}"]
    )
    for stem, entry in before.items():
        runner = gitlab.runner(entry["id"])
        assert runner.description == f"web-01-main-{stem}"
        assert f"host=web-01 instance=main executor={stem} " in runner.maintenance_note
        assert prefix.runner(stem)["token"] == entry["token"] == runner.token
        assert prefix.runner(stem)["name"] == f"web-01-main-{stem}"
    gitlab.clear_requests()
    assert cli(prefix).returncode == 0
    assert gitlab.mutating_requests() == []
    # The new marker is the proof a delete by id needs.
    gitlab.revoke_runner_token(before["b"]["id"])
    prefix.remove_executor("b")
    assert cli(prefix).returncode == 0
    assert gitlab.runner(before["b"]["id"]) is None


def test_a_host_name_that_would_break_the_marker_is_bad_input(gitlab, prefix, cli):
    line = _set_host(prefix, 'host = "web 01]"')

    result = cli(prefix)

    assert result.returncode == 2
    assert f"{prefix.template}:{line}:" in result.stderr and "'web 01]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert gitlab.runners() == [] and not prefix.output.exists()


def test_the_guard_knows_runners_the_last_release_marked_as_this_hosts(gitlab, make, pat, cli):
    prefix = make(executors={"a": SHELL, "b": SHELL})
    assert cli(prefix).returncode == 0
    _as_the_last_release_left_it(gitlab, pat, prefix)
    for stem in ("a", "b"):
        gitlab.revoke_runner_token(prefix.runner(stem)["id"])  # every token 403s at once
    before = prefix.snapshot()

    held = cli(prefix)

    # Still listed with this host's marker (the last release's form): GitLab-side, held.
    assert held.returncode == 3, held.stderr
    assert "GitLab still lists these runners" in held.stderr
    assert gitlab.mutating_requests() == [] and len(gitlab.runners()) == 2
    assert prefix.output.read_bytes() == before["config.main.toml"][0]


def test_the_marker_the_last_release_wrote_is_the_one_without_the_key():
    # Mutation testing: every test built the key-less marker with Identity itself, so a
    # changed key-less marker went unseen; the runners in GitLab carry this very text.
    from register_runner.model import Identity, earlier_marker

    keyed = Identity("node1", "main", "s_0123456789ab", "ab12").marker("shell")
    assert keyed == (
        "[register-runner host=node1 instance=main executor=shell system_id=s_0123456789ab "
        "prefix=ab12]"
    )
    last_release = (
        "[register-runner host=node1 instance=main executor=shell system_id=s_0123456789ab]"
    )
    assert Identity("node1", "main", "s_0123456789ab").marker("shell") == last_release
    assert earlier_marker(f"note {keyed}") == f"note {last_release}"
