"""Host-wide tags, identity tags, --capture-tags and --tag-schema, end to end; the schema
subset as a unit."""

from __future__ import annotations

import json
import socket

import pytest

from register_runner.tags import identity_tags, violation

SHELL = 'executor = "shell"\ntags = ["linux"]\n'
SETTINGS = '\n[register_runner]\ntags = ["site-a"]\nidentity_tags = true\n'
# The shape of gitlab-runner-auth's tag_schema.json: an object of the runner's properties,
# with annotations (and its "custom-name") that are ignored.
OBJECT_SCHEMA = {
    "$schema": "http://json-schema.org/schema/",
    "title": "tag_schema",
    "type": "object",
    "properties": {
        "hostname": {"type": "string"},
        "executor_type": {"type": "string", "enum": ["shell", "custom"]},
    },
    "required": ["hostname", "instance", "executor_type"],
    "custom-name": "custom",
}


def test_template_tags_and_identity_tags_reach_every_runner(gitlab, make, cli):
    prefix = make(
        globals_text="concurrent = 2\n" + SETTINGS,
        executors={"a": SHELL, "b": 'executor = "shell"\n'},
    )

    assert cli(prefix).returncode == 0

    host = socket.gethostname().split(".")[0]
    expected = {"site-a", "main", host, *identity_tags(host, "main")}
    by_stem = {r.description.rsplit("-", 1)[1]: r for r in gitlab.runners()}
    assert set(by_stem["a"].tag_list) == expected | {"linux"}
    assert set(by_stem["b"].tag_list) == expected
    assert "register_runner" not in prefix.output.read_text()
    assert prefix.output_document()["concurrent"] == 2


def test_identity_tags():
    assert identity_tags("node12", "main") == ["node12", "node", "main"]
    assert identity_tags("login-3", "gpu") == ["login-3", "login", "gpu"]


def test_capture_tags_module(gitlab, prefix, cli, tmp_path):
    module = tmp_path / "site_tags.py"
    module.write_text("def capture_tags():\n    return ['rack-7', 'ib']\n")
    assert cli(prefix, "sync", "--capture-tags", str(module)).returncode == 0
    assert sorted(gitlab.runners()[0].tag_list) == ["ib", "linux", "rack-7"]


@pytest.mark.parametrize(
    "source",
    [
        "def capture_tags():\n    return 'not a list'\n",
        "def capture_tags():\n    raise RuntimeError('no inventory')\n",
        "x = 1\n",
        "def capture_tags(:\n",
    ],
)
def test_broken_capture_tags_module_is_bad_input(gitlab, prefix, cli, tmp_path, source):
    module = tmp_path / "site_tags.py"
    module.write_text(source)
    result = cli(prefix, "sync", "--capture-tags", str(module))
    assert result.returncode == 2 and str(module) in result.stderr
    assert result.stderr.count("\n") == 1 and gitlab.requests == []


def test_tags_against_the_schema_hold_the_runner_until_they_match(gitlab, prefix, cli, tmp_path):
    schema = tmp_path / "tags.json"
    schema.write_text(
        json.dumps(
            {"type": "array", "minItems": 2, "items": {"type": "string", "pattern": "^[a-z0-9-]+$"}}
        )
    )

    refused = cli(prefix, "sync", "--tag-schema", str(schema))

    assert refused.returncode == 2
    assert "shell.toml" in refused.stderr and "fewer than 2 items" in refused.stderr
    assert gitlab.mutating_requests() == []
    prefix.write_executor("shell", 'executor = "shell"\ntags = ["linux", "x86-64"]\n')
    assert cli(prefix, "sync", "--tag-schema", str(schema)).returncode == 0
    assert len(gitlab.runners()) == 1


def test_unsupported_schema_keyword_is_refused(gitlab, prefix, cli, tmp_path):
    schema = tmp_path / "tags.json"
    schema.write_text(json.dumps({"type": "array", "prefixItems": []}))
    result = cli(prefix, "plan", "--tag-schema", str(schema))
    assert result.returncode == 2 and "prefixItems" in result.stderr


@pytest.mark.parametrize(
    ("schema", "value", "ok"),
    [
        ({"type": "array"}, ["a"], True),
        ({"type": "array"}, "a", False),
        ({"items": {"enum": ["a", "b"]}}, ["a", "b"], True),
        ({"items": {"enum": ["a", "b"]}}, ["c"], False),
        ({"contains": {"const": "gpu"}}, ["x", "gpu"], True),
        ({"contains": {"const": "gpu"}}, ["x"], False),
        ({"maxItems": 1}, ["a", "b"], False),
        ({"uniqueItems": True}, ["a", "a"], False),
        ({"items": {"minLength": 2, "maxLength": 3}}, ["ab"], True),
        ({"items": {"maxLength": 3}}, ["abcd"], False),
        ({"anyOf": [{"contains": {"const": "a"}}, {"contains": {"const": "b"}}]}, ["b"], True),
        ({"allOf": [{"contains": {"const": "a"}}, {"contains": {"const": "b"}}]}, ["b"], False),
        ({"not": {"contains": {"const": "root"}}}, ["root"], False),
        (OBJECT_SCHEMA, {"hostname": "h", "instance": "main", "executor_type": "shell"}, True),
        (OBJECT_SCHEMA, {"hostname": "h", "executor_type": "shell"}, False),
        (OBJECT_SCHEMA, {"hostname": 1, "instance": "main", "executor_type": "shell"}, False),
        (OBJECT_SCHEMA, {"hostname": "h", "instance": "main", "executor_type": "docker"}, False),
        (OBJECT_SCHEMA, {"hostname": "h", "instance": "m", "executor_type": "shell", "x": 1}, True),
        ({"additionalProperties": False, "properties": {"a": {}}}, {"a": 1, "b": 2}, False),
        ({"additionalProperties": {"type": "string"}}, {"b": "s"}, True),
        ({"additionalProperties": {"type": "string"}}, {"b": 2}, False),
        ({"type": ["string", "null"]}, None, True),
        ({"type": ["string", "null"]}, 3, False),
        ({"type": "number"}, 1.5, True),
        ({"type": "integer"}, True, False),
    ],
)
def test_schema_subset(schema, value, ok):
    assert (violation(schema, value) is None) is ok


def test_a_capture_tags_program_others_can_change_is_refused(gitlab, prefix, cli, tmp_path):
    module = tmp_path / "site_tags.py"
    module.write_text("def capture_tags():\n    return ['rack-7']\n")
    module.chmod(0o666)
    refused = cli(prefix, "sync", "--capture-tags", str(module))
    assert refused.returncode == 2 and "writable by group or others" in refused.stderr
    assert gitlab.requests == []
    accepted = cli(prefix, "sync", "--capture-tags", str(module), "--insecure-permissions")
    assert accepted.returncode == 0 and gitlab.runners()[0].tag_list == ["linux", "rack-7"]
