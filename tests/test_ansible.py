"""The Ansible collection's module, register_runner.gitlab.sync, run as a fleet runs it:
ansible-playbook with -c local against the fake GitLab, each result read from the play's
JSON output (tests/ansible/callback_plugins/json_results.py).

Needs ansible-core (.ci/run installs it): without it these tests fail under CI=true and
skip elsewhere."""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

import register_runner
from register_runner.files import exclusive_lock
from register_runner.testing.fake_gitlab import FakeGitLab
from register_runner.testing.prefix import Prefix
from register_runner.workspace import Options, lock_path

ROOT = Path(__file__).resolve().parent.parent
COLLECTIONS = ROOT / "contrib" / "ansible"
MODULE = COLLECTIONS / "ansible_collections/register_runner/gitlab/plugins/modules/sync.py"
PLAYBOOKS = Path(__file__).resolve().parent / "ansible"
TASK = "Register the runners and write the config"
HANDLER = "Restart gitlab-runner"

pytestmark = pytest.mark.slow


def ansible_tool(name: str) -> str:
    """The venv's ansible-playbook (or ansible-doc), else the one on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.is_file() else shutil.which(name)
    if found is None:
        message = f"{name} not found: pip install ansible-core (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def ansible_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.pop("JOURNAL_STREAM", None)
    home = tmp_path / "ansible-home"
    env.update(
        ANSIBLE_HOME=str(home),
        ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
        ANSIBLE_REMOTE_TMP=str(home / "remote-tmp"),
        ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS),
        ANSIBLE_CALLBACK_PLUGINS=str(PLAYBOOKS / "callback_plugins"),
        ANSIBLE_STDOUT_CALLBACK="json_results",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="0",
    )
    return env


class Play:
    """One ansible-playbook run: its exit status, the sync task's result, whether the
    handler ran, and everything it printed."""

    def __init__(self, completed: subprocess.CompletedProcess) -> None:
        self.returncode = completed.returncode
        self.output = completed.stdout + completed.stderr
        try:
            document = json.loads(completed.stdout)
        except ValueError:
            pytest.fail(f"ansible-playbook printed no JSON document:\n{self.output}")
        tasks = {t["task"]["name"]: t["hosts"]["localhost"] for t in document["tasks"]}
        self.result: dict[str, Any] = tasks[TASK]
        self.handler_ran = HANDLER in tasks and not tasks[HANDLER].get("skipped")
        self.stats = document["stats"]["localhost"]


def play(
    tmp_path: Path,
    gitlab: FakeGitLab,
    prefix: Prefix,
    *options: str,
    python: str = sys.executable,
    **variables: Any,
) -> Play:
    completed = subprocess.run(
        [
            ansible_tool("ansible-playbook"),
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            json.dumps(
                {"rr_prefix": str(prefix.root), "ansible_python_interpreter": python, **variables}
            ),
            *options,
            str(PLAYBOOKS / "sync.yml"),
        ],
        capture_output=True,
        text=True,
        env=ansible_env(tmp_path),
        cwd=str(tmp_path),
        timeout=120,
    )
    run = Play(completed)
    secrets = [gitlab_token(prefix), *(r.token for r in gitlab.runners())]
    for secret in secrets:
        assert secret not in run.output
    return run


def gitlab_token(prefix: Prefix) -> str:
    return (prefix.root / "secrets" / "gitlab.pat").read_text().strip()


def test_check_mode_changes_nothing_then_apply_then_an_idempotent_rerun(tmp_path, gitlab, make):
    prefix = make()

    check = play(tmp_path, gitlab, prefix, "--check")
    assert check.returncode == 0, check.output
    assert check.result["changed"] is True
    assert [a["action"] for a in check.result["actions"]] == ["create", "write"]
    assert gitlab.mutating_requests() == [] and gitlab.runners() == []
    assert not prefix.output.exists()

    apply = play(tmp_path, gitlab, prefix)
    assert apply.returncode == 0, apply.output
    assert apply.result["changed"] is True and apply.result["healthy"] is True
    assert apply.result["config_written"] is True
    assert apply.handler_ran
    [runner] = gitlab.runners()
    assert prefix.runner("shell")["id"] == runner.id

    before = prefix.snapshot()
    gitlab.clear_requests()
    again = play(tmp_path, gitlab, prefix)
    assert again.returncode == 0, again.output
    assert again.result["changed"] is False and again.result["healthy"] is True
    assert not again.handler_ran
    assert again.stats["changed"] == 0 and again.stats["ok"] == 1
    assert gitlab.mutating_requests() == []
    assert prefix.snapshot() == before


def test_check_diff_shows_a_tag_change_and_changes_nothing(tmp_path, gitlab, make):
    prefix = make()
    assert play(tmp_path, gitlab, prefix).result["changed"] is True
    prefix.write_executor("shell", 'executor = "shell"\ntags = ["linux", "docker"]\n')
    gitlab.clear_requests()

    check = play(tmp_path, gitlab, prefix, "--check", "--diff")

    assert check.returncode == 0, check.output
    assert check.result["changed"] is True
    [runner] = gitlab.runners()
    assert check.result["diff"] == [
        {
            "before_header": f"runner shell (id {runner.id})",
            "after_header": f"runner shell (id {runner.id})",
            "before": 'tag_list: ["linux"]\n',
            "after": 'tag_list: ["docker", "linux"]\n',
        }
    ]
    assert sorted(runner.tag_list) == ["linux"]
    assert gitlab.mutating_requests() == []

    # Applied, the tags change in GitLab; the config does not, nor is gitlab-runner
    # restarted.
    config = prefix.output.read_bytes(), prefix.output.stat().st_mtime_ns
    apply = play(tmp_path, gitlab, prefix)
    assert apply.result["changed"] is True and apply.result["config_written"] is False
    assert not apply.handler_ran
    assert sorted(gitlab.runner(runner.id).tag_list) == ["docker", "linux"]
    assert (prefix.output.read_bytes(), prefix.output.stat().st_mtime_ns) == config


def test_apply_diff_shows_the_config_diff_with_tokens_masked(tmp_path, gitlab, make):
    prefix = make()
    assert play(tmp_path, gitlab, prefix).result["changed"] is True
    prefix.write_executor("shell", 'executor = "shell"\ntags = ["linux"]\nshell = "bash"\n')

    apply = play(tmp_path, gitlab, prefix, "--diff")

    assert apply.result["changed"] is True, apply.output
    [config] = [d["prepared"] for d in apply.result["diff"] if "prepared" in d]
    assert '+shell = "bash"' in config.splitlines()
    assert prefix.runner("shell")["shell"] == "bash"


def test_the_diff_of_a_new_runner_masks_its_token_and_check_mode_diffs_the_config(
    tmp_path, gitlab, make
):
    prefix = make()

    created = play(tmp_path, gitlab, prefix, "--diff")

    [runner] = gitlab.runners()
    [config] = [d["prepared"] for d in created.result["diff"] if "prepared" in d]
    [token_line] = [line for line in config.splitlines() if line.startswith("+token = ")]
    assert token_line.startswith('+token = "glrt-\u2026') and runner.token not in config
    assert {
        "before_header": "runner shell",
        "after_header": "runner shell",
        "before": "",
        "after": "registered\n",
    } in created.result["diff"]

    prefix.write_executor("shell", 'executor = "shell"\ntags = ["linux"]\nshell = "bash"\n')
    before = prefix.snapshot()
    check = play(tmp_path, gitlab, prefix, "--check", "--diff")
    assert check.result["changed"] is True
    [config] = [d["prepared"] for d in check.result["diff"] if "prepared" in d]
    assert '+shell = "bash"' in config.splitlines()
    assert prefix.snapshot() == before


def test_a_broken_executor_file_fails_the_task_naming_the_file(tmp_path, gitlab, make):
    prefix = make()
    assert play(tmp_path, gitlab, prefix).result["changed"] is True
    broken = prefix.write_executor("docker", 'executor = "docker"\ntags = ["linux",\n')
    before = prefix.snapshot()

    run = play(tmp_path, gitlab, prefix)

    assert run.returncode == 2, run.output
    assert run.result["failed"] is True
    assert run.result["exit_status"] == 2
    assert run.result["msg"].startswith(f"{broken}:2:"), run.result["msg"]
    assert not run.handler_ran
    assert len(gitlab.runners()) == 1
    assert prefix.snapshot() == before


def test_metrics_file_describes_the_tasks_run_and_check_mode_leaves_it(tmp_path, gitlab, make):
    """As the units' --metrics-file: after a task that fixed or broke the host the gauges
    say so, as status does. Check mode (plan) records no run, so it writes none."""
    from test_run_metrics import metrics, value

    prefix = make()
    metrics_file = tmp_path / "register-runner-main.prom"

    check = play(tmp_path, gitlab, prefix, "--check", rr_metrics_file=str(metrics_file))
    assert check.returncode == 0, check.output
    assert not metrics_file.exists()

    apply = play(tmp_path, gitlab, prefix, rr_metrics_file=str(metrics_file))
    assert apply.returncode == 0 and apply.result["healthy"] is True, apply.output
    values = metrics(metrics_file)
    assert value(values, "register_runner_last_run_exit_code") == 0
    assert value(values, "register_runner_healthy") == 1

    prefix.write_executor("docker", 'executor = "docker"\ntags = ["linux",\n')
    broken = play(tmp_path, gitlab, prefix, rr_metrics_file=str(metrics_file))
    assert broken.result["failed"] is True and broken.result["exit_status"] == 2, broken.output
    values = metrics(metrics_file)
    assert value(values, "register_runner_last_run_exit_code") == 2
    assert value(values, "register_runner_healthy") == 0

    prefix.remove_executor("docker")
    written = metrics_file.read_bytes(), metrics_file.stat().st_mtime_ns
    check = play(tmp_path, gitlab, prefix, "--check", rr_metrics_file=str(metrics_file))
    assert check.returncode == 0 and check.result["healthy"] is True, check.output
    assert (metrics_file.read_bytes(), metrics_file.stat().st_mtime_ns) == written


def test_an_option_out_of_bounds_fails_naming_it(tmp_path, gitlab, make):
    prefix = make()

    run = play(tmp_path, gitlab, prefix, rr_deadline=-1)

    assert run.returncode == 2, run.output
    assert run.result["msg"] == "deadline: must not be negative (got -1.0)"
    assert gitlab.requests == [] and not prefix.output.exists()


def test_a_rejected_access_token_fails_the_task(tmp_path, gitlab, make, pat):
    prefix = make()
    assert play(tmp_path, gitlab, prefix).result["changed"] is True
    gitlab.revoke_access_token(pat)
    prefix.write_executor("docker", 'executor = "docker"\ntags = ["docker"]\n')

    run = play(tmp_path, gitlab, prefix)

    assert run.returncode == 2, run.output
    assert run.result["failed"] is True and run.result["exit_status"] == 1
    assert "the access token was rejected (401" in run.result["msg"], run.result["msg"]


def test_gitlab_down_keeps_the_config_and_says_so(tmp_path, gitlab, make):
    prefix = make()
    assert play(tmp_path, gitlab, prefix).result["changed"] is True
    prefix.write_executor("shell", 'executor = "shell"\ntags = ["linux", "docker"]\n')
    config = prefix.output.read_bytes(), prefix.output.stat().st_mtime_ns
    gitlab.down()

    run = play(tmp_path, gitlab, prefix, rr_deadline=5)

    assert run.returncode == 0, run.output
    assert run.result.get("failed") is not True
    assert run.result["changed"] is False and run.result["healthy"] is False
    assert run.result["exit_status"] == 0
    assert any("GitLab unreachable" in w for w in run.result["warnings"]), run.result
    assert not run.handler_ran
    assert (prefix.output.read_bytes(), prefix.output.stat().st_mtime_ns) == config

    check = play(tmp_path, gitlab, prefix, "--check", rr_deadline=5)
    assert check.returncode == 0, check.output
    assert check.result["healthy"] is False and check.result["exit_status"] == 3
    assert any("GitLab unreachable" in w for w in check.result["warnings"]), check.result


def test_a_fresh_host_waits_out_a_retry_after_within_fresh_deadline(tmp_path, gitlab, make):
    """fresh_deadline, as sync's --fresh-deadline: nothing to keep yet, so a Retry-After
    longer than the deadline is waited for, not given up on."""
    prefix = make()
    gitlab.fail_next(status=429, method="POST", path=r"^/user/runners$", retry_after="3")

    run = play(tmp_path, gitlab, prefix, rr_deadline=1, rr_fresh_deadline=60)

    assert run.returncode == 0, run.output
    assert run.result["changed"] is True and run.result["healthy"] is True, run.result
    assert len(gitlab.runners()) == 1 and prefix.runner("shell")["id"]


def test_a_busy_lock_is_ok_unhealthy_and_warned(tmp_path, gitlab, make):
    """Another run (the systemd timer's) holds the prefix past lock_timeout: exit 3, which
    is not the task's failure, and said."""
    prefix = make()
    assert play(tmp_path, gitlab, prefix).result["changed"] is True
    gitlab.clear_requests()

    with exclusive_lock(lock_path(Options(prefix.root)), 0):
        run = play(tmp_path, gitlab, prefix, rr_lock_timeout=0)

    assert run.returncode == 0, run.output
    assert run.result["changed"] is False and run.result["healthy"] is False
    assert run.result["exit_status"] == 3
    assert any("lock" in w for w in run.result["warnings"]), run.result
    assert gitlab.requests == []


def test_the_built_collection_installs_and_ansible_doc_renders_it(tmp_path):
    """As an operator installs it: ansible-galaxy collection build, then install."""
    galaxy, env = ansible_tool("ansible-galaxy"), ansible_env(tmp_path)
    source = COLLECTIONS / "ansible_collections" / "register_runner" / "gitlab"
    build = [galaxy, "collection", "build", str(source), "--output-path", str(tmp_path)]
    built = subprocess.run(build, capture_output=True, text=True, env=env, timeout=60)
    assert built.returncode == 0, built.stdout + built.stderr
    [tarball] = tmp_path.glob("register_runner-gitlab-*.tar.gz")
    installed = tmp_path / "collections"
    env["ANSIBLE_COLLECTIONS_PATH"] = str(installed)  # not the checkout's
    install = [galaxy, "collection", "install", str(tarball), "-p", str(installed)]
    done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr

    command = [ansible_tool("ansible-doc"), "register_runner.gitlab.sync"]
    text = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert text.returncode == 0, text.stderr
    assert str(installed) in text.stdout
    assert "check_mode" in text.stdout and "EXAMPLES" in text.stdout
    rendered = subprocess.run([*command, "--json"], capture_output=True, text=True, env=env)
    doc = json.loads(rendered.stdout)["register_runner.gitlab.sync"]
    spec = _module_spec()
    assert set(doc["doc"]["options"]) == set(spec)
    for name, option in doc["doc"]["options"].items():
        assert option["type"] == spec[name]["type"], name
        assert option.get("default") == spec[name].get("default"), name
    assert {"changed", "healthy", "exit_status", "warnings", "msg"} <= set(doc["return"])
    # The sync options: every keyword of the Python API's sync (the environment is the
    # task's own keyword; retry_only is the retry timer's, which a play has no use for),
    # and where to find the zipapp.
    keywords = set(inspect.signature(register_runner.sync).parameters) - {"environ", "retry_only"}
    assert set(spec) == keywords | {"zipapp"}


def _module_spec() -> dict[str, Any]:
    loaded = importlib.util.spec_from_file_location("register_runner_ansible_sync", MODULE)
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    return module.ARGUMENT_SPEC


def test_the_module_runs_register_runner_from_the_zipapp(tmp_path, gitlab, make, once_per_run):
    """A host where register-runner is the zipapp, not a package pip installed: the
    module imports it from the file. The zipapp holds no Ansible code."""
    from test_package import PYTHON39, build

    zipapp = once_per_run("dist", lambda folder: build(folder / "register-runner"))
    zipapp = zipapp / "register-runner"
    with zipfile.ZipFile(zipapp) as archive:
        assert not [n for n in archive.namelist() if "ansible" in n]
    python = PYTHON39 or str(Path(sys.base_prefix) / "bin" / "python3")
    bare = subprocess.run(
        [python, "-c", "import register_runner"], capture_output=True, cwd=str(tmp_path)
    )
    assert bare.returncode != 0, f"{python} imports register_runner without the zipapp"
    prefix = make()

    run = play(tmp_path, gitlab, prefix, python=python, rr_zipapp=str(zipapp))

    assert run.returncode == 0, run.output
    assert run.result["changed"] is True and run.result["healthy"] is True
    assert len(gitlab.runners()) == 1

    missing = play(tmp_path, gitlab, prefix, python=python, rr_zipapp=str(tmp_path / "none"))
    assert missing.result["failed"] is True
    assert "register-runner is not installed" in missing.result["msg"]
