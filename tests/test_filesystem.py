"""File-system failures are named (one line, the path, exit 2 or 3), never an internal
error, and never lose a token GitLab handed out."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from register_runner.testing.prefix import run_cli

SHELL = 'executor = "shell"\ntags = ["linux"]\n'


def _state(prefix) -> dict:
    return json.loads((prefix.root / ".register-runner" / "main.json").read_text())


def _one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    return lines[-1]


def test_instance_name_that_leaves_the_prefix_is_refused_before_anything_is_made(
    gitlab, prefix, tmp_path
):
    result = run_cli(["sync", "--prefix", str(prefix.root), "--instance", "../../evil"])

    assert result.returncode == 2
    assert "evil" in _one_line(result)
    assert not list(tmp_path.rglob("*evil*"))
    assert gitlab.requests == []


def test_lock_that_is_a_dangling_symlink_is_not_followed(gitlab, prefix, cli, tmp_path):
    (prefix.root / ".register-runner").mkdir(mode=0o700)
    target = tmp_path / "outside" / "planted"
    (prefix.root / ".register-runner" / "main.lock").symlink_to(target)

    result = cli(prefix)

    assert result.returncode == 2
    assert "main.lock" in _one_line(result) and "symbolic link" in result.stderr
    assert not target.parent.exists()
    assert gitlab.requests == []


def test_state_folder_that_is_a_file_is_named(gitlab, prefix, cli):
    (prefix.root / ".register-runner").write_text("not a folder\n")

    result = cli(prefix)

    assert result.returncode == 2
    assert ".register-runner" in _one_line(result)
    assert gitlab.mutating_requests() == []


def test_output_that_is_a_folder_is_named_before_anything_is_done(gitlab, prefix, cli):
    prefix.output.mkdir()

    result = cli(prefix)

    assert result.returncode == 2, result.stderr
    assert str(prefix.output) in _one_line(result)
    assert gitlab.requests == []


def test_config_write_that_fails_keeps_the_new_tokens(gitlab, make, cli):
    prefix = make(executors={"a": SHELL})
    assert cli(prefix).returncode == 0
    prefix.write_executor("b", SHELL)
    backup = prefix.root / "config.main.toml.bak"
    backup.mkdir()  # the write fails after GitLab created b's runner

    result = cli(prefix)

    assert result.returncode == 2, result.stderr
    assert "config.main.toml.bak" in _one_line(result)
    assert len(gitlab.runners()) == 2
    assert sorted(_state(prefix)["unwritten"]) == ["b"]  # the token survived
    backup.rmdir()
    gitlab.clear_requests()

    again = cli(prefix)

    assert again.returncode == 0, again.stderr
    assert gitlab.mutating_requests() == []  # nothing created twice
    for stem in ("a", "b"):
        entry = prefix.runner(stem)
        assert gitlab.runner(entry["id"]).token == entry["token"]


def test_backup_that_is_a_folder_is_named_and_the_config_stays_whole(gitlab, prefix, cli):
    assert cli(prefix).returncode == 0
    prefix.write_executor("shell", SHELL + "limit = 2\n")
    (prefix.root / "config.main.toml.bak").mkdir()

    result = cli(prefix)

    assert result.returncode == 2
    assert "config.main.toml.bak" in _one_line(result)
    assert "limit" not in prefix.output.read_text()


def _namespace_mounts() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "sh", "-c", "mount -t tmpfs -o size=1m none /mnt"],
        capture_output=True,
    )
    return probe.returncode == 0


needs_mounts = pytest.mark.skipif(
    not _namespace_mounts(), reason="needs unshare and mounts in a private namespace (root)"
)


def _in_namespace(setup: str, args: list[str]) -> subprocess.CompletedProcess:
    command = " ".join([sys.executable, "-m", "register_runner", *args])
    env = dict(os.environ)
    env.pop("JOURNAL_STREAM", None)
    return subprocess.run(
        ["unshare", "--mount", "sh", "-c", f"{setup} && exec {command}"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@needs_mounts
def test_read_only_prefix_with_nothing_to_change_is_not_an_error(gitlab, prefix, cli):
    assert cli(prefix).returncode == 0
    root = prefix.root
    gitlab.clear_requests()

    result = _in_namespace(
        f"mount --bind {root} {root} && mount -o remount,bind,ro {root}",
        ["sync", "--prefix", str(root)],
    )

    assert result.returncode == 0, result.stderr
    assert gitlab.mutating_requests() == []


@needs_mounts
def test_full_disk_is_named_may_heal_and_creates_nothing(gitlab, prefix, cli, tmp_path):
    root = prefix.root
    image = tmp_path / "copy"
    shutil.copytree(root, image, symlinks=True)
    # The prefix on a tiny file system that is full: the journal cannot be written, so
    # the create is never sent (its token could not be kept).
    setup = (
        f"mount -t tmpfs -o size=64k,mode=0700 none {root} && cp -a {image}/. {root}/ && "
        f"(dd if=/dev/zero of={root}/filler bs=4k >/dev/null 2>&1 || true)"
    )

    result = _in_namespace(setup, ["sync", "--prefix", str(root)])

    assert result.returncode == 3, result.stderr
    assert "internal error" not in result.stderr and str(root) in result.stderr
    assert gitlab.runners() == []
