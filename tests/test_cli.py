"""The command line itself: startup cost, logging format, adoption of an existing config,
and failures of the network layer (DNS, TLS)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from register_runner.testing.prefix import make_prefix, run_cli

SHELL = 'executor = "shell"\ntags = ["linux"]\n'


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["system-id", "--prefix", "{p}"]])
def test_fast_commands_do_not_import_the_http_stack(tmp_path, args):
    args = [a.replace("{p}", str(tmp_path)) for a in args]
    code = (
        "import sys, runpy; sys.argv = ['register-runner'] + ARGS\n"
        "try:\n    runpy.run_module('register_runner', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('\\nLOADED', sorted(m for m in sys.modules if m.split('.')[0] in "
        "('gitlab', 'requests', 'urllib3')))"
    ).replace("ARGS", repr(args))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.rstrip().endswith("LOADED []"), result.stdout + result.stderr


def test_journald_format_under_systemd(gitlab, prefix):
    result = run_cli(["sync", "--prefix", str(prefix.root)], env={"JOURNAL_STREAM": "8:1234"})
    assert result.returncode == 0
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith("<6>event=") for line in lines), lines


def test_quiet_logs_nothing_on_success(gitlab, prefix, cli):
    result = cli(prefix, "sync", "--quiet")
    assert result.returncode == 0 and result.stderr == ""


def test_usage_error_exits_2(gitlab, prefix, cli):
    assert cli(prefix, "sync", "--jobs", "0").returncode == 2
    assert run_cli(["frobnicate"]).returncode == 2
    assert run_cli(["sync", "--prefix", "/nonexistent/prefix"]).returncode == 2


def test_service_instance_alias(gitlab, pat, tmp_path):
    prefix = make_prefix(tmp_path / "p", gitlab.url, pat, instance="gpu")
    result = run_cli(["--prefix", str(prefix.root), "--service-instance", "gpu"])
    assert result.returncode == 0, result.stderr
    assert len(prefix.runners()) == 1


def test_existing_config_entry_with_the_executor_name_is_adopted(gitlab, prefix, cli):
    """A config written by another tool (LLNL's gitlab-runner-auth, `gitlab-runner
    register`), no state: the entry named like the executor keeps its runner and token."""
    runner = gitlab.add_runner(runner_type="instance_type", description="old", tag_list=("x",))
    host_name = socket.gethostname().split(".")[0]
    prefix.output.write_text(
        f'concurrent = 1\n[[runners]]\nname = "{host_name}-main-shell"\nurl = "{gitlab.url}"\n'
        f'id = {runner.id}\ntoken = "{runner.token}"\nexecutor = "shell"\n'
        '[[runners]]\nname = "hand-made"\nurl = "x"\nid = 999\ntoken = "glrt-hand"\n'
    )

    result = cli(prefix)

    assert result.returncode == 0, result.stderr
    assert "hand-made" in result.stderr and "dropped" in result.stderr
    (only,) = gitlab.runners()
    assert only.id == runner.id
    assert sorted(only.tag_list) == ["linux"] and "[register-runner " in only.maintenance_note
    assert prefix.runner("shell")["token"] == runner.token
    assert [r["name"] for r in prefix.runners()] == [f"{host_name}-main-shell"]


def test_unresolvable_gitlab_is_transient(tmp_path):
    prefix = make_prefix(tmp_path / "p", "https://gitlab.invalid", "glpat-unused-token-value")
    result = run_cli(["sync", "--prefix", str(prefix.root), "--deadline", "2"])
    assert result.returncode == 3
    assert "cannot connect" in result.stderr
    assert "glpat-unused-token-value" not in result.stderr


def test_tls_failure_is_transient_and_says_what_to_do(gitlab, pat, tmp_path):
    https_url = gitlab.url.replace("http://", "https://")
    prefix = make_prefix(tmp_path / "p", https_url, pat)
    result = run_cli(["sync", "--prefix", str(prefix.root), "--deadline", "2"])
    assert result.returncode == 3
    assert "TLS" in result.stderr or "SSL" in result.stderr
