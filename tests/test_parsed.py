"""parsed.ParsedFiles: executor files and the config read back are parsed once,
remembered by the hash of their text, with no string of theirs kept; a changed file is
always parsed again."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from datetime import timezone

import pytest
import tomli_w
from hypothesis import given
from hypothesis import strategies as st

from register_runner import api, parsed
from register_runner.errors import InputError
from register_runner.parsed import ParsedFiles

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

SHELL = 'executor = "shell"\ntags = ["linux", "aaa"]\n'


@pytest.fixture
def counted(monkeypatch):
    """How many times the parser ran since the last call."""
    calls = []
    real = parsed.read_toml
    monkeypatch.setattr(parsed, "read_toml", lambda *a: calls.append(a) or real(*a))

    def count() -> int:
        n = len(calls)
        calls.clear()
        return n

    return count


def cache_file(prefix):
    return parsed.parsed_path(prefix.root, prefix.instance)


def test_a_steady_sync_parses_nothing_and_keeps_no_string(gitlab, make, counted):
    prefix = make(executors={"a": SHELL, "b": 'executor = "shell"\n'})
    assert api.sync(prefix.root).exit_status == 0
    assert counted() == 3  # the executor files, and the config once written
    before = cache_file(prefix).stat()
    assert api.sync(prefix.root).exit_status == 0
    assert counted() == 0
    assert cache_file(prefix).stat().st_mtime_ns == before.st_mtime_ns  # not rewritten
    kept = cache_file(prefix).read_text()
    assert len(json.loads(kept)["documents"]) == 3
    strings = [r["token"] for r in prefix.runners()] + ["shell", "linux", gitlab.url]
    assert [string for string in strings if string in kept] == []


def test_a_change_that_keeps_size_and_time_is_still_seen(gitlab, make, counted):
    prefix = make(executors={"a": SHELL})
    for _ in range(2):
        assert api.sync(prefix.root).exit_status == 0
    counted()
    path = prefix.executor_dir / "a.toml"
    before = path.stat()
    path.write_text(SHELL.replace("aaa", "bbb"))  # same size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))

    assert api.sync(prefix.root).exit_status == 0

    assert counted() == 1
    (runner,) = gitlab.runners()
    assert "bbb" in runner.tag_list and "aaa" not in runner.tag_list


def test_only_what_this_run_read_is_kept(make):
    b = 'executor = "shell"\n'
    prefix = make(executors={"a": SHELL, "b": b})
    assert api.sync(prefix.root).exit_status == 0
    prefix.remove_executor("b")
    assert api.sync(prefix.root).exit_status == 0
    documents = json.loads(cache_file(prefix).read_text())["documents"]
    digest = {text: hashlib.sha256(text.encode()).hexdigest() for text in (SHELL, b)}
    assert digest[SHELL] in documents and digest[b] not in documents
    assert len(documents) == 2  # and the config as this run wrote it
    assert parsed.rebuild(json.loads(documents[digest[SHELL]]), SHELL) == tomllib.loads(SHELL)


@pytest.mark.parametrize("damage", ["{", "[]", '{"version": 2, "documents": {"x": 1}}', ""])
def test_a_damaged_file_is_ignored_and_rewritten(make, counted, damage):
    prefix = make(executors={"a": SHELL})
    assert api.sync(prefix.root).exit_status == 0
    assert api.sync(prefix.root).exit_status == 0
    cache_file(prefix).write_text(damage)
    counted()
    assert api.sync(prefix.root).exit_status == 0
    assert counted() == 2  # a.toml and the config
    assert json.loads(cache_file(prefix).read_text())["version"] == parsed.VERSION


def test_a_cached_document_that_is_not_a_table_is_parsed_again(tmp_path, counted):
    file = tmp_path / "a.toml"
    remembered = ParsedFiles(tmp_path / "parsed.json")
    assert remembered.parse(file, SHELL)["executor"] == "shell"
    remembered.save()
    data = json.loads((tmp_path / "parsed.json").read_text())
    data["documents"] = {k: "[1, 2]" for k in data["documents"]}
    (tmp_path / "parsed.json").write_text(json.dumps(data))
    counted()
    assert ParsedFiles(tmp_path / "parsed.json").parse(file, SHELL)["executor"] == "shell"
    assert counted() == 1


@pytest.mark.parametrize(
    "text",
    [
        'executor = "shell"\nbuilt = 2024-01-31\nat = 07:32:00.5\n',
        "when = [1979-05-27T07:32:00Z, 1979-05-27T00:32:00.999999-07:00, 1979-05-27T07:32:00]\n",
        "numbers = [0, -1, 1e300, inf, -0.0, 0x10, true, false]\nbig = 9223372036854775807\n",
        '[[runners]]\nname = "a"\n[runners.x]\ny = ""\n[[runners]]\nname = "a"\n',
        'paths = [\'C:\\\\a\', """\nline"""]\n',
    ],
)
def test_a_document_is_remembered_as_tomllib_made_it(tmp_path, counted, text):
    file = tmp_path / "a.toml"
    documents = []
    for _ in range(3):
        remembered = ParsedFiles(tmp_path / "parsed.json")
        documents.append(remembered.parse(file, text))
        remembered.save()
    assert documents == [tomllib.loads(text)] * 3
    assert counted() == 1


@pytest.mark.parametrize("text", ['path = "C:\\\\temp"\n', 'line = "a\\nb"\n', 'e = "\\u00e9"\n'])
def test_a_document_with_a_string_not_in_its_text_as_is_is_parsed_every_time(
    tmp_path, counted, text
):
    file = tmp_path / "a.toml"
    for _ in range(2):
        remembered = ParsedFiles(tmp_path / "parsed.json")
        assert remembered.parse(file, text) == tomllib.loads(text)
        remembered.save()
    assert counted() == 2
    assert not (tmp_path / "parsed.json").exists()


@pytest.mark.parametrize(
    "damage",
    [
        {"s": [10_000, 3]},  # past the end
        {"s": [0]},
        {"x": 1},
        {"o": {"a": {"s": [0, 1]}}, "a": []},
        {"o": {"d": {"d": "2024-13-01"}}},
        {"o": [1]},
        {"a": 5},
    ],
)
def test_a_damaged_skeleton_is_parsed_again(tmp_path, counted, damage):
    file = tmp_path / "a.toml"
    remembered = ParsedFiles(tmp_path / "parsed.json")
    remembered.parse(file, SHELL)
    remembered.save()
    data = json.loads((tmp_path / "parsed.json").read_text())
    data["documents"] = {k: json.dumps(damage) for k in data["documents"]}
    (tmp_path / "parsed.json").write_text(json.dumps(data))
    counted()
    assert ParsedFiles(tmp_path / "parsed.json").parse(file, SHELL) == tomllib.loads(SHELL)
    assert counted() == 1


@pytest.mark.parametrize("before", [SHELL, 'path = "C:\\\\temp"\n'], ids=["kept", "escaped"])
def test_a_file_this_run_replaced_is_remembered_as_it_is_now(tmp_path, counted, before):
    file = tmp_path / "config.toml"
    remembered = ParsedFiles(tmp_path / "parsed.json")
    remembered.parse(file, before)
    for text in ('concurrent = 1\n[[runners]]\nname = "a"\n', "concurrent = 2\n"):
        remembered.replaced(file, text)
    remembered.save()
    counted()
    again = ParsedFiles(tmp_path / "parsed.json")
    assert again.parse(file, "concurrent = 2\n") == {"concurrent": 2}
    assert counted() == 0
    assert len(json.loads((tmp_path / "parsed.json").read_text())["documents"]) == 1


def test_what_a_caller_changes_is_not_remembered(tmp_path):
    file = tmp_path / "a.toml"
    first = ParsedFiles(tmp_path / "parsed.json")
    first.parse(file, SHELL)["tags"].append("changed")
    first.save()
    for _ in range(2):
        again = ParsedFiles(tmp_path / "parsed.json")
        document = again.parse(file, SHELL)
        assert document["tags"] == ["linux", "aaa"]
        document["tags"].append("changed")


def test_plan_and_bad_input_keep_nothing(make, cli):
    prefix = make(executors={"a": SHELL})
    assert cli(prefix, "plan").returncode == 0
    assert not cache_file(prefix).exists()
    bad = 'executor = ""\n'  # valid TOML, bad input: its runner is held, a's goes on
    prefix.write_executor("b", bad)
    assert cli(prefix).returncode == 2
    kept = json.loads(cache_file(prefix).read_text())["documents"]
    assert hashlib.sha256(SHELL.encode()).hexdigest() in kept
    assert hashlib.sha256(bad.encode()).hexdigest() not in kept


def test_without_a_file_nothing_is_kept_and_errors_name_the_file(tmp_path):
    remembered = ParsedFiles(None)
    assert remembered.parse(tmp_path / "a.toml", SHELL)["executor"] == "shell"
    remembered.save()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match=r"b\.toml:1"):
        remembered.parse(tmp_path / "b.toml", "executor = \n")


def test_a_file_that_cannot_be_written_is_only_noted(tmp_path, caplog):
    remembered = ParsedFiles(tmp_path / "missing-folder" / "parsed.json")
    remembered.parse(tmp_path / "a.toml", SHELL)
    with caplog.at_level(logging.DEBUG, logger="register_runner.parsed"):
        remembered.save()
    assert [r.getMessage().split()[0] for r in caplog.records] == ["event=parsed_not_kept"]
    assert "missing-folder" in caplog.records[0].getMessage()


_scalars = (
    st.text(max_size=12)
    | st.integers()
    | st.floats(allow_nan=False)
    | st.booleans()
    | st.datetimes(timezones=st.none() | st.just(timezone.utc))
    | st.dates()
    | st.times()
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=8), _values, max_size=5))
def test_a_skeleton_rebuilds_what_tomllib_made(document):
    text = tomli_w.dumps(document)
    made = tomllib.loads(text)
    try:
        kept = json.loads(json.dumps(parsed.skeleton(made, text)))
    except parsed._NotInText:
        return  # a string with escapes: parsed every time
    assert parsed.rebuild(kept, text) == made
    assert _strings(kept) == []  # keys, numbers, dates and positions only


def _strings(kept) -> list[str]:
    """The strings in a skeleton that are values, not keys, dates or times."""
    if isinstance(kept, list):
        return [string for item in kept for string in _strings(item)]
    if not isinstance(kept, dict):
        return [kept] if isinstance(kept, str) else []
    ((kind, inner),) = kept.items()
    if kind in ("dt", "d", "t"):
        return []
    return _strings(list(inner.values()) if kind == "o" else inner)
