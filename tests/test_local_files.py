"""Only regular files are read, nothing local hangs a run, and secret files are private:
through the real CLI, against the fake GitLab.

A FIFO where a file is expected used to block the open for ever, so each of these runs
goes to a child process that the test can give up on instead of hanging the suite.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Callable

import pytest

from register_runner.testing.prefix import Prefix, run_cli

SHELL = 'executor = "shell"\ntags = ["linux"]\n'
# Far more than a run refused at once takes, even on a loaded machine; a blocking open on
# the old code never ends, so this is where such a run fails.
HANG = 30.0


def fifo(path: Path) -> Path:
    """A FIFO no one writes to, where a file was (or is expected)."""
    if path.exists() or path.is_symlink():
        path.unlink()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.mkfifo(path, 0o600)
    return path


def unix_socket(path: Path) -> Path:
    if path.exists():
        path.unlink()
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.close()  # the file stays, a socket
    return path


def child(prefix: Prefix, *args: str, env=None):
    """``register-runner <args> --prefix …`` in a child, given up on after HANG."""
    command = [*(args or ("sync",)), "--prefix", str(prefix.root)]
    return run_cli(command, env=env, timeout=HANG)


def assert_refused_naming(result, path: Path, what: str = "a FIFO (named pipe)") -> None:
    err = result.stderr.strip()
    assert result.returncode == 2, f"exit {result.returncode}: {result.stderr}"
    assert "\n" not in err and "Traceback" not in err, result.stderr
    assert f"{path}" in err and f"{what}, not a regular file" in err, err


def synced(gitlab, make, cli, **options) -> Prefix:
    prefix = make(**options)
    first = cli(prefix)
    assert first.returncode == 0, first.stderr
    gitlab.clear_requests()
    return prefix


# -- each kind of path ---------------------------------------------------------------------


def _template(prefix: Prefix) -> Path:
    return prefix.template


def _executor_file(prefix: Prefix) -> Path:
    return prefix.executor_dir / "other.toml"


def _config(prefix: Prefix) -> Path:
    return prefix.output


def _state(prefix: Prefix) -> Path:
    return prefix.root / ".register-runner" / "main.json"


def _system_id(prefix: Prefix) -> Path:
    return prefix.root / ".runner_system_id"


def _token_file(prefix: Prefix) -> Path:
    return prefix.root / "secrets" / "gitlab.pat"


PATHS: dict[str, Callable[[Prefix], Path]] = {
    "template": _template,
    "executor-file": _executor_file,
    "config": _config,
    "state": _state,
    "system-id": _system_id,
    "token-file": _token_file,
}


@pytest.mark.parametrize("command", ["sync", "plan"])
@pytest.mark.parametrize("where", list(PATHS))
def test_a_fifo_where_a_file_is_expected_is_bad_input_at_once(gitlab, make, cli, where, command):
    prefix = synced(gitlab, make, cli)
    path = fifo(PATHS[where](prefix))
    before = prefix.snapshot()

    result = child(prefix, command)

    assert_refused_naming(result, path)
    assert gitlab.mutating_requests() == []
    assert prefix.snapshot() == before


def test_a_socket_at_the_config_is_named_as_one(gitlab, make, cli):
    prefix = synced(gitlab, make, cli)
    path = unix_socket(prefix.output)
    result = child(prefix)
    assert_refused_naming(result, path, "a socket")
    assert gitlab.mutating_requests() == []


def device(path: Path) -> Path:
    """A symbolic link to /dev/zero: a character device that never ends, mode 0666 (which
    is not what is wrong with it), and needs no root to make."""
    if path.exists() or path.is_symlink():
        path.unlink()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.symlink_to("/dev/zero")
    return path


def link_to_a_fifo(path: Path) -> Path:
    fifo(path.with_name(f".{path.name}.pipe"))
    if path.exists() or path.is_symlink():
        path.unlink()
    path.symlink_to(path.with_name(f".{path.name}.pipe"))
    return path


def link_to_a_copy(path: Path) -> Path:
    """The regular file that was there, moved beside it, with a symbolic link to it."""
    target = path.with_name(f".{path.name}.target")
    path.rename(target)
    path.symlink_to(target)
    return path


# Read through a symbolic link (a deploy tool's or a mounted secret's): the inputs. The
# files the tool replaces itself are refused as a link (a replace would cut the link).
FOLLOWED = ("template", "executor-file", "system-id", "token-file")


@pytest.mark.parametrize("where", list(PATHS))
def test_a_socket_where_a_file_is_expected_is_bad_input_at_once(gitlab, make, cli, where):
    prefix = synced(gitlab, make, cli)
    path = unix_socket(PATHS[where](prefix))
    before = prefix.snapshot()

    result = child(prefix)

    assert_refused_named(result, path, "a socket", per_file=where == "executor-file")
    assert gitlab.mutating_requests() == []
    assert prefix.snapshot() == before


@pytest.mark.parametrize("where", FOLLOWED)
@pytest.mark.parametrize("kind", ["a device", "a link to a FIFO"])
def test_what_a_symbolic_link_leads_to_must_be_a_regular_file(gitlab, make, cli, where, kind):
    prefix = synced(gitlab, make, cli)
    path = PATHS[where](prefix)
    if not path.exists():
        path.write_text(SHELL)
        path.chmod(0o600)
    if kind == "a device":
        device(path)
    else:
        link_to_a_fifo(path)

    result = child(prefix)

    what = "a character device" if kind == "a device" else "a FIFO (named pipe)"
    assert_refused_named(result, path, what, per_file=where == "executor-file")
    assert gitlab.mutating_requests() == []


@pytest.mark.parametrize("where", list(PATHS))
def test_a_symbolic_link_to_a_regular_file_is_read_where_an_input_is_expected(
    gitlab, make, cli, where
):
    prefix = synced(gitlab, make, cli)
    path = PATHS[where](prefix)
    if not path.exists():
        path.write_text(SHELL)
        path.chmod(0o600)
    link_to_a_copy(path)

    result = child(prefix)

    if where in FOLLOWED:
        assert result.returncode == 0, result.stderr
        assert len(gitlab.runners()) == len(prefix.runners()) >= 1
    else:
        err = result.stderr.strip()
        assert result.returncode == 2 and "\n" not in err, result.stderr
        assert f"{path}: is a symbolic link; refusing to read or replace it" in err, err
        assert gitlab.mutating_requests() == []


def assert_refused_named(result, path: Path, what: str, *, per_file: bool) -> None:
    """Exit 2 naming the path and what is there; for an executor file, on the line that
    says its runner is held (the others went on)."""
    if not per_file:
        assert_refused_naming(result, path, what)
        return
    assert result.returncode == 2, f"exit {result.returncode}: {result.stderr}"
    (line,) = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert f"{path}: {what}, not a regular file" in line and "held" in line, line


@pytest.mark.parametrize("secret", ["registration token file", "client key"])
def test_a_fifo_as_a_secret_file_of_any_kind_is_bad_input(gitlab, make, pki, tmp_path, secret):
    path = fifo(tmp_path / "secret")
    if secret == "client key":
        cert, _ = pki["client"]
        prefix = make(client_extra=f'tls_cert_file = "{cert}"\ntls_key_file = "{path}"\n')
    else:
        prefix = make(access_token=None)
        url = json.dumps(gitlab.url)
        prefix.write_template(
            f'[[client_configs]]\nurl = {url}\nregistration_token_file = "{path}"\n'
        )

    result = child(prefix)

    assert_refused_naming(result, path)
    assert gitlab.requests == []


def test_a_fifo_as_the_systemd_credential_is_bad_input(gitlab, pat, make, tmp_path):
    prefix = make()
    url = json.dumps(gitlab.url)
    prefix.write_template(
        f'[[client_configs]]\nurl = {url}\npersonal_access_token_credential = "gitlab-pat"\n'
    )
    path = fifo(tmp_path / "credentials" / "gitlab-pat")

    result = child(prefix, env={"CREDENTIALS_DIRECTORY": str(path.parent)})

    assert_refused_naming(result, path)
    assert f"{prefix.template}:" in result.stderr  # and the setting that names it
    assert gitlab.requests == []
    assert not prefix.output.exists()


def test_a_fifo_at_a_custom_runners_credentials_file_is_bad_input(gitlab, make, tmp_path):
    folder = tmp_path / "custom-runner"
    folder.mkdir(mode=0o700)
    path = fifo(folder / "rs.env")
    prefix = make(executors={"rs": f'credentials_file = "{path}"\ntags = ["rust"]\n'})

    result = child(prefix)

    assert result.returncode == 2, result.stderr
    assert f"{path} exists and is not a regular file" in result.stderr
    assert gitlab.runners() == []


def test_a_fifo_as_tls_ca_file_is_bad_input(gitlab, pat, make, tmp_path):
    path = fifo(tmp_path / "ca.pem")
    prefix = make(client_extra=f'tls_ca_file = "{path}"\n')
    result = child(prefix)
    assert_refused_naming(result, path)
    assert gitlab.requests == []


@pytest.mark.parametrize("option", ["--token-file", "--tls-ca-file"])
def test_verify_refuses_a_fifo_for_its_token_or_ca_file(tmp_path, option):
    path = fifo(tmp_path / "given")
    token = tmp_path / "token"
    token.write_text("glrt-verify-local-files-0123\n")
    given = {"--token-file": str(token), option: str(path)}
    result = run_cli(
        [
            *("verify", "--url", "https://127.0.0.1:9", "--system-id", "s_0123456789ab"),
            *(word for option_and_value in given.items() for word in option_and_value),
        ],
        timeout=HANG,
    )
    assert result.returncode == 2 and str(path) in result.stderr, result.stderr
    assert "a FIFO (named pipe), not a regular file" in result.stderr


def test_a_fifo_as_the_tag_schema_is_bad_input(gitlab, make, cli, tmp_path):
    prefix = synced(gitlab, make, cli)
    path = fifo(tmp_path / "tag_schema.json")
    result = child(prefix, "sync", "--tag-schema", str(path))
    assert_refused_naming(result, path)
    assert gitlab.mutating_requests() == []


# -- the watchdog --------------------------------------------------------------------------


def stuck_plugin(tmp_path: Path) -> Path:
    """A capture-tags program opening a FIFO no one writes to: what no socket timeout ends
    (on a host, a read from a hung NFS mount or a getaddrinfo that never returns)."""
    never_written = fifo(tmp_path / "never-written")
    plugin = tmp_path / "stuck_tags.py"
    plugin.write_text(f"def capture_tags():\n    return open({str(never_written)!r}).read()\n")
    return plugin


def run_stuck(prefix: Prefix, plugin: Path, metrics: Path, *options: str):
    stuck = ("--capture-tags", str(plugin), "--deadline", "0.5", "--lock-timeout", "0")
    return run_cli(
        ["sync", "--prefix", str(prefix.root), *stuck, "--metrics-file", str(metrics), *options],
        env={"JOURNAL_STREAM": "8:1234"},
        timeout=HANG,
    )


def test_a_run_stuck_on_a_local_read_ends_at_the_deadline_with_the_config_kept(
    gitlab, make, cli, tmp_path
):
    """The process ends at --deadline (+ --lock-timeout) + its grace, as a run with GitLab
    failing does: the config kept, exit 0 (the runner starts with it), and not healthy."""
    prefix = synced(gitlab, make, cli)
    config = prefix.output.read_bytes()
    metrics = tmp_path / "metrics.prom"

    result = run_stuck(prefix, stuck_plugin(tmp_path), metrics)

    assert result.returncode == 0, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("<3>event=error ") and "passed its deadline" in line, line
    assert prefix.output.read_bytes() == config
    assert gitlab.mutating_requests() == []
    status = cli(prefix, "status", "--json")
    assert status.returncode == 3  # not known: the runners were not checked
    assert json.loads(status.stdout)["last_run"]["exit_status"] == 0
    assert json.loads(status.stdout)["healthy"] is False
    assert 'register_runner_last_run_exit_code{instance="main"} 0' in metrics.read_text()
    assert 'register_runner_config_kept{instance="main"} 1' in metrics.read_text()
    assert 'register_runner_healthy{instance="main"} 0' in metrics.read_text()


@pytest.mark.parametrize("case", ["fresh host", "--strict"])
def test_a_stuck_run_with_no_config_to_keep_or_strict_ends_with_exit_3(
    gitlab, make, cli, tmp_path, case
):
    prefix = make() if case == "fresh host" else synced(gitlab, make, cli)
    metrics = tmp_path / "metrics.prom"
    options = ("--strict",) if case == "--strict" else ()

    result = run_stuck(prefix, stuck_plugin(tmp_path), metrics, *options)

    assert result.returncode == 3, result.stderr
    assert "passed its deadline" in result.stderr
    assert gitlab.mutating_requests() == []
    assert 'register_runner_last_run_exit_code{instance="main"} 3' in metrics.read_text()


# -- secret files are private --------------------------------------------------------------


def assert_refused_as_readable(result, path: Path, secret: str) -> None:
    err = result.stderr.strip()
    assert result.returncode == 2, f"exit {result.returncode}: {result.stderr}"
    assert "\n" not in err, result.stderr
    assert f"{path}: readable by group or others (mode 0644); chmod 600 {path}" in err, err
    assert secret not in result.stdout + result.stderr


@pytest.mark.parametrize("command", ["sync", "plan"])
def test_an_access_token_file_others_can_read_is_refused_unless_insecure(
    gitlab, pat, make, cli, command
):
    prefix = make()
    path = _token_file(prefix)
    path.chmod(0o644)

    refused = cli(prefix, command)

    assert_refused_as_readable(refused, path, pat)
    assert gitlab.requests == []
    assert not prefix.output.exists()
    allowed = cli(prefix, command, "--insecure-permissions")
    assert allowed.returncode == 0, allowed.stderr


def test_a_registration_token_file_others_can_read_is_refused(gitlab, make, cli):
    token = gitlab.registration_token(runner_type="instance_type")
    prefix = make(access_token=None)
    path = prefix.root / "secrets" / "registration"
    path.parent.mkdir(mode=0o700)
    path.write_text(token + "\n")
    path.chmod(0o644)
    url = json.dumps(gitlab.url)
    prefix.write_template(f'[[client_configs]]\nurl = {url}\nregistration_token_file = "{path}"\n')
    result = cli(prefix)
    assert_refused_as_readable(result, path, token)
    assert gitlab.requests == []


def test_a_tls_key_file_others_can_read_is_refused(gitlab, pat, make, cli, pki):
    cert, key = pki["client"]
    key.chmod(0o644)
    cert.chmod(0o644)  # a certificate is public: only the key is refused
    prefix = make(client_extra=f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"\n')
    result = cli(prefix)
    assert_refused_as_readable(result, key, "PRIVATE KEY")
    assert gitlab.requests == []


def test_a_systemd_credential_is_read_with_the_mode_systemd_gives_it(
    gitlab, pat, make, cli, tmp_path
):
    """systemd decides the mode of $CREDENTIALS_DIRECTORY's files, not the operator."""
    prefix = make()
    url = json.dumps(gitlab.url)
    prefix.write_template(
        f'[[client_configs]]\nurl = {url}\npersonal_access_token_credential = "gitlab-pat"\n'
    )
    folder = tmp_path / "credentials"
    folder.mkdir()
    (folder / "gitlab-pat").write_text(pat + "\n")
    (folder / "gitlab-pat").chmod(0o444)
    result = cli(prefix, env={"CREDENTIALS_DIRECTORY": str(folder)})
    assert result.returncode == 0, result.stderr
    assert len(gitlab.runners()) == 1
