"""Migrating from LLNL's gitlab-runner-auth, against its own code: the real tool (in a venv of
its own, with the versions it pins) and then register-runner run on the same prefix with the
same command line, both against the fake GitLab.

Skipped when ../shared (which holds the tool, see its README) is absent or the venv cannot
be built. The venv is built once and cached, keyed by the versions.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from register_runner.testing.fake_gitlab import FakeGitLab
from register_runner.testing.prefix import Prefix, run_cli

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
ANCHOR = next(
    (
        path
        for path in (
            REPO.parent / "shared" / "anchors" / "gitlab-runner-auth",
            Path("/work/shared/anchors/gitlab-runner-auth"),
        )
        if (path / "gitlab_runner_config.py").is_file()
    ),
    None,
)
PINS = ("python-gitlab==2.6.0", "toml==0.10.0", "jsonschema==3.2.0", "setuptools")
INSTANCE = "main"

# A site's capture module in gitlab-runner-auth's form (its own imports archspec): it uses
# the env_tags names and the schema as LLNL's sample does, and tags "managed" and the host
# name without digits, which gitlab-runner-auth lists its runners by on a restart.
CAPTURE = """\
import re
import socket


def capture_tags(instance, executor_type, env=None, tag_schema=None):
    properties = {
        "architecture": "x86_64",
        "micro-architecture": ["x86_64", "x86_64_v2", "x86_64_v3"],
        "custom": [],
        "clustername": re.sub(r"\\d", "", socket.gethostname()),
        "network": "managed",
    }
    for e in env or []:
        if tag_schema and e in tag_schema["properties"]["os"]["enum"]:
            properties["os"] = e
        else:
            properties["custom"].append(tag_schema["custom-name"] + "_" + e)
    return properties
"""
# The same without the tags gitlab-runner-auth finds its runners by: every restart then
# registers new runners, as on a GitLab without its runner_details.rb patch.
CAPTURE_UNFINDABLE = CAPTURE.replace('"managed"', '"ib"')
EXECUTORS = {
    "shell": 'url = "{url}"\nexecutor = "shell"\nenv_tags = ["SITE_OS", "SITE_RACK", "UNSET_X"]\n',
    "nspawn": 'url = "{url}"\nexecutor = "custom"\nbuilds_dir = "/var/lib/builds"\n\n'
    '[custom]\nrun_exec = "/usr/bin/nspawn-runner"\n',
}
ENV = {"SITE_OS": "rhel", "SITE_RACK": "rack-7, ib"}


@pytest.fixture(scope="session")
def llnl_python() -> Path:
    if ANCHOR is None:
        pytest.skip("gitlab-runner-auth is not in ../shared/anchors")
    key = hashlib.sha256(f"{sys.version_info[:2]} {PINS}".encode()).hexdigest()[:12]
    venv = Path(tempfile.gettempdir()) / f"register-runner-llnl-venv-{key}"
    done = venv / ".complete"
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test session may be building it
        if not done.exists():
            shutil.rmtree(venv, ignore_errors=True)
            try:
                subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
                subprocess.run(
                    [str(venv / "bin" / "pip"), "install", "-q", *PINS],
                    check=True,
                    capture_output=True,
                    timeout=600,
                )
            except (subprocess.SubprocessError, OSError) as error:
                shutil.rmtree(venv, ignore_errors=True)
                pytest.skip(f"cannot build gitlab-runner-auth's venv: {error}")
            done.touch()
    return venv / "bin" / "python"


class Site:
    """A prefix laid out for gitlab-runner-auth: a template with url, personal access token
    and registration token, executor files with url, its schema, a capture module."""

    def __init__(self, root: Path, gitlab: FakeGitLab, pat: str, capture: str) -> None:
        self.prefix = Prefix(root / "prefix", INSTANCE)
        self.prefix.root.mkdir(mode=0o700)
        self.prefix.executor_dir.mkdir(mode=0o700)
        self.modules = root / "site-python"
        self.modules.mkdir()
        (self.modules / "site_capture.py").write_text(capture)
        self.schema = self.prefix.root / "tag_schema.json"
        shutil.copy(ANCHOR / "tag_schema.json", self.schema)
        self.template = (
            f'concurrent = 2\n\n[[client_configs]]\nurl = "{gitlab.url}"\n'
            f'personal_access_token = "{pat}"\n'
            f'registration_token = "{gitlab.registration_token()}"\n'
        )
        self.prefix.write_template(self.template)
        for stem, text in EXECUTORS.items():
            self.prefix.write_executor(stem, text.format(url=gitlab.url))
        self.env = {**ENV, "PYTHONPATH": str(self.modules)}
        self.flags = [
            "-p",
            str(self.prefix.root),
            "--service-instance",
            INSTANCE,
            "--tag-schema",
            str(self.schema),
            "--capture-tags",
            "site_capture",
        ]

    def gitlab_runner_auth(self, python: Path) -> subprocess.CompletedProcess:
        """One restart of the unit: its ExecStartPre, as its README runs it."""
        environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        result = subprocess.run(
            [str(python), str(ANCHOR / "gitlab_runner_config.py"), *self.flags],
            capture_output=True,
            text=True,
            env={**environment, **self.env},
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return result

    def migrate_template(self, settings: str = "") -> None:
        """The one edit docs/migrating.md asks for: the same tags as gitlab-runner-auth gave."""
        self.prefix.write_template(
            self.template + '\n[register_runner]\nidentity_tags = "gitlab-runner-auth"\n' + settings
        )

    def register_runner(self, *command: str) -> subprocess.CompletedProcess:
        return run_cli([*command, *self.flags], env=self.env)


def tokens(prefix: Prefix) -> dict[str, str]:
    return {r["executor"]: r["token"] for r in prefix.runners()}


def test_register_runner_takes_over_what_gitlab_runner_auth_registered(
    llnl_python, gitlab, pat, tmp_path
):
    gitlab.runner_details_token = True  # LLNL's runner_details.rb patch
    site = Site(tmp_path, gitlab, pat, CAPTURE)
    site.gitlab_runner_auth(llnl_python)
    site.gitlab_runner_auth(llnl_python)  # a restart finds its runners: nothing new
    assert len(gitlab.runners()) == 2
    theirs = tokens(site.prefix)
    their_tags = {r.token: set(r.tag_list) for r in gitlab.runners()}
    assert {"rhel", "rack-7", "ib", "custom_SITE_OS", "managed"} <= their_tags[theirs["shell"]]

    site.migrate_template()
    gitlab.clear_requests()
    plan = site.register_runner("plan", "--json")
    assert plan.returncode == 0, plan.stderr
    assert {a["action"] for a in json.loads(plan.stdout)["actions"]} == {"update", "write"}
    assert gitlab.mutating_requests() == []
    first = site.register_runner()

    assert first.returncode == 0, first.stderr
    assert not [q for q in gitlab.requests if q.method == "POST" and q.path != "/runners/verify"]
    assert tokens(site.prefix) == theirs
    assert len(gitlab.runners()) == 2
    for runner in gitlab.runners():
        assert set(runner.tag_list) == their_tags[runner.token]
        assert "[register-runner " in (runner.maintenance_note or "")
    for entry in site.prefix.runners():
        assert isinstance(entry["id"], int) and "env_tags" not in entry and "tags" not in entry
    assert site.prefix.runner("nspawn")["custom"] == {"run_exec": "/usr/bin/nspawn-runner"}

    before = site.prefix.snapshot()
    gitlab.clear_requests()
    second = site.register_runner()
    assert second.returncode == 0, second.stderr
    assert gitlab.mutating_requests() == []
    assert site.prefix.snapshot() == before

    # The options in the template: the timer's sync, without flags or PYTHONPATH, agrees.
    site.migrate_template(
        f'capture_tags = "{site.modules}/site_capture.py"\ntag_schema = "tag_schema.json"\n'
    )
    timer = run_cli(["sync", "--prefix", str(site.prefix.root)], env=ENV)
    assert timer.returncode == 0, timer.stderr
    restart = site.register_runner()  # the unit's flags name the same files
    assert restart.returncode == 0, restart.stderr
    assert gitlab.mutating_requests() == []


def test_plan_lists_gitlab_runner_auth_leftovers_and_prune_legacy_deletes_exactly_them(
    llnl_python, gitlab, pat, tmp_path
):
    site = Site(tmp_path, gitlab, pat, CAPTURE_UNFINDABLE)
    for _ in range(3):
        site.gitlab_runner_auth(llnl_python)
    assert len(gitlab.runners()) == 6
    in_use = tokens(site.prefix)
    host = gitlab.runners()[0].description.split(" ")[0]
    others = {
        gitlab.add_runner(description=f"other{host} {INSTANCE} shell Runner").id,
        gitlab.add_runner(description=f"{host} gpu shell Runner").id,
        gitlab.add_runner(description="a runner made by hand").id,
    }
    site.migrate_template()

    synced = site.register_runner()
    assert synced.returncode == 0, synced.stderr
    assert tokens(site.prefix) == in_use and len(gitlab.runners()) == 9
    ours = {entry["id"] for entry in site.prefix.runners()}
    leftovers = {r.id for r in gitlab.runners()} - ours - others
    assert len(leftovers) == 4

    plan = site.register_runner("plan", "--json")
    assert plan.returncode == 0, plan.stderr
    listed = [a for a in json.loads(plan.stdout)["actions"] if a["action"] == "leftover"]
    assert {a["id"] for a in listed} == leftovers

    gitlab.clear_requests()
    # With gitlab-runner-auth's command line, as the unit had it.
    dry = site.register_runner("prune-legacy", "--json")
    assert dry.returncode == 0, dry.stderr
    assert {a["id"] for a in json.loads(dry.stdout)["actions"]} == leftovers
    assert gitlab.mutating_requests() == [] and len(gitlab.runners()) == 9

    pruned = run_cli(["prune-legacy", "--prefix", str(site.prefix.root), "--yes"])
    assert pruned.returncode == 0, pruned.stderr
    assert {r.id for r in gitlab.runners()} == ours | others
    deleted = {int(q.path.rsplit("/", 1)[1]) for q in gitlab.requests if q.method == "DELETE"}
    assert deleted == leftovers

    gitlab.clear_requests()
    assert site.register_runner().returncode == 0
    assert gitlab.mutating_requests() == []


@pytest.mark.parametrize("patched", [False, True], ids=["stock GitLab", "runner_details patch"])
def test_rolling_back_to_gitlab_runner_auth_and_forward_again_adopts_its_new_runners(
    llnl_python, gitlab, pat, tmp_path, patched
):
    gitlab.runner_details_token = patched
    site = Site(tmp_path, gitlab, pat, CAPTURE if patched else CAPTURE_UNFINDABLE)
    site.gitlab_runner_auth(llnl_python)
    site.migrate_template()
    forward = site.register_runner()
    assert forward.returncode == 0, forward.stderr
    first = {entry["id"] for entry in site.prefix.runners()}
    assert len(first) == 2

    # The rollback: the old ExecStartPre again. Against a stock GitLab it does not find
    # the runners it had; with its patch it finds them by their tags, does not know their
    # new description and deletes them. Either way it registers new ones and writes the
    # config anew, with the template's [register_runner] table in it.
    site.gitlab_runner_auth(llnl_python)
    theirs = tokens(site.prefix)
    assert "register_runner" in site.prefix.output_document()
    their_tags = {r.token: set(r.tag_list) for r in gitlab.runners()}
    assert len(gitlab.runners()) == 2 if patched else 4

    gitlab.clear_requests()
    plan = site.register_runner("plan", "--json")
    assert plan.returncode == 0, plan.stderr
    rows = json.loads(plan.stdout)["actions"]
    assert "not adopted" not in plan.stderr
    assert {(row["action"], row["runner"]) for row in rows} >= {
        ("update", "shell"),
        ("update", "nspawn"),
    }
    assert not [row for row in rows if row["action"] in ("create", "recreate")]
    changed = {c["attribute"] for row in rows for c in row["changes"]}
    assert "tag_list" not in changed and changed >= {"maintenance_note"}
    assert gitlab.mutating_requests() == []

    again = site.register_runner()
    assert again.returncode == 0, again.stderr
    assert "not adopted" not in again.stderr
    assert not [q for q in gitlab.requests if q.method == "POST" and q.path == "/user/runners"]
    assert tokens(site.prefix) == theirs
    assert "register_runner" not in site.prefix.output_document()
    # The runners of the first move forward were this host's: replaced, they are deleted.
    assert {r.id for r in gitlab.runners()} == {e["id"] for e in site.prefix.runners()}
    assert not first & {r.id for r in gitlab.runners()}
    for runner in gitlab.runners():
        assert set(runner.tag_list) == their_tags[runner.token]
        assert "[register-runner " in (runner.maintenance_note or "")

    gitlab.clear_requests()
    steady = site.register_runner()
    assert steady.returncode == 0 and gitlab.mutating_requests() == []
