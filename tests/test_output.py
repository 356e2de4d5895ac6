"""config.<instance>.toml: rendering, rewriting only on change, taking over rotations."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pytest
import tomlkit

from register_runner.errors import InputError
from register_runner.model import Credentials, ExistingConfig, Globals
from register_runner.output import (
    read_config,
    render,
    runner_entry,
    template_document,
    write_config,
)
from register_runner.secret import Secret
from register_runner.tomlfile import read_toml

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


def template(text: str = "") -> Globals:
    path = Path("config.template.main.toml")
    return Globals(path, text, read_toml(path, text))


def entry(token="glrt-old", obtained=T0):
    return runner_entry(
        "h-main-x",
        "https://g",
        7,
        Credentials(Secret(token), obtained, None),
        None,
        {"executor": "shell", "docker": {"image": "x"}},
    )


def test_render_keeps_template_comments_and_writes_datetimes():
    globals_ = template("# keep me\nconcurrent = 2\n")
    text = render(globals_, [entry()])
    assert text.startswith("# keep me\nconcurrent = 2\n")
    assert "token_obtained_at = 2025-01-01T00:00:00Z" in text
    assert "token_expires_at = 0001-01-01T00:00:00Z" in text
    assert "[runners.docker]" in text
    assert "[[runners]]" not in tomlkit.dumps(template_document(globals_))


EMPTY = template()


def test_not_rewritten_when_only_the_formatting_differs(tmp_path):
    path = tmp_path / "config.main.toml"
    path.write_text(render(EMPTY, [entry()]).replace("\n", "\n\n").replace(" = ", "   =   "))
    before = path.stat().st_mtime_ns, path.read_bytes()
    assert write_config(read_config(path), EMPTY, lambda rotated: [entry()]) is False
    assert (path.stat().st_mtime_ns, path.read_bytes()) == before
    assert write_config(read_config(path), EMPTY, lambda rotated: [entry("glrt-other")])


def test_rotation_during_the_run_is_taken_over(tmp_path):
    path = tmp_path / "config.main.toml"
    path.write_text(render(EMPTY, [entry()]))
    existing = read_config(path)
    # gitlab-runner rotates the token after we read the file; runners are keyed by (url, id).
    path.write_text(render(EMPTY, [entry("glrt-new", T0.replace(year=2026))]))
    seen = []

    def build(rotated):
        seen.append(dict(rotated))
        credentials = rotated.get(("https://g", 7))
        token = credentials.token.reveal() if credentials else "glrt-old"
        return [{**entry(token), "limit": 2}]

    assert write_config(existing, EMPTY, build) is True
    written = read_config(path).entries[0]
    assert written["token"] == "glrt-new" and written["limit"] == 2
    assert seen[-1][("https://g", 7)].obtained_at == T0.replace(year=2026)


def test_written_0600_with_a_backup(tmp_path):
    path = tmp_path / "config.main.toml"
    path.write_text("concurrent = 1\n")
    os.chmod(path, 0o644)
    two = template("concurrent = 2\n")
    assert write_config(read_config(path), two, lambda rotated: [])
    assert path.stat().st_mode & 0o777 == 0o600
    backup = tmp_path / "config.main.toml.bak"
    assert backup.read_text() == "concurrent = 1\n" and backup.stat().st_mode & 0o777 == 0o600


def test_symlink_at_the_output_is_refused(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("concurrent = 1\n")
    link = tmp_path / "config.main.toml"
    link.symlink_to(target)
    with pytest.raises(InputError, match="symbolic link"):
        read_config(link)


def test_fresh_file(tmp_path):
    path = tmp_path / "config.main.toml"
    one = template("concurrent = 1\n")
    assert write_config(ExistingConfig(path), one, lambda rotated: [])
    assert path.read_text() == "concurrent = 1\n"
    assert not (tmp_path / "config.main.toml.bak").exists()


def test_comments_about_client_configs_leave_with_them():
    from register_runner.tomlfile import remove_with_comments

    document = tomlkit.parse(
        "# global\nconcurrent = 1\n[session_server]\n  session_timeout = 1800\n\n"
        '# How to reach GitLab.\n[[client_configs]]\nurl = "x"\n'
    )
    remove_with_comments(document, "client_configs")
    text = tomlkit.dumps(document)
    assert "# global" in text and "session_timeout = 1800" in text
    assert "GitLab" not in text and "client_configs" not in text
    assert tomlkit.parse(text).unwrap() == {
        "concurrent": 1,
        "session_server": {"session_timeout": 1800},
    }
