"""The fast read-only TOML parser (tomllib, or tomli before 3.11) against tomlkit's path:
the same verdict and, for a refused file, the same message with the same line, on every
TOML file the bad-input catalogue writes and on random damage done to good files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from register_runner.errors import InputError
from register_runner.testing.prefix import make_prefix
from register_runner.tomlfile import parse_toml, read_toml
from tests.test_bad_input import CASES, RUNNER_TOKEN, Ctx

URL = "http://127.0.0.1:9"
PAT = "glpat-AbCdEfGhIjKlMnOpQrSt"
GOOD = [
    'executor = "shell"\ntags = ["linux", "x"]\n[custom_build_dir]\n  enabled = true\n',
    '[[runners]]\nname = "a"\nurl = "http://h"\nexecutor = "docker"\n'
    '[runners.docker]\nimage = "alpine"\nvolumes = ["/cache", "/a:/b:ro"]\n',
    "concurrent = 4 # four\n\n[[client_configs]]\nurl = 'http://h'\n"
    'personal_access_token_file = """/x"""\n',
    'token_obtained_at = 2025-01-01T00:00:00Z\nlimits = { a = 1, b = [1.5, -2] }\nk."d.e" = 0x1f\n',
]


def outcome(parse: Any, path: Path, text: str) -> tuple[str, Any]:
    try:
        return "ok", parse(path, text)
    except InputError as error:
        return "refused", str(error)


def tomlkit_outcome(path: Path, text: str) -> tuple[str, Any]:
    return outcome(lambda p, t: parse_toml(p, t).unwrap(), path, text)


def assert_same(path: Path, text: str) -> None:
    assert outcome(read_toml, path, text) == tomlkit_outcome(path, text), text


TOML_CASES = [case for case in CASES if case.line is not None]


def test_the_catalogue_has_toml_cases():
    assert len(TOML_CASES) >= 10


@pytest.mark.parametrize("case", TOML_CASES, ids=[case.id for case in TOML_CASES])
def test_same_verdict_and_line_on_the_bad_input_catalogue(case, tmp_path):
    prefix = make_prefix(tmp_path / "p", URL, PAT)
    (prefix.root / "secrets").mkdir(exist_ok=True)
    (prefix.root / "config.main.toml").write_text(
        f'[[runners]]\nname = "a"\nurl = "{URL}"\ntoken = "{RUNNER_TOKEN}"\nexecutor = "shell"\n'
    )
    case.setup(Ctx(prefix, URL, PAT, tmp_path))
    files = sorted(prefix.root.rglob("*.toml"))
    refused = 0
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            refused += 1  # before any parser sees it
            continue
        assert_same(path, text)
        refused += tomlkit_outcome(path, text)[0] == "refused"
    assert refused, f"{case.id}: no TOML file was refused: {files}"


DAMAGE = st.sampled_from(["", "[", "]", "{", "}", '"', "'", "=", "\n", "#", ",", ".", " = 1\n"])


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    good=st.sampled_from(GOOD),
    where=st.floats(min_value=0, max_value=1),
    cut=st.integers(min_value=0, max_value=3),
    insert=DAMAGE,
    repeat_line=st.booleans(),
)
def test_same_verdict_and_line_on_damaged_files(good, where, cut, insert, repeat_line):
    at = int(where * len(good))
    text = good[:at] + insert + good[at + cut :]
    if repeat_line:
        lines = text.splitlines(keepends=True)
        line = lines[int(where * (len(lines) - 1))]
        text += line if line.endswith("\n") else "\n" + line
    assert_same(Path("/p/main/x.toml"), text)
