"""Migrating from gitlab-runner-auth, as units: its tags (flattening, plugin forms, module
names, object schemas, env_tags), adoption of its config entries, its leftovers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from register_runner import inputs, migrate, tags
from register_runner.errors import InputError, TransientError
from register_runner.gitlab import Issued
from register_runner.model import Executor, Identity, Scope, Verdict
from register_runner.reconcile import attribute_changes
from register_runner.secret import Secret
from register_runner.tags import Capture, TagPolicy, flatten_values, load_capture

URL = "https://gitlab.example.com"
IDENTITY = Identity("build01", "main", "s_0123456789ab")
CLIENT = f'[[client_configs]]\nurl = "{URL}"\npersonal_access_token = "glpat-inline"\n'
LLNL_SCHEMA = {
    "$id": "https://example.com/tag_schema.json",
    "$schema": "http://json-schema.org/schema/",
    "title": "tag_schema",
    "type": "object",
    "properties": {
        "hostname": {"type": "string"},
        "os": {"type": "string", "enum": ["rhel", "debian"]},
        "executor_type": {"type": "string", "enum": ["shell", "custom"]},
        "env": {"type": "array"},
        "custom": {"type": "array"},
    },
    "required": ["hostname", "instance", "executor_type"],
    "custom-name": "custom",
}


def llnl_capture(instance, executor_type, env=None, tag_schema=None):
    properties = {"architecture": "zen2", "micro-architecture": ["zen", "x86_64"], "custom": []}
    for name in env or []:
        if name in tag_schema["properties"]["os"]["enum"]:
            properties["os"] = name
        else:
            properties["custom"].append(tag_schema["custom-name"] + "_" + name)
    return properties


def policy(**options) -> TagPolicy:
    options.setdefault("hostname", "node12.cluster.example")
    return TagPolicy(**options)


# -- gitlab-runner-auth's tags ------------------------------------------------------------


def test_flatten_values_as_gitlab_runner_auth_does():
    nested = {"a": "x", "b": ["y", {"c": "z", "d": ["w"]}], "e": {"f": "v"}}
    assert flatten_values(nested) == ["x", "y", "z", "w", "v"]
    assert flatten_values("s") == ["s"] and flatten_values([]) == []


def test_gitlab_runner_auth_mode_gives_exactly_its_tag_set():
    made = policy(
        gitlab_runner_auth=True,
        capture=Capture("site", llnl_capture),
        schema=LLNL_SCHEMA,
        environ={"SITE_OS": "debian", "RACK": "r7, ib"},
    )
    result = made.tags_for("shell.toml", "shell", ["SITE_OS", "RACK", "UNSET", "rhel"], None)
    assert result == sorted(
        {
            "node12.cluster.example",
            "shell",
            "main",
            "debian",
            "r7",
            "ib",
            "zen2",
            "zen",
            "x86_64",
            "custom_SITE_OS",
            "custom_RACK",
            "custom_UNSET",
            "rhel",
        }
    )


def test_captured_properties_override_its_own_as_dict_update_does():
    made = policy(
        gitlab_runner_auth=True, capture=Capture("site", lambda i, t, env, tag_schema: {"env": []})
    )
    assert made.tags_for("x.toml", "shell", ["A"], None) == sorted(
        {"node12.cluster.example", "shell", "main"}
    )


def test_without_the_mode_only_env_tags_and_captured_values_are_added():
    made = policy(capture=Capture("site", llnl_capture), environ={"A": "a"})
    assert made.tags_for("x.toml", "shell", None, ["own"]) == ["own", "x86_64", "zen", "zen2"]
    assert policy(environ={"A": "a"}).tags_for("x.toml", "shell", ["A", "B"], None) == ["a"]
    assert policy().tags_for("x.toml", "shell", None, None) is None
    assert policy().tags_for("x.toml", "shell", None, []) == []


def test_a_captured_value_that_is_not_a_string_is_refused():
    made = policy(gitlab_runner_auth=True, capture=Capture("site", lambda *a, **k: {"cores": 64}))
    with pytest.raises(InputError, match="64 is a int"):
        made.tags_for("x.toml", "shell", None, None)


def test_the_object_schema_checks_the_properties():
    made = policy(gitlab_runner_auth=True, schema=LLNL_SCHEMA, schema_path=Path("s.json"))
    assert "docker" not in made.tags_for("x.toml", "custom", None, None)
    with pytest.raises(InputError, match="executor_type: 'docker' is not one of"):
        made.tags_for("x.toml", "docker", None, None)


def test_the_plugin_is_called_once_per_executor_type_and_env_tags():
    calls = []

    def capture(instance, executor_type, env=None, tag_schema=None):
        calls.append((instance, executor_type, env, tag_schema))
        return {}

    made = policy(capture=Capture("site", capture), instance="gpu")
    for executor_type, env in [("shell", None), ("shell", None), ("shell", ["A"]), ("x", None)]:
        made.tags_for("x.toml", executor_type, env, None)
    assert calls == [
        ("gpu", "shell", None, None),
        ("gpu", "shell", ["A"], None),
        ("gpu", "x", None, None),
    ]


def test_the_no_argument_form_still_works_and_is_called_once():
    calls = []
    made = policy(capture=Capture("site", lambda: calls.append(1) or ["rack-7", "ib"]))
    assert made.tags_for("a.toml", "shell", None, None) == ["ib", "rack-7"]
    assert made.tags_for("b.toml", "custom", None, None) == ["ib", "rack-7"]
    assert calls == [1]


@pytest.mark.parametrize(
    ("function", "message"),
    [
        (lambda a, b, c, d, e: {}, "must take"),
        (lambda *a, **k: "tags", "must return a dict"),
        (lambda *a, **k: [1], "must return a dict"),
        (lambda *a, **k: 1 / 0, "ZeroDivisionError"),
    ],
)
def test_a_broken_plugin_is_bad_input(function, message):
    with pytest.raises(InputError, match=message):
        policy(capture=Capture("site", function)).tags_for("x.toml", "shell", None, None)


def test_capture_tags_by_module_name_from_the_python_path(tmp_path, monkeypatch):
    (tmp_path / "site_capture_unit.py").write_text(
        "def capture_tags(instance, executor_type, env=None, tag_schema=None):\n"
        "    return {'where': instance + '-' + executor_type}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    capture = load_capture("site_capture_unit")
    assert capture.takes_arguments and capture.source == str(tmp_path / "site_capture_unit.py")
    assert capture("main", "shell", None, None) == {"where": "main-shell"}
    assert "site_capture_unit" not in sys.modules
    assert tags.capture_origin("site_capture_unit") == tmp_path / "site_capture_unit.py"


@pytest.mark.parametrize("name", ["no_such_capture_module", "no_such_package.module"])
def test_an_unknown_module_is_bad_input_with_a_hint(name):
    with pytest.raises(InputError, match=r"PYTHONPATH|cannot import"):
        load_capture(name)


def test_capture_tags_by_file(tmp_path):
    module = tmp_path / "tags.py"
    module.write_text("def capture_tags():\n    return ['a']\n")
    assert not load_capture(str(module)).takes_arguments
    with pytest.raises(InputError, match="needs a Python file"):
        load_capture(str(tmp_path / "missing.py"))


def test_gitlab_runner_auths_schema_file_is_accepted(tmp_path):
    anchor = Path(__file__).resolve().parents[1].parent / "shared/anchors/gitlab-runner-auth"
    path = tmp_path / "tag_schema.json"
    source = anchor / "tag_schema.json"
    path.write_text(source.read_text() if source.is_file() else json.dumps(LLNL_SCHEMA))
    assert tags.load_schema(path)["custom-name"] == "custom"
    path.write_text('{"type": "object", "properties": {"a": {"type": "strng"}}}')
    with pytest.raises(InputError, match="'strng' is not a JSON Schema type"):
        tags.load_schema(path)


# -- the template and executor files ------------------------------------------------------


def load(tmp_path: Path, executors: dict, settings: str = "", environ=None):
    (tmp_path / "config.template.main.toml").write_text(CLIENT + settings)
    folder = tmp_path / "main"
    folder.mkdir(exist_ok=True)
    for name, text in executors.items():
        (folder / name).write_text(text)
    return inputs.load(tmp_path, IDENTITY, environ=environ or {})


def test_identity_tags_gitlab_runner_auth_from_the_template(tmp_path, monkeypatch):
    monkeypatch.setattr(tags, "legacy_hostname", lambda: "node12.example")
    loaded = load(
        tmp_path,
        {"a.toml": 'executor = "shell"\nenv_tags = ["OS"]\n'},
        '[register_runner]\nidentity_tags = "gitlab-runner-auth"\n',
        environ={"OS": "rhel"},
    )
    (executor,) = loaded.executors
    assert executor.attributes["tag_list"] == ["main", "node12.example", "rhel", "shell"]
    assert executor.attributes["run_untagged"] is False
    assert "env_tags" not in executor.settings


def test_the_template_names_the_plugin_and_schema_for_every_command(tmp_path):
    (tmp_path / "site.py").write_text("def capture_tags():\n    return ['rack-7']\n")
    (tmp_path / "schema.json").write_text('{"type": "array", "maxItems": 1}')
    settings = '[register_runner]\ncapture_tags = "site.py"\ntag_schema = "schema.json"\n'
    (executor,) = load(tmp_path, {"a.toml": 'executor = "shell"\n'}, settings).executors
    assert executor.attributes["tag_list"] == ["rack-7"]
    with pytest.raises(InputError, match="do not match --tag-schema"):
        load(tmp_path, {"a.toml": 'executor = "shell"\ntags = ["x"]\n'}, settings)


def test_an_option_that_differs_from_the_template_is_refused(tmp_path, monkeypatch):
    (tmp_path / "plugin_unit.py").write_text("def capture_tags():\n    return ['rack-7']\n")
    (tmp_path / "config.template.main.toml").write_text(
        CLIENT + '[register_runner]\ncapture_tags = "plugin_unit.py"\n'
    )
    (tmp_path / "main").mkdir()
    same = inputs.load(tmp_path, IDENTITY, {}, capture_tags_file=str(tmp_path / "plugin_unit.py"))
    assert same.tag_policy.capture is not None
    monkeypatch.syspath_prepend(str(tmp_path))
    by_name = inputs.load(tmp_path, IDENTITY, {}, capture_tags_file="plugin_unit")
    assert by_name.tag_policy.capture is not None
    with pytest.raises(InputError, match="give one of them"):
        inputs.load(tmp_path, IDENTITY, {}, capture_tags_file="json")


@pytest.mark.parametrize(
    ("settings", "executor", "message"),
    [
        ('[register_runner]\nidentity_tags = "llnl"\n', 'executor = "shell"\n', "identity_tags"),
        ("", 'executor = "shell"\nenv_tags = "OS"\n', "env_tags must be a list"),
        ("", 'executor = "shell"\nenv_tags = [1]\n', "env_tags must be a list"),
        ("[register_runner]\ncapture_tags = 1\n", 'executor = "shell"\n', "non-empty string"),
    ],
)
def test_bad_settings_are_refused(tmp_path, settings, executor, message):
    with pytest.raises(InputError, match=message):
        load(tmp_path, {"a.toml": executor}, settings)


# -- adoption -----------------------------------------------------------------------------


def executor(stem: str, executor_type: str, url: str = URL) -> Executor:
    return Executor(
        stem, f"/p/main/{stem}.toml", url, Scope(), stem, {}, {"executor": executor_type}
    )


def entry(executor_type: str, host: str = "node12", **extra) -> dict:
    return {
        "url": URL,
        "token": f"glrt-{executor_type}",
        "executor": executor_type,
        "description": f"{host} main {executor_type} Runner",
        "tags": ["x"],
        **extra,
    }


def test_legacy_entries_match_the_executor_file_of_their_type():
    entries = [
        entry("shell"),
        entry("custom"),
        entry("docker", host="other"),
        entry("ssh", name="n"),
    ]
    executors = [executor("fast", "shell"), executor("nspawn", "custom"), executor("d", "docker")]
    matches, warnings = migrate.legacy_matches(entries, executors, "node12", "main")
    assert matches == {"fast": entries[0], "nspawn": entries[1]}
    assert warnings == []


def test_ambiguous_legacy_entries_are_not_adopted_and_said_so():
    executors = [
        executor("a", "shell"),
        executor("b", "shell"),
        executor("c", "custom", "http://x"),
    ]
    entries = [entry("shell"), entry("custom"), entry("docker")]
    matches, warnings = migrate.legacy_matches(entries, executors, "node12", "main")
    assert matches == {}
    assert [w.split(": ")[1].split(" ")[0] for w in warnings] == ["2", "no", "no"]
    matches, warnings = migrate.legacy_matches(
        [entry("shell"), entry("shell")], [executor("a", "shell")], "node12", "main"
    )
    assert matches == {} and "2 config entries" in warnings[0]


def test_an_entry_for_a_file_that_has_a_runner_is_named_so_and_tags_compare_as_a_set():
    matches, warnings = migrate.legacy_matches(
        [entry("shell")], [executor("fast", "shell")], "node12", "main", taken={"fast"}
    )
    assert matches == {}
    assert "fast.toml already has a runner" in warnings[0] and "no executor file" not in warnings[0]
    same = attribute_changes({"tag_list": ["b", "a"]}, {"tag_list": ["a", "b", "a"]})
    assert same == ()
    assert attribute_changes({"tag_list": ["a"]}, {}) == (("tag_list", None, ["a"]),)


def test_adopt_learns_the_id_from_verify_and_records_what_gitlab_holds_as_applied():
    executors = {"fast": executor("fast", "shell"), "n": executor("n", "custom")}
    matches = {"fast": entry("shell"), "n": entry("custom", id=17)}
    asked = []

    def verify(url, token):
        asked.append((url, token.reveal()))
        return Verdict.VALID, Issued(42, token, None)

    def read(url, runner_id):
        return {"tag_list": ["b", "a"]} if runner_id == 42 else {}

    adopted = migrate.adopt(matches, executors, verify, read)
    assert asked == [(URL, "glrt-shell")]
    assert {stem: r.id for stem, r in adopted.items()} == {"fast": 42, "n": 17}
    assert adopted["fast"].applied == {"tag_list": ["b", "a"]} and adopted["n"].applied == {}
    assert adopted["fast"].token.reveal() == "glrt-shell"


def test_adopt_skips_a_rejected_token_and_stops_when_gitlab_cannot_say():
    executors = {"fast": executor("fast", "shell")}
    matches = {"fast": entry("shell")}
    unread = lambda url, runner_id: {}  # noqa: E731
    rejected = migrate.adopt(matches, executors, lambda u, t: (Verdict.INVALID, None), unread)
    assert rejected == {}
    for answer in [(Verdict.UNKNOWN, None), (Verdict.VALID, None)]:
        with pytest.raises(TransientError, match="cannot learn the id"):
            migrate.adopt(matches, executors, lambda u, t, a=answer: a, unread)


def test_legacy_leftovers_are_this_hosts_and_instances_and_not_in_use():
    listed = [
        {"id": 5, "description": "node12 main shell Runner"},
        {"id": 3, "description": "node12 main docker Runner"},
        {"id": 4, "description": "node12 main shell Runner"},
        {"id": 6, "description": "node1 main shell Runner"},
        {"id": 7, "description": "node12 gpu shell Runner"},
        {"id": 8, "description": "node12 main shell Runner (copy)"},
        {"id": 9, "description": None},
    ]
    found = migrate.legacy_leftovers(listed, "node12", "main", known_ids=[4])
    assert [r["id"] for r in found] == [3, 5]


def test_a_host_name_with_regex_characters_is_taken_literally():
    assert migrate.is_legacy_description("a.b main shell Runner", "a.b", "main")
    assert not migrate.is_legacy_description("axb main shell Runner", "a.b", "main")


def test_a_token_is_never_in_a_warning():
    secret = "glrt-very-secret-token"
    _, warnings = migrate.legacy_matches(
        [dict(entry("shell"), token=secret)],
        [executor("a", "shell"), executor("b", "shell")],
        "node12",
        "main",
    )
    assert warnings and all(secret not in w for w in warnings)
    assert Secret(secret).masked != secret
