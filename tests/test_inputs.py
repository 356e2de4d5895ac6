"""inputs.load: what a valid prefix turns into (the bad ones are in test_bad_input.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomlkit

from register_runner import inputs
from register_runner.errors import InputError
from register_runner.inputs import Identity
from register_runner.model import Scope

IDENTITY = Identity("build01", "main", "s_0123456789ab")
URL = "https://gitlab.example.com"
OTHER = "https://gitlab.other.example"
CLIENT = f'[[client_configs]]\nurl = "{URL}"\npersonal_access_token = "glpat-inline"\n'


def load(tmp_path: Path, executors: dict, template: str = CLIENT, environ=None):
    (tmp_path / "config.template.main.toml").write_text(template)
    folder = tmp_path / "main"
    folder.mkdir(exist_ok=True)
    for name, text in executors.items():
        (folder / name).write_text(text)
    return inputs.load(tmp_path, IDENTITY, environ=environ or {})


def one(tmp_path: Path, text: str, **options):
    (executor,) = load(tmp_path, {"x.toml": text}, **options).executors
    return executor


def test_default_name_and_description_come_from_host_instance_and_stem(tmp_path):
    loaded = load(
        tmp_path, {"shell.toml": 'executor = "shell"\n', "nspawn.toml": 'executor = "custom"\n'}
    )
    assert [(e.stem, e.name, e.attributes["description"]) for e in loaded.executors] == [
        ("nspawn", "build01-main-nspawn", "build01-main-nspawn"),
        ("shell", "build01-main-shell", "build01-main-shell"),
    ]
    assert all(
        "name" not in e.settings and "description" not in e.settings for e in loaded.executors
    )


def test_an_explicit_name_is_the_default_description(tmp_path):
    executor = one(tmp_path, 'executor = "shell"\nname = "fast-shell"\n')
    assert executor.name == "fast-shell"
    assert executor.attributes["description"] == "fast-shell"
    executor = one(tmp_path, 'executor = "shell"\nname = "n"\ndescription = "d"\n')
    assert (executor.name, executor.attributes["description"]) == ("n", "d")


def test_the_marker_is_in_the_maintenance_note(tmp_path):
    marker = "[register-runner host=build01 instance=main executor=x system_id=s_0123456789ab]"
    assert IDENTITY.marker("x") == marker
    assert one(tmp_path, 'executor = "shell"\n').attributes["maintenance_note"] == marker
    noted = one(tmp_path, 'executor = "shell"\nmaintenance_note = "ask ops"\n')
    assert noted.attributes["maintenance_note"] == f"ask ops\n{marker}"
    assert "maintenance_note" not in noted.settings


@pytest.mark.parametrize(
    ("text", "untagged", "tags"),
    [
        ('executor = "shell"\n', True, None),
        ('executor = "shell"\ntags = []\n', True, []),
        ('executor = "shell"\ntags = ["linux"]\n', False, ["linux"]),
        ('executor = "shell"\ntag_list = ["b", "a"]\n', False, ["a", "b"]),
        ('executor = "shell"\ntags = ["linux"]\nrun_untagged = true\n', True, ["linux"]),
        ('executor = "shell"\ntags = "a, b"\n', False, ["a", "b"]),
        ('executor = "shell"\ntags = "b,a, ,a"\n', False, ["a", "b"]),
        ('executor = "shell"\ntags = [" x ", "x", ""]\n', False, ["x"]),
    ],
)
def test_tags_and_the_run_untagged_default(tmp_path, text, untagged, tags):
    executor = one(tmp_path, text)
    assert executor.attributes["run_untagged"] is untagged
    assert executor.attributes.get("tag_list") == tags
    assert not {"tags", "tag_list", "run_untagged"} & set(executor.settings)


def test_registration_attributes_are_not_settings(tmp_path):
    executor = one(
        tmp_path,
        'executor = "shell"\nlocked = true\npaused = false\naccess_level = "ref_protected"\n'
        "maximum_timeout = 3600\nlimit = 2\n",
    )
    assert executor.attributes["locked"] is True and executor.attributes["paused"] is False
    assert executor.attributes["access_level"] == "ref_protected"
    assert executor.attributes["maximum_timeout"] == 3600
    assert dict(executor.settings) == {"executor": "shell", "limit": 2}


@pytest.mark.parametrize("url", ['"TODO"', '"todo"', '""', '"CHANGEME"', None])
def test_a_placeholder_or_missing_url_means_the_only_client(tmp_path, url):
    line = f"url = {url}\n" if url else ""
    executor = one(tmp_path, f'[[runners]]\n{line}token = "TODO"\nexecutor = "custom"\n')
    assert executor.url == URL
    assert dict(executor.settings) == {"executor": "custom"}


def test_the_url_picks_the_client_config_trailing_slash_or_not(tmp_path):
    template = CLIENT + f'[[client_configs]]\nurl = "{OTHER}/"\naccess_token = "glpat-other"\n'
    loaded = load(
        tmp_path,
        {
            "a.toml": f'url = "{OTHER}"\nexecutor = "shell"\n',
            "b.toml": f'url = "{URL}/"\nexecutor = "shell"\n',
        },
        template=template,
    )
    assert sorted(loaded.clients) == [URL, OTHER]
    assert [e.url for e in loaded.executors] == [OTHER, URL]
    assert loaded.clients[OTHER].access_token.reveal() == "glpat-other"


def test_sub_tables_in_both_shapes_and_runners_prefixed_in_a_flat_file(tmp_path):
    flat = one(tmp_path, 'executor = "docker"\n[docker]\nimage = "debian"\n')
    spelled = one(tmp_path, 'executor = "docker"\n[runners.docker]\nimage = "debian"\n')
    snippet = one(
        tmp_path, '[[runners]]\nexecutor = "docker"\n[runners.docker]\nimage = "debian"\n'
    )
    for executor in (flat, spelled, snippet):
        assert dict(executor.settings) == {"executor": "docker", "docker": {"image": "debian"}}


def test_api_owned_keys_and_placeholders_are_dropped(tmp_path):
    executor = one(
        tmp_path,
        '[[runners]]\nname = "n"\nurl = "TODO"\nid = 3\ntoken = "TODO"\n'
        "token_obtained_at = 2020-01-01T00:00:00Z\ntoken_expires_at = 0001-01-01T00:00:00Z\n"
        'executor = "shell"\nbuilds_dir = "/b"\n',
    )
    assert dict(executor.settings) == {"executor": "shell", "builds_dir": "/b"}


def test_pass_through_keys_keep_file_order_and_values(tmp_path):
    executor = one(
        tmp_path,
        'shell = "bash"\nexecutor = "shell"\nenvironment = ["A=1", "B=2"]\nunknown_key = 1.5\n'
        '[custom]\nrun_exec = "/x"\n[cache]\nType = "s3"\n[cache.s3]\nBucketName = "b"\n',
    )
    assert list(executor.settings) == [
        "shell",
        "executor",
        "environment",
        "unknown_key",
        "custom",
        "cache",
    ]
    assert executor.settings["cache"] == {"Type": "s3", "s3": {"BucketName": "b"}}
    assert executor.settings["unknown_key"] == 1.5


def test_executor_files_sorted_hidden_and_other_files_ignored(tmp_path):
    loaded = load(
        tmp_path,
        {
            "b.toml": 'executor = "shell"\n',
            "a.toml": 'executor = "shell"\n',
            ".hidden.toml": "garbage [",
            "notes.txt": "garbage [",
            "c.toml.bak": "garbage [",
        },
    )
    assert [e.stem for e in loaded.executors] == ["a", "b"]
    assert loaded.executor_dir == tmp_path / "main"


def test_a_file_longer_than_one_read_is_read_whole(tmp_path):
    padding = "#" * ((1 << 16) + 100) + "\n"  # more than one read of 64 KiB
    executor = one(tmp_path, padding + 'executor = "shell"\nname = "last line"\n')
    assert executor.name == "last line"


def test_a_file_over_the_size_cap_is_refused_naming_it(tmp_path):
    padding = ("#" * 1023 + "\n") * (inputs.MAX_FILE_BYTES // 1024)
    with pytest.raises(InputError, match=r"x\.toml: larger than 1048576 bytes"):
        one(tmp_path, padding + 'executor = "shell"\n')


def test_no_executor_folder_means_no_executors(tmp_path):
    (tmp_path / "config.template.main.toml").write_text(CLIENT)
    assert inputs.load(tmp_path, IDENTITY, environ={}).executors == ()


def test_secret_from_a_file_relative_to_the_template(tmp_path):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "pat").write_text("glpat-from-file\n")
    (tmp_path / "secrets" / "pat").chmod(0o600)
    template = f'[[client_configs]]\nurl = "{URL}"\npersonal_access_token_file = "secrets/pat"\n'
    loaded = load(tmp_path, {"x.toml": 'executor = "shell"\n'}, template=template)
    assert loaded.clients[URL].access_token.reveal() == "glpat-from-file"
    assert "glpat-from-file" not in repr(loaded.clients[URL])


def test_secret_from_the_environment(tmp_path):
    template = f'[[client_configs]]\nurl = "{URL}"\naccess_token_env = "GITLAB_TOKEN"\n'
    loaded = load(
        tmp_path,
        {"x.toml": 'executor = "shell"\n'},
        template,
        environ={"GITLAB_TOKEN": "glpat-e\n"},
    )
    assert loaded.clients[URL].access_token.reveal() == "glpat-e"


def test_secret_from_a_systemd_credential(tmp_path):
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "gitlab").write_text("glpat-credential")
    template = (
        f'[[client_configs]]\nurl = "{URL}"\npersonal_access_token_credential = "gitlab"\n'
        'registration_token_credential = "legacy"\n'
    )
    (credentials / "legacy").write_text("GR1348941legacy\n")
    loaded = load(
        tmp_path,
        {"x.toml": 'executor = "shell"\n'},
        template,
        environ={"CREDENTIALS_DIRECTORY": str(credentials)},
    )
    client = loaded.clients[URL]
    assert client.access_token.reveal() == "glpat-credential"
    assert client.registration_token.reveal() == "GR1348941legacy"


def test_registration_token_alone_is_enough(tmp_path):
    template = f'[[client_configs]]\nurl = "{URL}"\nregistration_token = "GR1348941abc"\n'
    loaded = load(tmp_path, {"x.toml": 'executor = "shell"\n'}, template)
    assert loaded.clients[URL].access_token is None
    assert loaded.clients[URL].registration_token.reveal() == "GR1348941abc"


def test_client_configs_as_an_inline_array(tmp_path):
    template = f'concurrent = 2\nclient_configs = [{{url = "{URL}", access_token = "glpat-a"}}]\n'
    loaded = load(tmp_path, {"x.toml": 'executor = "shell"\n'}, template)
    assert list(loaded.clients) == [URL]


@pytest.mark.parametrize(
    ("client", "executor", "scope"),
    [
        ("", "", Scope()),
        ('runner_type = "group_type"\ngroup_id = 42\n', "", Scope("group_type", 42)),
        ("group_id = 42\n", "", Scope("group_type", 42)),
        ("project_id = 7\n", "", Scope("project_type", project_id=7)),
        ("group_id = 42\n", "project_id = 7\n", Scope("project_type", project_id=7)),
        ("group_id = 42\n", 'runner_type = "instance_type"\n', Scope()),
        ("", "group_id = 5\n", Scope("group_type", 5)),
    ],
)
def test_scope_from_the_client_config_and_the_executor_file(tmp_path, client, executor, scope):
    loaded = load(tmp_path, {"x.toml": f'executor = "shell"\n{executor}'}, CLIENT + client)
    (runner,) = loaded.executors
    assert runner.scope == scope
    assert not {"runner_type", "group_id", "project_id"} & set(runner.settings)


def test_tls_ca_file_is_carried(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    loaded = load(tmp_path, {"x.toml": 'executor = "shell"\n'}, CLIENT + f'tls_ca_file = "{ca}"\n')
    assert loaded.clients[URL].tls_ca_file == str(ca)


def test_globals_keep_everything_but_client_configs(tmp_path):
    template = (
        '# fleet-wide settings\nconcurrent = 4\nlog_level = "info"\n'
        '[session_server]\nlisten_address = "[::]:8093"\n\n' + CLIENT
    )
    loaded = load(tmp_path, {"x.toml": 'executor = "shell"\n'}, template)
    assert loaded.globals.content == {
        "concurrent": 4,
        "log_level": "info",
        "session_server": {"listen_address": "[::]:8093"},
    }
    assert "# fleet-wide settings" in tomlkit.dumps(loaded.globals.document)
    assert "glpat-inline" not in tomlkit.dumps(loaded.globals.document)
    assert tomlkit.parse(tomlkit.dumps(loaded.globals.document)).unwrap() == loaded.globals.content
