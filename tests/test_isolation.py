"""Per-file isolation, end to end through the CLI against the fake GitLab: one bad
executor file (or a custom runner's credentials file that cannot be used) holds back only
its own runner; every other runner converges, and the run says which file and why."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from register_runner.credentials import parse
from register_runner.testing.prefix import Prefix, start_cli

SHELL = 'executor = "shell"\ntags = ["linux"]\n'
TYPO = 'executor = "shell"\nrun_untagged = fals\ntags = ["linux"]\n'


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "custom-runner"
    path.mkdir(mode=0o700)
    return path


def custom(path: Path) -> str:
    return f'credentials_file = "{path}"\ntags = ["rust"]\n'


def ids(prefix: Prefix) -> dict[str, int]:
    state = json.loads((prefix.root / ".register-runner" / "main.json").read_text())
    return {stem: runner["id"] for stem, runner in state["runners"].items()}


def entry_text(prefix: Prefix, stem: str) -> str:
    """The [[runners]] block of ``stem``'s runner, as it is in the config file."""
    blocks = prefix.output.read_text().split("[[runners]]\n")[1:]
    (block,) = [b for b in blocks if f'-{stem}"\n' in b.splitlines(keepends=True)[0]]
    return block


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " ERROR " in line]


def mutations(gitlab) -> list[tuple[str, str]]:
    return sorted((r.method, r.path) for r in gitlab.mutating_requests())


def test_a_typo_holds_only_its_runner_while_the_others_converge(gitlab, make, cli):
    prefix = make(executors={"edited": SHELL, "typo": SHELL, "removed": SHELL})
    assert cli(prefix).returncode == 0
    before = ids(prefix)
    held_runner = gitlab.runner(before["typo"])
    held_entry = entry_text(prefix, "typo")
    prefix.write_executor("edited", 'executor = "shell"\ntags = ["linux", "fast"]\n')
    typo = prefix.write_executor("typo", TYPO)
    prefix.remove_executor("removed")
    gitlab.clear_requests()

    planned = cli(prefix, "plan", "--json")

    assert planned.returncode == 2, planned.stderr
    rows = {(a["action"], a["runner"], a["id"]): a for a in json.loads(planned.stdout)["actions"]}
    assert ("update", "edited", before["edited"]) in rows
    assert ("delete", "removed", before["removed"]) in rows
    kept = rows[("keep", "typo", before["typo"])]
    assert kept["reason"].startswith(f"held: {typo}:2:16: invalid TOML: run_untagged = fals")
    assert mutations(gitlab) == []

    result = cli(prefix)

    assert result.returncode == 2, result.stderr
    (line,) = errors(result.stderr)
    assert f"{typo}:2:16: invalid TOML: run_untagged = fals: not a TOML value" in line
    assert sorted(gitlab.runner(before["edited"]).tag_list) == ["fast", "linux"]
    assert gitlab.runner(before["removed"]) is None
    assert gitlab.runner(before["typo"]) == held_runner
    assert [m for m in mutations(gitlab) if m[0] != "DELETE"] == [
        ("PUT", f"/runners/{before['edited']}")
    ]
    assert entry_text(prefix, "typo") == held_entry
    assert sorted(ids(prefix)) == ["edited", "typo"]
    status = cli(prefix, "status", "--json")
    assert status.returncode == 1  # a person must fix the file
    assert json.loads(status.stdout)["last_run"]["exit_status"] == 2

    # Fixed, it is the runner it was: nothing to create, change or delete.
    prefix.write_executor("typo", SHELL)
    gitlab.clear_requests()
    assert cli(prefix).returncode == 0
    assert mutations(gitlab) == []
    assert ids(prefix)["typo"] == before["typo"]


def test_a_new_bad_file_creates_nothing_and_plan_shows_it(gitlab, make, cli):
    prefix = make(executors={"shell": SHELL})
    assert cli(prefix).returncode == 0
    config = prefix.output.read_bytes()
    new = prefix.write_executor("new", TYPO)
    gitlab.clear_requests()

    planned = cli(prefix, "plan", "--detailed-exitcode")
    synced = cli(prefix)

    assert planned.returncode == 2, planned.stderr
    (row,) = [line for line in planned.stdout.splitlines() if " new " in line]
    assert row.split()[:3] == ["keep", "new", "-"] and f"held: {new}:2:16:" in row
    assert synced.returncode == 2, synced.stderr
    assert len(errors(synced.stderr)) == 1 and "fals" in errors(synced.stderr)[0]
    assert mutations(gitlab) == []
    assert len(gitlab.runners()) == 1
    assert prefix.output.read_bytes() == config


def test_an_executor_file_others_may_write_holds_only_its_runner(gitlab, make, cli):
    prefix = make(executors={"open": SHELL, "kept": SHELL})
    assert cli(prefix).returncode == 0
    before = ids(prefix)
    held_entry = entry_text(prefix, "open")
    loose = prefix.executor_dir / "open.toml"
    loose.write_text('executor = "shell"\ntags = ["changed-by-anyone"]\n')
    loose.chmod(0o666)
    prefix.write_executor("new", SHELL)
    gitlab.clear_requests()

    result = cli(prefix)

    assert result.returncode == 2, result.stderr
    (line,) = errors(result.stderr)
    assert f"{loose}: writable by group or others (mode 0666); chmod go-w it" in line, line
    assert "runner open held" in line
    assert mutations(gitlab) == [("POST", "/user/runners")]  # new's runner, nothing else
    assert gitlab.runner(before["open"]).tag_list == ["linux"]
    assert entry_text(prefix, "open") == held_entry
    assert sorted(ids(prefix)) == ["kept", "new", "open"]
    assert cli(prefix, "sync", "--insecure-permissions").returncode == 0
    assert gitlab.runner(before["open"]).tag_list == ["changed-by-anyone"]


def test_a_folder_of_bad_files_is_not_an_emptied_folder(gitlab, make, cli):
    """Nothing is deleted: every runner is held, each file named on its own line."""
    prefix = make(executors={"a": SHELL, "b": SHELL})
    assert cli(prefix).returncode == 0
    config = prefix.output.read_bytes()
    prefix.write_executor("a", TYPO)
    prefix.write_executor("b", 'executor = "shell"\ntags = 3\n')
    gitlab.clear_requests()

    result = cli(prefix)

    assert result.returncode == 2, result.stderr
    a, b = errors(result.stderr)
    assert "a.toml:2:16" in a and "b.toml:2" in b and "tags must be a list" in b
    assert "no executor files" not in result.stderr
    assert mutations(gitlab) == [] and len(gitlab.runners()) == 2
    assert prefix.output.read_bytes() == config


def test_a_fifo_at_a_custom_runners_credentials_file_holds_only_that_runner(
    gitlab, make, cli, folder
):
    """The custom runner's own user can put anything in its folder: the run neither hangs
    on it nor stops the other runners."""
    credentials = folder / "runner.env"
    prefix = make(executors={"shell": SHELL, "rs": custom(credentials)})
    assert cli(prefix).returncode == 0
    before = ids(prefix)
    custom_runner = gitlab.runner(before["rs"])
    credentials.unlink()
    os.mkfifo(credentials, 0o600)
    prefix.write_executor("shell", 'executor = "shell"\ntags = ["linux", "fast"]\n')
    gitlab.clear_requests()

    result = cli(prefix)

    assert result.returncode == 2, result.stderr
    (line,) = errors(result.stderr)
    assert str(prefix.executor_dir / "rs.toml") in line and str(credentials) in line
    assert sorted(gitlab.runner(before["shell"]).tag_list) == ["fast", "linux"]
    assert gitlab.runner(before["rs"]) == custom_runner
    assert mutations(gitlab) == [("PUT", f"/runners/{before['shell']}")]
    assert stat.S_ISFIFO(os.lstat(credentials).st_mode)
    assert ids(prefix) == before


def test_a_credentials_file_that_cannot_be_written_keeps_its_token_and_the_others_go_on(
    gitlab, make, cli, folder
):
    credentials = folder / "rs.env"
    prefix = make(executors={"shell": SHELL, "gone": SHELL})
    assert cli(prefix).returncode == 0
    gone = ids(prefix)["gone"]
    prefix.remove_executor("gone")
    prefix.write_executor("rs", custom(credentials))
    held = gitlab.block(method="POST", path=r"^/user/runners$", when="after")
    run = start_cli(["sync", "--prefix", str(prefix.root)])
    try:
        assert held.reached.wait(60)
        credentials.mkdir()  # in the way once the runner exists in GitLab
    finally:
        held.release()
    _, stderr = run.communicate(timeout=120)

    assert run.returncode == 1, stderr
    (line,) = errors(stderr)
    assert str(credentials) in line and "kept for the next run" in line
    assert gitlab.runner(gone) is None
    assert sorted(ids(prefix)) == ["rs", "shell"]

    credentials.rmdir()
    gitlab.clear_requests()
    assert cli(prefix).returncode == 0
    values = parse(credentials.read_bytes())
    assert int(values["RUNNER_ID"]) == ids(prefix)["rs"]
    assert values["RUNNER_TOKEN"] == gitlab.runner(ids(prefix)["rs"]).token
    assert mutations(gitlab) == []


def test_a_maintenance_note_of_exactly_what_gitlab_keeps_is_accepted(gitlab, make, cli):
    """GitLab keeps 1024 characters: the note and the marker after it may fill them all,
    one more holds the runner."""
    prefix = make(executors={"shell": SHELL})
    assert cli(prefix).returncode == 0
    (runner,) = gitlab.runners()
    room = 1024 - len("\n") - len(runner.maintenance_note)  # the note is the marker alone

    prefix.write_executor("shell", SHELL + f'maintenance_note = "{"n" * room}"\n')
    assert cli(prefix).returncode == 0
    assert len(gitlab.runner(runner.id).maintenance_note) == 1024

    path = prefix.write_executor("shell", SHELL + f'maintenance_note = "{"n" * (room + 1)}"\n')
    gitlab.clear_requests()
    result = cli(prefix)
    assert result.returncode == 2, result.stderr
    (line,) = errors(result.stderr)
    assert f"{path}:3: maintenance_note is too long" in line
    assert mutations(gitlab) == []


def test_a_foreign_file_at_a_credentials_path_is_never_read_as_the_runners(
    gitlab, make, cli, folder
):
    """A file this tool did not write (no header line) may hold anyone's values: its token
    is never sent to GitLab, by sync, verify or status, whether the state is there or
    was lost (then nothing is adopted from it)."""
    credentials = folder / "rs.env"
    prefix = make(executors={"rs": custom(credentials)})
    assert cli(prefix).returncode == 0
    values = parse(credentials.read_bytes())
    foreign = "glrt-someone-elses-token-1234"
    credentials.write_text(
        f"GITLAB_URL={values['GITLAB_URL']}\nRUNNER_ID={values['RUNNER_ID']}\n"
        f"RUNNER_SYSTEM_ID={values['RUNNER_SYSTEM_ID']}\nRUNNER_TOKEN={foreign}\n"
    )
    gitlab.clear_requests()

    synced = cli(prefix)
    verified = cli(prefix, "verify")
    cli(prefix, "status")
    (prefix.root / ".register-runner" / "main.json").unlink()
    adopting = cli(prefix)

    assert synced.returncode == 2 and "not written by register-runner" in synced.stderr
    assert adopting.returncode == 2, adopting.stderr
    assert verified.returncode != 1, verified.stdout  # nothing of it was checked and failed
    sent = [json.dumps([r.form, r.query, r.headers]) for r in gitlab.requests]
    assert not any(foreign in request for request in sent)
    assert mutations(gitlab) == []
    assert credentials.read_text().endswith(f"RUNNER_TOKEN={foreign}\n")
