"""The command line itself: startup cost, logging format, adoption of an existing config,
and failures of the network layer (DNS, TLS)."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
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
        "import sys\nfrom register_runner import cli\n"
        "try:\n    cli.main(ARGS)\n"
        "except SystemExit:\n    pass\n"
        "print('\\nLOADED', sorted(m for m in sys.modules if m.split('.')[0] in "
        "('gitlab', 'requests', 'urllib3')))"
    ).replace("ARGS", repr(args))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.rstrip().endswith("LOADED []"), result.stdout + result.stderr


def test_a_process_of_its_own_freezes_the_imports_and_keeps_collecting(tmp_path):
    """run() turns the cycle collector off for the imports only: a run that retries for
    minutes must still free its cyclic garbage."""
    code = (
        "import gc, sys\n"
        "from register_runner import cli\n"
        f"code = cli.main(['system-id', '--prefix', {str(tmp_path)!r}], own_process=True)\n"
        "print('STATE', code, gc.isenabled(), gc.get_freeze_count() > 1000)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert "STATE 0 True True" in result.stdout, result.stdout + result.stderr


def test_main_in_process_leaves_the_collector_alone(tmp_path):
    import gc

    from register_runner import cli

    frozen = gc.get_freeze_count()
    gc.disable()
    try:
        assert cli.main(["system-id", "--prefix", str(tmp_path)]) == 0
        assert not gc.isenabled()
        assert gc.get_freeze_count() == frozen
    finally:
        gc.enable()


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
    result = run_cli(["sync", "--prefix", str(prefix.root), "--deadline", "1"])
    assert result.returncode == 3
    assert "cannot connect" in result.stderr
    assert "glpat-unused-token-value" not in result.stderr


def test_tls_failure_is_transient_and_says_what_to_do(gitlab, pat, tmp_path):
    https_url = gitlab.url.replace("http://", "https://")
    prefix = make_prefix(tmp_path / "p", https_url, pat)
    result = run_cli(["sync", "--prefix", str(prefix.root), "--deadline", "1"])
    assert result.returncode == 3
    assert "TLS" in result.stderr or "SSL" in result.stderr


def test_global_options_before_the_command_word(gitlab, prefix, cli):
    assert cli(prefix).returncode == 0
    gitlab.clear_requests()
    result = run_cli(["-v", "--prefix", str(prefix.root), "plan", "--json"])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["command"] == "plan"
    assert "event=api" in result.stderr  # -v took effect
    assert gitlab.mutating_requests() == []


def test_every_line_has_a_priority_under_journald(gitlab, prefix, cli):
    prefix.write_executor("typo", 'executor = "shell"\nlimt = 4\n')
    journal = {"JOURNAL_STREAM": "8:1234"}
    ok = cli(prefix, "sync", env=journal)
    prefix.write_executor("broken", "executor = [\n")
    bad = cli(prefix, "sync", env=journal)
    usage = run_cli(["sync", "--jobs", "0"], env=journal)

    assert (ok.returncode, bad.returncode, usage.returncode) == (0, 2, 2)
    for result in (ok, bad, usage):
        lines = result.stderr.splitlines()
        assert lines and all(re.match(r"<[0-7]>event=\w+ ", line) for line in lines), lines
    assert any(
        line.startswith("<4>event=warning msg=") and "limt" in line
        for line in ok.stderr.splitlines()
    )
    assert bad.stderr.splitlines()[-1].startswith('<3>event=error msg="')


def test_table_not_printed_into_the_journal(gitlab, prefix, tmp_path):
    """Under systemd stdout is the journal too: the table would repeat the log lines."""
    out = tmp_path / "stdout"
    with open(out, "w") as handle:
        info = os.fstat(handle.fileno())
        env = dict(os.environ, JOURNAL_STREAM=f"{info.st_dev}:{info.st_ino}")
        result = subprocess.run(
            [sys.executable, "-m", "register_runner", "--prefix", str(prefix.root)],
            stdout=handle,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr
    assert out.read_text() == ""
    assert "event=create" in result.stderr
    # Under systemd a pipe gets it only when asked; outside systemd it always does.
    journal = {"JOURNAL_STREAM": "8:1234"}
    plan = ["plan", "--prefix", str(prefix.root)]
    assert "ACTION" not in run_cli(plan, env=journal).stdout
    assert "ACTION" in run_cli([*plan, "--table"], env=journal).stdout
    assert "ACTION" in run_cli(plan).stdout


@pytest.mark.parametrize(
    "args", [["sync", "--jobs", "0"], ["sync", "--prefix", "/nonexistent/prefix"], ["frobnicate"]]
)
def test_json_error_object_on_exit_2(args):
    result = run_cli([*args, "--json"])
    assert result.returncode == 2
    error = json.loads(result.stdout)
    assert error["exit_status"] == 2 and error["error"]


def test_json_names_the_bad_executor_file_in_errors(gitlab, prefix, cli):
    """A bad executor file does not end the run: the sync's document says exit 2 and
    names the file; the good executor's runner is created all the same."""
    prefix.write_executor("broken", "executor = [\n")
    result = cli(prefix, "sync", "--json")
    assert result.returncode == 2
    document = json.loads(result.stdout)
    assert document["exit_status"] == 2
    assert document["errors"] == [
        f"{prefix.executor_dir / 'broken.toml'}:1:12: invalid TOML: unexpected end of "
        "file: the [ here is never closed",
    ]
    assert [(a["action"], a["runner"]) for a in document["actions"][:2]] == [
        ("create", "shell"),
        ("keep", "broken"),
    ]


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("executor = [\n", "1:12", "unexpected end of file: the [ here is never closed"),
        (
            'executor = "shell"\ntags = ["a",\n  "b"\n',
            "2:8",
            "unexpected end of file: the [ here is never closed",
        ),
        (
            'executor = "shell"\nenv = { A = "1"\n',
            "2:7",
            "unexpected end of file: the { here is never closed",
        ),
        ('executor = "shell"\n  limit == 2\n', "2:10", "Unexpected character: '='"),
    ],
)
def test_toml_errors_say_what_and_where(gitlab, prefix, cli, text, where, message):
    path = prefix.write_executor("broken", text)
    result = cli(prefix)
    assert result.returncode == 2
    assert f"{path}:{where}: invalid TOML: {message}" in result.stderr, result.stderr
    assert "\\x00" not in result.stderr


def test_unknown_key_is_warned_with_the_closest_known_one_and_copied(gitlab, prefix, cli):
    path = prefix.write_executor("typo", 'executor = "shell"\nlimt = 4\nbuilds_dir = "/b"\n')
    result = cli(prefix, "sync", "--json")
    assert result.returncode == 0, result.stderr
    (warning,) = json.loads(result.stdout)["warnings"]
    assert warning.startswith(f"{path}:2: ") and "'limt'" in warning
    assert "did you mean limit?" in warning
    assert prefix.runner("typo")["limt"] == 4


CREDENTIAL_TEMPLATE = (
    'concurrent = 1\n[[client_configs]]\nurl = "{url}"\n'
    'personal_access_token_credential = "gitlab-pat"\n'
)


def test_manual_command_reads_the_credential_the_unit_loads(gitlab, pat, tmp_path):
    """`plan` from a shell, as root, in the recommended set-up: the access token comes
    from LoadCredential= in the drop-in, and no $CREDENTIALS_DIRECTORY is set."""
    prefix = make_prefix(tmp_path / "p", gitlab.url)
    prefix.write_template(CREDENTIAL_TEMPLATE.format(url=gitlab.url))
    secret = tmp_path / "secrets" / "gitlab.pat"
    secret.parent.mkdir(mode=0o700)
    secret.write_text(pat + "\n")
    secret.chmod(0o600)
    units = tmp_path / "units"
    (units / "gitlab-runner.service.d").mkdir(parents=True)
    (units / "gitlab-runner.service.d" / "register-runner.conf").write_text(
        f"[Service]\nLoadCredential=other:/nowhere\nLoadCredential=gitlab-pat:{secret}\n"
    )
    without = run_cli(
        ["plan", "--prefix", str(prefix.root)], env={"SYSTEMD_UNIT_PATH": str(tmp_path)}
    )
    assert without.returncode == 2
    assert "--credentials-directory" in without.stderr and pat not in without.stderr

    result = run_cli(["plan", "--prefix", str(prefix.root)], env={"SYSTEMD_UNIT_PATH": str(units)})
    assert result.returncode == 0, result.stderr
    assert "create" in result.stdout

    folder = tmp_path / "creds"
    folder.mkdir(mode=0o700)
    (folder / "gitlab-pat").write_text(pat + "\n")
    given = run_cli(
        ["--credentials-directory", str(folder), "sync", "--prefix", str(prefix.root)],
        env={"SYSTEMD_UNIT_PATH": str(tmp_path)},
    )
    assert given.returncode == 0, given.stderr
    assert len(gitlab.runners()) == 1


def test_unregister_warns_when_the_file_would_bring_the_runner_back(gitlab, prefix, cli):
    assert cli(prefix).returncode == 0
    result = cli(prefix, "unregister", "--runner", "shell")
    assert result.returncode == 0, result.stderr
    assert "shell.toml still exists" in result.stderr
    assert gitlab.runners() == []


def test_verify_labels_runners_by_executor_file(gitlab, prefix, cli):
    assert cli(prefix).returncode == 0
    result = cli(prefix, "verify", "--json")
    assert result.returncode == 0, result.stderr
    assert [row["runner"] for row in json.loads(result.stdout)["actions"]] == ["shell"]


def test_plan_shows_how_the_config_changes_with_tokens_masked(gitlab, prefix, cli):
    assert cli(prefix).returncode == 0
    token = prefix.runner("shell")["token"]
    prefix.write_executor("shell", 'executor = "shell"\ntags = ["linux"]\nlimit = 3\n')

    result = cli(prefix, "plan", "--detailed-exitcode")

    assert result.returncode == 4, result.stderr
    assert "diff below" in result.stdout
    assert "+limit = 3" in result.stdout.replace("  ", "")
    assert token not in result.stdout + result.stderr
    assert json.loads(cli(prefix, "plan", "--json").stdout)["actions"][-1]["diff"]


def test_a_process_of_its_own_exits_with_its_output_whole(gitlab, prefix, cli):
    """run() ends with os._exit, past the interpreter's teardown: what was printed still
    arrives whole, the exit status is main()'s, and output that cannot be written is
    still an error (Python's own: 120), not a success."""
    from register_runner import cli as cli_module

    command = [sys.executable, "-m", "register_runner"]
    helped = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0
    assert helped.stdout == cli_module.build_parser().format_help()

    assert cli(prefix).returncode == 0
    status = [*command, "status", "--json", "--prefix", str(prefix.root)]
    shown = subprocess.run(status, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0
    assert json.loads(shown.stdout)["last_run"]["exit_status"] == 0  # the whole document

    bad = subprocess.run([*command, "sync", "--jobs", "0"], capture_output=True, timeout=60)
    assert bad.returncode == 2 and b"--jobs" in bad.stderr

    def closed_stdout(arguments: list[str]) -> tuple[int, str]:
        child = subprocess.Popen(arguments, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        child.stdout.close()  # long before it prints: its output finds no reader
        _, stderr = child.communicate(timeout=60)
        return child.returncode, stderr.decode()

    for arguments in (status, status[:-3] + status[-2:]):  # the JSON, the table
        code, stderr = closed_stdout(arguments)
        assert code == 1 and "Traceback" not in stderr, stderr
        assert stderr.strip().endswith("closed before everything was written to it")


class _Exited(Exception):
    pass


@pytest.mark.parametrize("flush_fails", [False, True])
def test_run_flushes_then_exits_without_teardown(monkeypatch, flush_fails):
    """What run() does after main(): flush, then os._exit with main()'s status; when the
    flush fails, sys.exit instead, so that Python reports it and exits 120."""
    from register_runner import cli

    class Stream(io.StringIO):
        def flush(self) -> None:
            self.flushed = True
            if flush_fails:
                raise BrokenPipeError(32, "Broken pipe")

    stdout = Stream()
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(cli, "main", lambda own_process: 3 if own_process else -1)

    def exit_now(code: int) -> None:
        raise _Exited(code)

    monkeypatch.setattr(os, "_exit", exit_now)
    with pytest.raises(SystemExit if flush_fails else _Exited) as exited:
        cli.run()
    assert exited.value.args == (3,) and stdout.flushed


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_the_options_command_first_skips_are_every_option_that_takes_a_value():
    from register_runner import cli

    taking_values = {
        option
        for command in _subparsers(cli.build_parser()).values()
        for action in command._actions
        if action.nargs != 0
        for option in action.option_strings
    }
    assert taking_values == cli.OPTIONS_WITH_VALUES


@pytest.mark.parametrize("command", ["sync", "plan", "verify", "unregister", "demo"])
def test_a_run_builds_only_its_commands_parser_and_it_is_the_same(command):
    from register_runner import cli

    only = cli.build_parser(command)
    assert list(_subparsers(only)) == [command]
    whole = _subparsers(cli.build_parser())[command]
    assert _subparsers(only)[command].format_help() == whole.format_help()
    arguments = [command, "-q", "--prefix", "/p"] if command != "demo" else [command, "-q"]
    assert only.parse_args(arguments) == cli.build_parser().parse_args(arguments)


def test_building_the_parser_asks_no_terminal_width_but_help_does():
    """argparse makes a formatter for each option it adds; asking each for the terminal's
    width imported shutil (with zlib, bz2 and lzma) into every run."""
    code = (
        "import sys\nfrom register_runner import cli\n"
        "cli.build_parser('sync'), cli.build_parser()\n"
        "print('shutil' in sys.modules)\n"
        "cli.build_parser().parse_args(['sync', '--help'])"
    )
    environment = dict(os.environ, COLUMNS="60")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment
    )
    first, *help_lines = result.stdout.splitlines()
    assert first == "False", result.stderr
    assert "--deadline S" in result.stdout
    assert max(map(len, help_lines)) <= 60 < len(" ".join(help_lines))
