"""Runners that are not gitlab-runner, the edges: bad ``credentials_file`` input ends with
exit 2 naming the executor file and line, and changes nothing; a GitLab that cannot be
reached leaves the file alone; the example units in contrib/systemd/custom-runner are
valid and fit together."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SHELL = 'executor = "shell"\n'
UNITS = Path(__file__).resolve().parent.parent / "contrib" / "systemd" / "custom-runner"
ANALYZE = shutil.which("systemd-analyze")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Where a custom runner's unit wants its credentials: not writable by others."""
    path = tmp_path / "custom-runner"
    path.mkdir(mode=0o700)
    return path


def custom(path: Path, extra: str = 'tags = ["rust", "gpu"]\n') -> str:
    return f'credentials_file = "{path}"\n{extra}'


def mutations(gitlab) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in gitlab.mutating_requests()]


# -- bad input: exit 2 naming the file, nothing changed ------------------------------------


def _bad_relative(folder: Path) -> tuple[str, str, int]:
    return 'credentials_file = "custom-runner/rs.env"\n', "absolute", 2


def _bad_inside_executor_folder(folder: Path) -> tuple[str, str, int]:
    return "", "executor folder", 2  # the path is filled in by the test: it needs the prefix


def _bad_both(folder: Path) -> tuple[str, str, int]:
    return f'executor = "shell"\ncredentials_file = "{folder}/rs.env"\n', "not both", 2


def _bad_symlink(folder: Path) -> tuple[str, str, int]:
    (folder / "target").write_text("# written by register-runner\n")
    (folder / "rs.env").symlink_to(folder / "target")
    return custom(folder / "rs.env"), "symbolic link", 2


def _bad_group_writable(folder: Path) -> tuple[str, str, int]:
    folder.chmod(0o770)
    return custom(folder / "rs.env"), "writable by group or others", 2


def _bad_foreign_file(folder: Path) -> tuple[str, str, int]:
    (folder / "rs.env").write_text("RUNNER_TOKEN=mine\n")
    return custom(folder / "rs.env"), "not written by register-runner", 2


def _bad_owner(folder: Path) -> tuple[str, str, int]:
    return custom(folder / "rs.env", 'credentials_owner = "no-such-user-here"\n'), "no user", 3


def _bad_missing_folder(folder: Path) -> tuple[str, str, int]:
    return custom(folder / "absent" / "rs.env"), "no such folder", 2


BAD = [
    _bad_relative,
    _bad_inside_executor_folder,
    _bad_both,
    _bad_symlink,
    _bad_group_writable,
    _bad_foreign_file,
    _bad_owner,
    _bad_missing_folder,
]


@pytest.mark.parametrize("bad", BAD, ids=lambda f: f.__name__[5:])
def test_bad_input_exits_2_naming_the_file_and_changes_nothing(gitlab, make, cli, folder, bad):
    prefix = make(executors={"shell": SHELL})
    assert cli(prefix).returncode == 0
    text, problem, line = bad(folder)
    if not text:
        text = custom(prefix.executor_dir / "rs.env")
    # The message names the line of the key (after this comment).
    executor = prefix.write_executor("rs", "# a custom runner\n" + text)
    before = (prefix.snapshot(), {p.name: p.read_bytes() for p in folder.iterdir()})
    gitlab.clear_requests()

    result = cli(prefix)

    assert result.returncode == 2, result.stderr
    assert f"{executor}:{line}: " in result.stderr
    assert problem in result.stderr
    assert mutations(gitlab) == []
    assert (prefix.snapshot(), {p.name: p.read_bytes() for p in folder.iterdir()}) == before


def test_two_executors_cannot_share_a_credentials_file(gitlab, make, cli, folder):
    prefix = make(executors={"a": custom(folder / "x.env"), "b": custom(folder / "x.env")})

    result = cli(prefix)

    # The first file (by name) keeps it; the second is bad input and its runner is held.
    assert result.returncode == 2
    b, a = prefix.executor_dir / "b.toml", prefix.executor_dir / "a.toml"
    assert f"{b}: credentials_file {folder / 'x.env'} is also used by {a}" in result.stderr
    assert mutations(gitlab) == [("POST", "/user/runners")]
    assert "executor=a " in gitlab.runners()[0].maintenance_note
    assert list(folder.iterdir()) == [folder / "x.env"]


def test_the_line_of_a_bad_key_is_named(gitlab, make, cli, folder):
    prefix = make(executors={"rs": 'tags = ["a"]\n\ncredentials_file = "relative.env"\n'})

    result = cli(prefix)

    assert result.returncode == 2
    assert f"{prefix.executor_dir / 'rs.toml'}:3:" in result.stderr


# -- GitLab failing -----------------------------------------------------------------------


def test_gitlab_down_keeps_the_file_and_the_runner_starts(gitlab, make, cli, folder):
    credentials = folder / "rs.env"
    prefix = make(executors={"rs": custom(credentials)})
    assert cli(prefix).returncode == 0
    before = (credentials.read_bytes(), credentials.stat().st_mtime_ns)
    gitlab.down()

    result = cli(prefix, "sync", "--deadline", "1")

    assert result.returncode == 0, result.stderr  # its credentials are in place
    assert (credentials.read_bytes(), credentials.stat().st_mtime_ns) == before
    assert cli(prefix, "sync", "--deadline", "1", "--strict").returncode == 3


def test_a_new_custom_runner_with_gitlab_down_exits_3(gitlab, make, cli, folder):
    credentials = folder / "rs.env"
    prefix = make(executors={"rs": custom(credentials)})
    gitlab.down()

    assert cli(prefix, "sync", "--deadline", "1").returncode == 3
    assert not credentials.exists()


# -- the example units ----------------------------------------------------------------------


def _settings(unit: Path) -> dict[str, str]:
    return dict(
        line.split("=", 1)
        for line in unit.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )


def test_the_path_unit_restarts_the_runner_when_the_file_it_reads_changes():
    runner = _settings(UNITS / "custom-runner.service")
    path = _settings(UNITS / "custom-runner-credentials.path")
    restart = _settings(UNITS / path["Unit"])

    assert path["PathChanged"] == runner["EnvironmentFile"].lstrip("-")
    assert restart["ExecStart"].split()[1:] == ["try-restart", "custom-runner.service"]
    assert "register-runner sync" in runner["ExecStartPre"]


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
def test_the_example_units_pass_systemd_analyze_verify(tmp_path):
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for program in ("register-runner", "custom-runner"):
        (stubs / program).write_text("#!/bin/sh\n")
        (stubs / program).chmod(0o755)
    units = tmp_path / "units"
    units.mkdir()
    for unit in sorted(UNITS.iterdir()):
        text = unit.read_text().replace("/usr/local/bin/", f"{stubs}/")
        (units / unit.name).write_text(text)
    for unit in sorted(units.iterdir()):
        result = subprocess.run(
            [ANALYZE, "verify", "--man=no", str(unit)], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        assert unit.name not in result.stderr
