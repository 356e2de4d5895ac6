"""A 5xx answer to a mutating call is an unknown outcome: GitLab (or the proxy in front)
may have acted before answering. It is never sent again in the same run; the journal keeps
it and the next run settles it by evidence (the marker, the old token's verdict), so
GitLab never keeps a duplicate. The run counts as "GitLab failing", never exit 1."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

SHELL = 'executor = "shell"\ntags = ["linux"]\n'
SERVER_ERRORS = (500, 502, 503, 504)


def _error_after_acting(gitlab, status, method, path):
    """GitLab acts on the request, then the client gets ``status`` instead of the answer."""
    body = json.dumps({"message": f"{status} Internal Server Error"}).encode()
    gitlab.misbehave("garbage", method=method, path=path, status=status, body=body)


def _sent(gitlab, method, path):
    return [q for q in gitlab.requests if q.method == method and q.path == path]


def _state(prefix):
    return json.loads((prefix.root / ".register-runner" / "main.json").read_text())


@pytest.mark.parametrize("status", SERVER_ERRORS)
def test_create_answered_5xx_after_acting_is_adopted_next_run_not_duplicated(
    gitlab, prefix, cli, status
):
    _error_after_acting(gitlab, status, "POST", r"^/user/runners$")

    first = cli(prefix)

    # A fresh host with nothing to keep: GitLab failing is 3, never 1.
    assert first.returncode == 3, first.stderr
    assert f"create shell: {gitlab.url}: create runner: GitLab answered {status}" in first.stderr
    assert len(_sent(gitlab, "POST", "/user/runners")) == 1  # never sent again this run
    (made,) = gitlab.runners()
    assert sorted(_state(prefix)["pending_creates"]) == ["shell"]
    assert not prefix.output.exists()

    second = cli(prefix)

    assert second.returncode == 0, second.stderr
    assert "event=recovered runner=shell" in second.stderr
    assert [r.id for r in gitlab.runners()] == [made.id]  # adopted, no duplicate
    assert prefix.runner("shell")["id"] == made.id
    assert prefix.runner("shell")["token"] == gitlab.runner(made.id).token
    assert len(_sent(gitlab, "POST", "/user/runners")) == 1
    assert _state(prefix)["pending_creates"] == {}


def test_create_answered_5xx_with_a_config_to_keep_exits_0(gitlab, make, cli):
    prefix = make(executors={"a": SHELL})
    assert cli(prefix).returncode == 0
    before = prefix.output.read_bytes()
    prefix.write_executor("b", SHELL)
    _error_after_acting(gitlab, 500, "POST", r"^/user/runners$")

    first = cli(prefix)

    assert first.returncode == 0, first.stderr
    assert "create b:" in first.stderr and "looks for the runner by its marker" in first.stderr
    assert prefix.output.read_bytes() == before
    assert len(gitlab.runners()) == 2
    assert cli(prefix, "sync", "--strict").returncode == 0  # settled: nothing failing
    assert len(gitlab.runners()) == 2
    assert {r["id"] for r in prefix.runners()} == {r.id for r in gitlab.runners()}


def test_create_answered_503_without_acting_is_sent_once_then_made_next_run(gitlab, prefix, cli):
    gitlab.fail_next(count=1, status=503, path=r"^/user/runners$")

    first = cli(prefix)

    assert first.returncode == 3, first.stderr
    assert [q.status for q in _sent(gitlab, "POST", "/user/runners")] == [503]
    assert gitlab.runners() == []

    second = cli(prefix)

    # Nothing carries the marker: the create did not happen, and is sent now.
    assert second.returncode == 0, second.stderr
    assert len(gitlab.runners()) == 1
    assert prefix.runner("shell")["token"] == gitlab.runners()[0].token


def test_legacy_registration_answered_502_after_acting_is_not_sent_again(gitlab, make, cli):
    registration = gitlab.registration_token()
    prefix = make(access_token=None, registration_token=registration)
    _error_after_acting(gitlab, 502, "POST", r"^/runners$")

    first = cli(prefix)

    assert first.returncode == 3, first.stderr
    assert "GitLab answered 502" in first.stderr
    assert len(_sent(gitlab, "POST", "/runners")) == 1
    assert len(gitlab.runners()) == 1
    assert cli(prefix).returncode == 3  # without an access token it cannot look: waits
    assert len(_sent(gitlab, "POST", "/runners")) == 1


def test_update_answered_500_is_sent_once_and_again_next_run(gitlab, prefix, cli):
    assert cli(prefix).returncode == 0
    runner_id = prefix.runner("shell")["id"]
    before = prefix.output.read_bytes()
    prefix.write_executor("shell", 'executor = "shell"\ntags = ["linux", "big"]\n')
    gitlab.fail_next(count=1, status=500, method="PUT")
    gitlab.clear_requests()

    first = cli(prefix)

    assert first.returncode == 0, first.stderr
    assert f"update shell: {gitlab.url}: update runner {runner_id}: GitLab answered 500" in (
        first.stderr
    )
    assert [q.status for q in gitlab.mutating_requests()] == [500]
    assert prefix.output.read_bytes() == before
    assert sorted(gitlab.runner(runner_id).tag_list) == ["linux"]

    assert cli(prefix).returncode == 0
    assert sorted(gitlab.runner(runner_id).tag_list) == ["big", "linux"]
    gitlab.clear_requests()
    assert cli(prefix).returncode == 0
    assert gitlab.mutating_requests() == []


def test_delete_answered_502_after_acting_is_settled_next_run(gitlab, make, cli):
    prefix = make(executors={"a": SHELL, "b": SHELL})
    assert cli(prefix).returncode == 0
    gone = prefix.runner("b")["id"]
    prefix.remove_executor("b")
    _error_after_acting(gitlab, 502, "DELETE", r"^/runners$")
    gitlab.clear_requests()

    first = cli(prefix)

    assert first.returncode == 0, first.stderr
    assert f"delete runner {gone} of {gitlab.url} (b)" in first.stderr
    assert [f"{q.method} {q.path}" for q in gitlab.mutating_requests()] == ["DELETE /runners"]
    assert gitlab.runner(gone) is None
    assert [d["id"] for d in _state(prefix)["pending_deletes"]] == [gone]

    second = cli(prefix, "sync", "--json")

    assert second.returncode == 0, second.stderr
    rows = [r for r in json.loads(second.stdout)["actions"] if r["id"] == gone]
    assert [r["result"] for r in rows] == ["already gone"]
    assert _state(prefix)["pending_deletes"] == []
    assert [r.id for r in gitlab.runners()] == [prefix.runner("a")["id"]]


def _due_for_rotation(gitlab, prefix, cli):
    gitlab.runner_token_lifetime = 3600
    assert cli(prefix).returncode == 0
    entry = prefix.runner("shell")
    obtained = entry["token_obtained_at"].strftime("%Y-%m-%dT%H:%M:%SZ")
    earlier = (entry["token_obtained_at"] - timedelta(hours=4)).strftime("%Y-%m-%dT%H:%M:%SZ")
    prefix.output.write_text(prefix.output.read_text().replace(obtained, earlier))
    gitlab.clear_requests()
    return entry


def test_rotation_answered_500_after_acting_learns_the_new_token_in_the_same_run(
    gitlab, prefix, cli
):
    entry = _due_for_rotation(gitlab, prefix, cli)
    reset = f"/runners/{entry['id']}/reset_authentication_token"
    _error_after_acting(gitlab, 500, "POST", reset)

    result = cli(prefix)

    # The old token is rejected now: the reset happened, so a second one is no guess.
    assert result.returncode == 0, result.stderr
    assert "event=reset_settled runner=shell" in result.stderr
    assert len(_sent(gitlab, "POST", reset)) == 2
    assert prefix.runner("shell")["token"] == gitlab.runner(entry["id"]).token
    assert [r.id for r in gitlab.runners()] == [entry["id"]]


def test_rotation_answered_500_without_acting_keeps_the_old_token(gitlab, prefix, cli):
    entry = _due_for_rotation(gitlab, prefix, cli)
    reset = f"/runners/{entry['id']}/reset_authentication_token"
    gitlab.fail_next(count=1, status=500, method="POST", path=reset)

    first = cli(prefix)

    assert first.returncode == 0, first.stderr
    assert f"rotate shell: {gitlab.url}: reset token of runner {entry['id']}: GitLab " in (
        first.stderr
    )
    assert len(_sent(gitlab, "POST", reset)) == 1
    assert prefix.runner("shell")["token"] == entry["token"] == gitlab.runners()[0].token

    second = cli(prefix)

    assert second.returncode == 0, second.stderr
    assert prefix.runner("shell")["token"] != entry["token"]
    assert prefix.runner("shell")["token"] == gitlab.runner(entry["id"]).token


def test_access_token_revoked_before_the_recovery_is_one_clear_refusal(gitlab, prefix, cli, pat):
    _error_after_acting(gitlab, 500, "POST", r"^/user/runners$")
    assert cli(prefix).returncode == 3
    gitlab.revoke_access_token(pat)

    result = cli(prefix)

    assert result.returncode == 1, result.stderr  # a person must act: the token is revoked
    assert "internal error" not in result.stderr
    assert f"{gitlab.url}: list runners: the access token was rejected (401)" in result.stderr
    assert len(gitlab.runners()) == 1
    assert len(_sent(gitlab, "POST", "/user/runners")) == 1


def test_reads_keep_their_retries_while_the_create_is_settled(gitlab, prefix, cli):
    _error_after_acting(gitlab, 500, "POST", r"^/user/runners$")
    assert cli(prefix).returncode == 3
    (made,) = gitlab.runners()
    gitlab.fail_next(count=1, status=500, method="GET", path=r"^/runners/all$")
    gitlab.fail_next(count=1, status=503, method="GET", path=rf"^/runners/{made.id}$")

    result = cli(prefix)

    assert result.returncode == 0, result.stderr
    assert [q.status for q in _sent(gitlab, "GET", "/runners/all")] == [500, 200]
    assert [q.status for q in _sent(gitlab, "GET", f"/runners/{made.id}")] == [503, 200]
    assert [r.id for r in gitlab.runners()] == [made.id]
    assert prefix.runner("shell")["token"] == gitlab.runner(made.id).token


RESET_BY_ID = r"^/runners/\d+/reset_authentication_token$"


def _resets_lost(gitlab, count, *, acted):
    """The next ``count`` resets by id answered 500 (after GitLab acted, or not), and the
    verifications that would settle them in the run unanswered (a 404: no retry, the
    verdict unknown), so that only the journal can settle them."""
    if acted:
        gitlab.misbehave(
            "garbage", method="POST", path=RESET_BY_ID, status=500, count=count, body=b"{}"
        )
    else:
        gitlab.fail_next(count=count, status=500, method="POST", path=RESET_BY_ID)
    gitlab.fail_next(count=count, status=404, method="POST", path=r"^/runners/verify$")


def test_reset_token_answered_500_after_acting_is_settled_next_run_without_a_new_runner(
    gitlab, make, cli
):
    prefix = make(executors={"a": SHELL, "b": SHELL})
    assert cli(prefix).returncode == 0
    ids = sorted(r.id for r in gitlab.runners())
    before = prefix.output.read_bytes()
    _resets_lost(gitlab, 2, acted=True)

    first = cli(prefix, "reset-token")

    # GitLab failing, never "a person must act"; the config keeps the (now dead) tokens.
    assert first.returncode == 3, first.stderr
    for stem in ("a", "b"):
        assert f"WARNING rotate {stem}: {gitlab.url}: reset token of runner" in first.stderr
    assert "journaled: the next run asks GitLab about the old token first" in first.stderr
    assert sorted(_state(prefix)["pending_resets"]) == ["a", "b"]
    assert prefix.output.read_bytes() == before
    assert all(gitlab.runner(i).token not in before.decode() for i in ids)  # GitLab acted
    status = cli(prefix, "status")
    assert status.returncode == 3, status.stdout  # not known: the reset's outcome is open

    second = cli(prefix)

    # Two of two tokens rejected, both runners still listed with the marker: that is the
    # mass-invalid guard's "GitLab-side" case, unless the journal explains the 403s.
    assert second.returncode == 0, second.stderr
    assert "held by the mass-invalid guard" not in second.stderr
    assert "event=reset_settled runner=a" in second.stderr
    assert "event=reset_settled runner=b" in second.stderr
    assert sorted(r.id for r in gitlab.runners()) == ids  # kept: no new runner, none lost
    for stem in ("a", "b"):
        runner = prefix.runner(stem)
        assert runner["token"] == gitlab.runner(runner["id"]).token
    assert "pending_resets" not in _state(prefix)
    assert cli(prefix, "status").returncode == 0
    gitlab.clear_requests()
    assert cli(prefix).returncode == 0
    assert gitlab.mutating_requests() == []


def test_reset_token_answered_500_without_acting_is_settled_next_run_without_a_reset(
    gitlab, prefix, cli
):
    assert cli(prefix).returncode == 0
    entry = prefix.runner("shell")
    _resets_lost(gitlab, 1, acted=False)

    first = cli(prefix, "reset-token")

    assert first.returncode == 3, first.stderr
    assert sorted(_state(prefix)["pending_resets"]) == ["shell"]
    assert [q.status for q in _sent(gitlab, "POST", "/runners/verify")][-1] == 404
    gitlab.clear_requests()

    second = cli(prefix)

    # The old token is accepted: the reset did not happen, and is not sent by sync.
    assert second.returncode == 0, second.stderr
    assert "event=reset_settled" not in second.stderr
    assert gitlab.mutating_requests() == []
    assert prefix.runner("shell")["token"] == entry["token"] == gitlab.runners()[0].token
    assert "pending_resets" not in _state(prefix)


def test_a_lost_reset_of_a_lone_runner_is_settled_by_resetting_it_not_by_a_new_runner(
    gitlab, prefix, cli
):
    assert cli(prefix).returncode == 0
    entry = prefix.runner("shell")
    _resets_lost(gitlab, 1, acted=True)
    assert cli(prefix, "reset-token").returncode == 3
    gitlab.clear_requests()

    result = cli(prefix)

    # One token rejected is no mass-invalid: without the journal it would be recreated.
    assert result.returncode == 0, result.stderr
    assert "event=reset_settled runner=shell" in result.stderr
    assert [r.id for r in gitlab.runners()] == [entry["id"]]
    assert _sent(gitlab, "POST", "/user/runners") == []
    assert prefix.runner("shell")["token"] == gitlab.runner(entry["id"]).token


def test_a_journaled_reset_of_a_runner_gitlab_gave_to_another_host_resets_nothing(
    gitlab, make, cli
):
    prefix = make(executors={"a": SHELL, "b": SHELL})
    assert cli(prefix).returncode == 0
    _resets_lost(gitlab, 2, acted=True)
    assert cli(prefix, "reset-token").returncode == 3
    # A GitLab restored from a backup hands the ids out again, to other hosts' runners.
    gitlab.forget_runners()
    gitlab.reset_ids()
    others = [gitlab.add_runner(description=f"elsewhere {n}") for n in (1, 2)]
    gitlab.clear_requests()

    result = cli(prefix)

    assert result.returncode == 0, result.stderr
    assert "event=reset_settled" not in result.stderr
    assert not [q for q in gitlab.mutating_requests() if "reset_authentication" in q.path]
    for other in others:
        assert gitlab.runner(other.id).token == other.token  # left alone
    assert "pending_resets" not in _state(prefix)
    assert {r["id"] for r in prefix.runners()}.isdisjoint(o.id for o in others)


def test_recovery_of_a_project_runner_never_takes_an_instance_runner(gitlab, make, cli):
    # GitLab lists the instance runners under /projects/:id/runners too: recovery asks for
    # the project's own (type=project_type), or a twin there would be adopted or deleted.
    prefix = make(client_extra='runner_type = "project_type"\nproject_id = 7\n')
    _error_after_acting(gitlab, 500, "POST", r"^/user/runners$")
    assert cli(prefix).returncode == 3
    (made,) = gitlab.runners()
    twin = gitlab.add_runner(
        "instance_type", description=made.description, maintenance_note=made.maintenance_note
    )

    result = cli(prefix)

    assert result.returncode == 0, result.stderr
    assert prefix.runner("shell")["id"] == made.id
    assert gitlab.runner(twin.id) is not None  # not this prefix's project runner: left alone
    listed = [q for q in gitlab.requests if q.path == "/projects/7/runners"]
    assert listed and all(q.query.get("type") == "project_type" for q in listed)


def test_a_runner_gone_between_recoverys_list_and_its_read_is_created_anew(gitlab, prefix, cli):
    import threading

    _error_after_acting(gitlab, 500, "POST", r"^/user/runners$")
    assert cli(prefix).returncode == 3
    (made,) = gitlab.runners()
    block = gitlab.block(method="GET", path=rf"^/runners/{made.id}$", when="before")
    results = {}
    run = threading.Thread(target=lambda: results.setdefault("sync", cli(prefix)))
    run.start()
    try:
        assert block.reached.wait(30)  # listed by recovery, about to be read
        gitlab.forget_runners([made.id])  # deleted by hand meanwhile: the read is a 404
    finally:
        block.release()
        run.join(60)

    result = results["sync"]
    # The 404 is an answer: not this host's runner to adopt; the create is sent again.
    assert result.returncode == 0, result.stderr
    assert "internal error" not in result.stderr
    (now,) = gitlab.runners()
    assert now.id != made.id
    assert prefix.runner("shell")["id"] == now.id
    assert _state(prefix)["pending_creates"] == {}
