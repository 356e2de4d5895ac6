"""Runners that are not gitlab-runner (an executor file with ``credentials_file``), end to
end: the real CLI against the fake GitLab; the credentials file read as systemd reads an
``EnvironmentFile=``, and used to poll for jobs as a custom runner would."""

from __future__ import annotations

import json
import os
import pwd
import stat
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from register_runner.credentials import parse
from register_runner.output import parse_timestamp
from register_runner.testing.prefix import start_cli

SHELL = 'executor = "shell"\n'
KEYS = [
    "GITLAB_URL",
    "RUNNER_ID",
    "RUNNER_TOKEN",
    "RUNNER_SYSTEM_ID",
    "RUNNER_TOKEN_OBTAINED_AT",
    "RUNNER_TOKEN_EXPIRES_AT",
]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Where a custom runner's unit wants its credentials: not writable by others."""
    path = tmp_path / "custom-runner"
    path.mkdir(mode=0o700)
    return path


def custom(path: Path, extra: str = 'tags = ["rust", "gpu"]\n') -> str:
    return f'credentials_file = "{path}"\n{extra}'


def env(path: Path) -> dict[str, str]:
    return parse(path.read_bytes())


def mutations(gitlab) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in gitlab.mutating_requests()]


def poll(gitlab, values: dict[str, str]) -> int:
    """``POST /jobs/request`` as a custom runner sends it, with what its file holds."""
    body = json.dumps(
        {"token": values["RUNNER_TOKEN"], "system_id": values["RUNNER_SYSTEM_ID"], "info": {}}
    ).encode()
    request = urllib.request.Request(
        values["GITLAB_URL"] + "/api/v4/jobs/request",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def synced(make, cli, folder: Path, **executors: str):
    """A prefix with a shell runner and a custom runner ``rs`` (plus ``executors``), synced."""
    credentials = folder / "rs.env"
    prefix = make(executors={"shell": SHELL, "rs": custom(credentials), **executors})
    result = cli(prefix)
    assert result.returncode == 0, result.stderr
    return prefix, credentials


# -- registration and the file ------------------------------------------------------------


def test_a_custom_runner_is_registered_into_its_file_never_into_the_config(
    gitlab, make, cli, folder
):
    prefix, credentials = synced(make, cli, folder)

    values = env(credentials)
    assert [r["id"] for r in prefix.runners()] == [prefix.runner("shell")["id"]]
    assert values["RUNNER_TOKEN"] not in prefix.output.read_text()
    assert "-rs" not in prefix.output.read_text()
    assert list(values) == KEYS
    assert credentials.read_text().startswith("# written by register-runner ")
    runner = gitlab.runner(int(values["RUNNER_ID"]))
    assert values["RUNNER_TOKEN"] == runner.token
    assert values["GITLAB_URL"] == gitlab.url
    assert values["RUNNER_SYSTEM_ID"] == (prefix.root / ".runner_system_id").read_text().strip()
    assert values["RUNNER_TOKEN_EXPIRES_AT"] == ""  # the fake's tokens never expire by default
    obtained = datetime.strptime(values["RUNNER_TOKEN_OBTAINED_AT"], "%Y-%m-%dT%H:%M:%SZ")
    assert abs(obtained.replace(tzinfo=timezone.utc) - datetime.now(timezone.utc)) < timedelta(
        minutes=10
    )
    assert sorted(runner.tag_list) == ["gpu", "rust"]
    assert runner.run_untagged is False
    assert "executor=rs " in runner.maintenance_note
    info = credentials.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert (info.st_uid, info.st_gid) == (os.geteuid(), os.getegid())


def test_the_runner_polls_jobs_with_the_credentials_from_its_file(gitlab, make, cli, folder):
    gitlab.runner_token_lifetime = 3600
    _, credentials = synced(make, cli, folder)
    values = env(credentials)

    assert poll(gitlab, values) == 204

    expires = datetime.strptime(values["RUNNER_TOKEN_EXPIRES_AT"], "%Y-%m-%dT%H:%M:%SZ")
    assert expires.replace(tzinfo=timezone.utc) > datetime.now(timezone.utc)
    assert values["RUNNER_SYSTEM_ID"] in gitlab.runner(int(values["RUNNER_ID"])).managers
    assert poll(gitlab, dict(values, RUNNER_TOKEN="glrt-not-this-one")) == 403


def test_credentials_owner_is_given_to_a_new_file_and_an_existing_owner_kept(
    gitlab, make, cli, folder
):
    nobody = pwd.getpwnam("nobody")
    credentials = folder / "rs.env"
    prefix = make(executors={"rs": custom(credentials, 'credentials_owner = "nobody"\n')})
    assert cli(prefix).returncode == 0
    assert (credentials.stat().st_uid, credentials.stat().st_gid) == (
        nobody.pw_uid,
        nobody.pw_gid,
    )
    os.chown(credentials, 1, 1)  # the operator gave it to another user since

    assert cli(prefix, "reset-token").returncode == 0

    assert (credentials.stat().st_uid, credentials.stat().st_gid) == (1, 1)
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600


def test_a_restart_leaves_the_file_untouched(gitlab, make, cli, folder):
    gitlab.runner_token_lifetime = 3600
    prefix, credentials = synced(make, cli, folder)
    before = (credentials.read_bytes(), credentials.stat().st_mtime_ns)
    files = prefix.snapshot()
    gitlab.clear_requests()

    result = cli(prefix)

    assert result.returncode == 0, result.stderr
    assert (credentials.read_bytes(), credentials.stat().st_mtime_ns) == before
    assert prefix.snapshot() == files
    assert mutations(gitlab) == []


# -- tokens: rotated by this tool before expiry, or by the runner itself --------------------


def test_the_token_is_rotated_before_it_expires(gitlab, make, cli, folder):
    gitlab.runner_token_lifetime = 3600
    prefix, credentials = synced(make, cli, folder)
    old = env(credentials)
    # As if obtained 4 h before it expires in 1 h: past 75% of its lifetime.
    obtained = datetime.strptime(old["RUNNER_TOKEN_OBTAINED_AT"], "%Y-%m-%dT%H:%M:%SZ")
    earlier = (obtained - timedelta(hours=4)).strftime("%Y-%m-%dT%H:%M:%SZ")
    credentials.write_text(
        credentials.read_text().replace(old["RUNNER_TOKEN_OBTAINED_AT"], earlier)
    )
    gitlab.clear_requests()

    result = cli(prefix)

    assert result.returncode == 0, result.stderr
    new = env(credentials)
    runner_id = int(old["RUNNER_ID"])
    assert new["RUNNER_ID"] == old["RUNNER_ID"]
    assert new["RUNNER_TOKEN"] != old["RUNNER_TOKEN"]
    assert new["RUNNER_TOKEN"] == gitlab.runner(runner_id).token
    assert new["RUNNER_TOKEN_OBTAINED_AT"] > earlier
    assert parse_timestamp(new["RUNNER_TOKEN_EXPIRES_AT"]) == parse_timestamp(
        gitlab.runner(runner_id).token_expires_at
    )
    assert mutations(gitlab) == [("POST", f"/runners/{runner_id}/reset_authentication_token")]
    assert poll(gitlab, new) == 204
    assert poll(gitlab, old) == 403


def test_a_token_the_runner_rotated_itself_is_kept(gitlab, make, cli, folder):
    gitlab.runner_token_lifetime = 3600
    prefix, credentials = synced(make, cli, folder)
    values = env(credentials)
    runner_id = int(values["RUNNER_ID"])
    # The runner rotates its token and writes it back, keeping the first line.
    rotated = gitlab.rotate_runner_token(runner_id)
    credentials.write_text(credentials.read_text().replace(values["RUNNER_TOKEN"], rotated))
    before = (credentials.read_bytes(), credentials.stat().st_mtime_ns)
    gitlab.clear_requests()

    result = cli(prefix)

    assert result.returncode == 0, result.stderr
    assert (credentials.read_bytes(), credentials.stat().st_mtime_ns) == before
    assert mutations(gitlab) == []
    assert gitlab.runner(runner_id).token == rotated
    assert cli(prefix, "verify").returncode == 0


def test_a_runner_that_writes_back_only_its_token_gets_the_time_filled_in(
    gitlab, make, cli, folder
):
    prefix, credentials = synced(make, cli, folder)
    values = env(credentials)
    runner_id = int(values["RUNNER_ID"])
    rotated = gitlab.rotate_runner_token(runner_id)
    first = credentials.read_text().splitlines()[0]
    credentials.write_text(
        f'{first}\nGITLAB_URL={values["GITLAB_URL"]}\nRUNNER_ID={runner_id}\nRUNNER_TOKEN="{rotated}"\n'
    )
    gitlab.clear_requests()

    assert cli(prefix).returncode == 0

    new = env(credentials)
    assert new["RUNNER_TOKEN"] == rotated
    assert list(new) == KEYS and new["RUNNER_TOKEN_OBTAINED_AT"]
    assert mutations(gitlab) == []


# -- removal ------------------------------------------------------------------------------


def test_removing_the_executor_file_deletes_the_runner_and_the_file(gitlab, make, cli, folder):
    prefix, credentials = synced(make, cli, folder)
    runner_id = int(env(credentials)["RUNNER_ID"])
    shell = prefix.runner("shell")
    prefix.remove_executor("rs")

    result = cli(prefix)

    assert result.returncode == 0, result.stderr
    assert gitlab.runner(runner_id) is None
    assert not credentials.exists()
    assert prefix.runner("shell") == shell
    assert gitlab.runner(shell["id"]) is not None


def test_a_file_it_did_not_write_is_never_removed(gitlab, make, cli, folder):
    prefix, credentials = synced(make, cli, folder)
    runner_id = int(env(credentials)["RUNNER_ID"])
    credentials.write_text("SOMEONE_ELSES=1\n")
    prefix.remove_executor("rs")

    assert cli(prefix).returncode == 0

    assert credentials.read_text() == "SOMEONE_ELSES=1\n"
    assert gitlab.runner(runner_id) is None


def test_a_changed_path_moves_the_file(gitlab, make, cli, folder):
    prefix, credentials = synced(make, cli, folder)
    values = env(credentials)
    moved = folder / "moved.env"
    prefix.write_executor("rs", custom(moved))
    gitlab.clear_requests()

    assert cli(prefix).returncode == 0

    assert not credentials.exists()
    assert env(moved)["RUNNER_TOKEN"] == values["RUNNER_TOKEN"]
    assert mutations(gitlab) == []


# -- plan, verify, status, unregister, reset-token ----------------------------------------


def _rows(result) -> list[tuple[str, str, str]]:
    return [(a["action"], a["runner"], a["reason"]) for a in json.loads(result.stdout)["actions"]]


def test_plan_shows_the_file_and_writes_nothing(gitlab, make, cli, folder):
    credentials = folder / "rs.env"
    prefix = make(executors={"rs": custom(credentials)})

    result = cli(prefix, "plan", "--json", "--detailed-exitcode")

    assert result.returncode == 4, result.stderr
    assert ("create", "rs", "new executor") in _rows(result)
    assert ("write", "rs", f"{credentials}: new token") in _rows(result)
    assert not credentials.exists() and mutations(gitlab) == []

    assert cli(prefix).returncode == 0
    steady = cli(prefix, "plan", "--json", "--detailed-exitcode")
    assert steady.returncode == 0, steady.stdout
    assert [row for row in _rows(steady) if row[0] == "write"] == []

    prefix.write_executor("shell", SHELL)
    prefix.remove_executor("rs")
    gone = cli(prefix, "plan", "--json", "--detailed-exitcode")
    assert gone.returncode == 4
    assert ("delete", "rs", "executor file removed") in _rows(gone)
    assert ("write", "rs", f"{credentials}: remove") in _rows(gone)
    assert credentials.exists()


def test_verify_checks_the_custom_runners_tokens(gitlab, make, cli, folder):
    prefix, credentials = synced(make, cli, folder)

    result = cli(prefix, "verify", "--json")

    assert result.returncode == 0, result.stderr
    rows = {r["runner"]: r["result"] for r in json.loads(result.stdout)["actions"]}
    assert rows == {"shell": "valid", "rs": "valid"}
    gitlab.revoke_runner_token(int(env(credentials)["RUNNER_ID"]))
    result = cli(prefix, "verify", "--json")
    assert result.returncode == 1
    rows = {r["runner"]: r["result"] for r in json.loads(result.stdout)["actions"]}
    assert rows == {"shell": "valid", "rs": "invalid"}
    assert env(credentials)["RUNNER_TOKEN"] not in result.stdout + result.stderr


def test_status_shows_the_custom_runner_and_its_token_expiry(gitlab, make, cli, folder):
    gitlab.runner_token_lifetime = 3600
    prefix, credentials = synced(make, cli, folder)

    result = cli(prefix, "status", "--json")

    assert result.returncode == 0, result.stderr
    rows = {r["runner"]: r for r in json.loads(result.stdout)["runners"]}
    assert rows["rs"]["verdict"] == "valid"
    assert rows["rs"]["id"] == int(env(credentials)["RUNNER_ID"])
    assert parse_timestamp(rows["rs"]["token_expires_at"]) == parse_timestamp(
        env(credentials)["RUNNER_TOKEN_EXPIRES_AT"]
    )


def test_unregister_deletes_the_runner_and_removes_its_file(gitlab, make, cli, folder):
    prefix, credentials = synced(make, cli, folder)
    runner_id = int(env(credentials)["RUNNER_ID"])

    result = cli(prefix, "unregister", "--runner", "rs")

    assert result.returncode == 0, result.stderr
    assert gitlab.runner(runner_id) is None
    assert not credentials.exists()
    assert gitlab.runner(prefix.runner("shell")["id"]) is not None


def test_reset_token_rewrites_the_file(gitlab, make, cli, folder):
    prefix, credentials = synced(make, cli, folder)
    old = env(credentials)
    shell = prefix.runner("shell")

    result = cli(prefix, "reset-token", "--runner", "rs")

    assert result.returncode == 0, result.stderr
    new = env(credentials)
    assert new["RUNNER_TOKEN"] != old["RUNNER_TOKEN"]
    assert new["RUNNER_TOKEN"] == gitlab.runner(int(old["RUNNER_ID"])).token
    assert poll(gitlab, old) == 403 and poll(gitlab, new) == 204
    assert prefix.runner("shell") == shell


def test_a_lost_state_adopts_the_runner_from_its_file(gitlab, make, cli, folder):
    prefix, credentials = synced(make, cli, folder)
    values = env(credentials)
    (prefix.root / ".register-runner" / "main.json").unlink()
    gitlab.clear_requests()

    assert cli(prefix).returncode == 0

    assert env(credentials)["RUNNER_ID"] == values["RUNNER_ID"]
    assert env(credentials)["RUNNER_TOKEN"] == values["RUNNER_TOKEN"]
    assert [m for m in mutations(gitlab) if m[0] == "POST"] == []
    assert len(gitlab.runners()) == 2


def test_a_copied_prefix_registers_its_own_runner_and_leaves_the_original(
    gitlab, make, cli, folder
):
    credentials = folder / "rs.env"
    prefix = make(executors={"rs": custom(credentials)})
    assert cli(prefix).returncode == 0
    original = env(credentials)
    # What a copy looks like from the inside: the fingerprint is another machine's.
    (prefix.root / ".runner_system_id.fingerprint").write_text("0" * 32 + "\n")

    assert cli(prefix).returncode == 0

    values = env(credentials)
    assert values["RUNNER_ID"] != original["RUNNER_ID"]
    assert values["RUNNER_SYSTEM_ID"] != original["RUNNER_SYSTEM_ID"]
    assert values["RUNNER_SYSTEM_ID"] == (prefix.root / ".runner_system_id").read_text().strip()
    assert gitlab.runner(int(original["RUNNER_ID"])).token == original["RUNNER_TOKEN"]
    assert poll(gitlab, values) == 204


# -- moving a runner between the config and a file --------------------------------------


def test_a_runner_moves_between_the_config_and_a_file_with_its_token(gitlab, make, cli, folder):
    prefix = make(executors={"a": SHELL})
    assert cli(prefix).returncode == 0
    entry = prefix.runner("a")
    credentials = folder / "a.env"
    prefix.write_executor("a", custom(credentials, ""))
    gitlab.clear_requests()

    assert cli(prefix).returncode == 0

    assert prefix.runners() == []
    assert env(credentials)["RUNNER_ID"] == str(entry["id"])
    assert env(credentials)["RUNNER_TOKEN"] == entry["token"]
    assert mutations(gitlab) == []

    prefix.write_executor("a", SHELL)
    assert cli(prefix).returncode == 0
    assert (prefix.runner("a")["id"], prefix.runner("a")["token"]) == (entry["id"], entry["token"])
    assert not credentials.exists()
    assert mutations(gitlab) == []


# -- files in the way, files rewritten meanwhile ----------------------------------------


def test_a_token_whose_file_could_not_be_written_is_kept_for_the_next_run(
    gitlab, make, cli, folder
):
    credentials = folder / "rs.env"
    prefix = make(executors={"rs": custom(credentials)})
    held = gitlab.block(method="POST", path=r"^/user/runners$", when="after")
    run = start_cli(["sync", "--prefix", str(prefix.root)])
    try:
        assert held.reached.wait(60)
        credentials.mkdir()  # something in the way once the runner exists in GitLab
    finally:
        held.release()
    _, stderr = run.communicate(timeout=120)
    # A person must clear the way (exit 1); the token waits in the state meanwhile.
    assert run.returncode == 1, stderr
    assert str(credentials) in stderr
    credentials.rmdir()
    gitlab.clear_requests()

    assert cli(prefix).returncode == 0

    values = env(credentials)
    assert [r.id for r in gitlab.runners()] == [int(values["RUNNER_ID"])]
    assert values["RUNNER_TOKEN"] == gitlab.runners()[0].token
    assert mutations(gitlab) == []


def test_a_token_the_runner_writes_while_a_sync_works_is_not_reverted(gitlab, make, cli, folder):
    credentials = folder / "rs.env"
    prefix = make(executors={"rs": custom(credentials)})
    assert cli(prefix).returncode == 0
    values = env(credentials)
    runner_id = int(values["RUNNER_ID"])
    first = credentials.read_text().splitlines()[0]

    def runner_writes_back(token: str) -> None:  # without the time: the sync fills it in
        credentials.write_text(
            f"{first}\nGITLAB_URL={gitlab.url}\nRUNNER_ID={runner_id}\nRUNNER_TOKEN={token}\n"
        )

    runner_writes_back(gitlab.rotate_runner_token(runner_id))
    held = gitlab.block(method="POST", path=r"^/runners/verify$", when="after")
    run = start_cli(["sync", "--prefix", str(prefix.root)])
    try:
        assert held.reached.wait(60)
        latest = gitlab.rotate_runner_token(runner_id)
        runner_writes_back(latest)
    finally:
        held.release()
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stderr
    assert env(credentials)["RUNNER_TOKEN"] == latest

    assert cli(prefix).returncode == 0
    assert env(credentials)["RUNNER_TOKEN"] == latest
    assert env(credentials)["RUNNER_TOKEN_OBTAINED_AT"]
