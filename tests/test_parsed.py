"""parsed.ParsedFiles: executor files are parsed once, remembered by the hash of their
bytes; a changed file is always parsed again."""

from __future__ import annotations

import json
import logging
import os

import pytest

from register_runner import api, parsed
from register_runner.errors import InputError
from register_runner.parsed import ParsedFiles

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


def test_a_steady_sync_parses_no_executor_file(make, counted):
    prefix = make(executors={"a": SHELL, "b": 'executor = "shell"\n'})
    assert api.sync(prefix.root).exit_status == 0
    assert counted() == 2
    assert api.sync(prefix.root).exit_status == 0
    assert counted() == 0
    assert sorted(json.loads(cache_file(prefix).read_text())["documents"]) != []


def test_a_change_that_keeps_size_and_time_is_still_seen(gitlab, make, counted):
    prefix = make(executors={"a": SHELL})
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
    prefix = make(executors={"a": SHELL, "b": 'executor = "shell"\n'})
    assert api.sync(prefix.root).exit_status == 0
    prefix.remove_executor("b")
    assert api.sync(prefix.root).exit_status == 0
    (document,) = json.loads(cache_file(prefix).read_text())["documents"].values()
    assert json.loads(document) == {"executor": "shell", "tags": ["linux", "aaa"]}


@pytest.mark.parametrize("damage", ["{", "[]", '{"version": 1, "documents": {"x": 1}}', ""])
def test_a_damaged_file_is_ignored_and_rewritten(make, counted, damage):
    prefix = make(executors={"a": SHELL})
    assert api.sync(prefix.root).exit_status == 0
    cache_file(prefix).write_text(damage)
    counted()
    assert api.sync(prefix.root).exit_status == 0
    assert counted() == 1
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


def test_a_file_with_a_toml_date_is_parsed_every_time(tmp_path, counted):
    text = 'executor = "shell"\nbuilt = 2024-01-31\n'
    file = tmp_path / "a.toml"
    for _ in range(2):
        remembered = ParsedFiles(tmp_path / "parsed.json")
        assert str(remembered.parse(file, text)["built"]) == "2024-01-31"
        remembered.save()
    assert counted() == 2


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
    prefix.write_executor("b", "executor = \n")
    assert cli(prefix).returncode == 2
    assert not cache_file(prefix).exists()


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
