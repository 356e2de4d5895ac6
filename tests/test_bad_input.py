"""The bad-input catalogue: every malformed input, through the real CLI, against the fake
GitLab. The contract: exit 2 and ONE clear line naming the file (and the line, for TOML
syntax errors); no traceback, no secret. Input that concerns the whole host (template,
secrets, prefix, state, folder): nothing changed, in GitLab or on disk, and no API call at
all (input errors are found before the first one). One bad executor file (a case naming
only files under main/): its runner is held as it is, the other runners converge.

Cases marked ``synced`` first run a successful sync, so that runners exist in GitLab and in
the config, and only then break the input: those runners and that config must survive.
The other cases start from a prefix whose host already has its system ID (see
``test_bad_input_on_a_brand_new_prefix_writes_nothing`` for a prefix that has none).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import pytest

from register_runner.hostid import ensure_system_id
from register_runner.testing.prefix import Prefix

SHELL = 'executor = "shell"\ntags = ["linux"]\n'
TEMPLATE = "config.template.main.toml"
BAD = "main/bad.toml"
SHELL_FILE = "main/shell.toml"
OUTPUT = "config.main.toml"
ANY_LINE = "any"  # a TOML error whose line the message must give, whatever it is
UNSET_VARIABLE = "REGISTER_RUNNER_TEST_UNSET_VARIABLE"
RUNNER_TOKEN = "glrt-Zq8vY2mK4pL9xW3nB7cD"


@dataclass
class Ctx:
    """What a case's setup may use to break a prefix."""

    prefix: Prefix
    url: str
    pat: str
    tmp: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.prefix.root

    @property
    def pat_file(self) -> Path:
        return self.root / "secrets" / "gitlab.pat"

    def client(self, *lines: str, url: Optional[str] = None, secret: Optional[str] = None) -> str:
        """One [[client_configs]] block: header, url, secret (3 lines), then ``lines``."""
        if secret is None:
            secret = f'personal_access_token_file = "{self.pat_file}"'
        body = ["[[client_configs]]", f'url = "{url or self.url}"', secret, *lines]
        return "\n".join(line for line in body if line) + "\n"

    def template(self, text: str) -> None:
        self.prefix.write_template(text)

    def template_with(self, *lines: str, secret: Optional[str] = None, url: Optional[str] = None):
        self.template("concurrent = 4\n\n" + self.client(*lines, secret=secret, url=url))

    def executor(self, stem: str, text: str) -> Path:
        return self.prefix.write_executor(stem, text)

    def bad(self, text: str) -> Path:
        return self.executor("bad", text)


@dataclass(frozen=True)
class Case:
    id: str
    setup: Callable[[Ctx], object]
    names: Union[str, tuple[str, ...]]  # path(s) under the prefix the message names; "" = it
    line: Union[int, str, None] = None  # TOML syntax errors: the message has "file:LINE:"
    synced: bool = False  # a successful sync first: runners exist
    secret: Optional[str] = None  # a further secret that must not be printed


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.write_bytes(data)


def _rm(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _two_clients(ctx: Ctx) -> None:
    ctx.template(
        "concurrent = 4\n"
        + ctx.client()
        + ctx.client(
            url="https://gitlab.other.example", secret=f'personal_access_token = "{ctx.pat}"'
        )
    )


def _corrupt_state(text: str) -> Callable[[Ctx], None]:
    return lambda ctx: (ctx.root / ".register-runner" / "main.json").write_text(text)


def _credentials_folder(ctx: Ctx) -> None:
    folder = ctx.tmp / "credentials"
    folder.mkdir(exist_ok=True)
    ctx.env["CREDENTIALS_DIRECTORY"] = str(folder)
    ctx.template_with(secret='personal_access_token_credential = "gitlab.pat"')


def _output_symlink(ctx: Ctx) -> None:
    elsewhere = ctx.tmp / "elsewhere.toml"
    elsewhere.write_text("concurrent = 1\n")
    if ctx.prefix.output.exists():
        ctx.prefix.output.unlink()
    ctx.prefix.output.symlink_to(elsewhere)


def _same_name(ctx: Ctx) -> None:
    ctx.executor("a", 'executor = "shell"\nname = "same"\n')
    ctx.executor("b", 'executor = "shell"\nname = "same"\n')


def _emptied(ctx: Ctx) -> None:
    for path in ctx.prefix.executor_dir.iterdir():
        path.unlink()


CASES = [
    # -- the template: TOML and encoding ----------------------------------------------
    Case(
        "template-unterminated-string",
        lambda c: c.template(f'concurrent = 4\n[[client_configs]]\nurl = "{c.url}\n'),
        TEMPLATE,
        line=3,
    ),
    Case(
        "template-duplicate-key",
        lambda c: c.template("concurrent = 4\nconcurrent = 8\n" + c.client()),
        TEMPLATE,
        line=2,
    ),
    Case(
        "template-bad-table-header",
        lambda c: c.template(
            "concurrent = 4\n\n" + c.client().replace("[[client_configs]]", "[[client_configs]")
        ),
        TEMPLATE,
        line=3,
    ),
    Case(
        "template-bad-value",
        lambda c: c.template("concurrent = four\n" + c.client()),
        TEMPLATE,
        line=1,
    ),
    Case(
        "template-duplicate-key-after-sync",
        lambda c: c.template("concurrent = 4\n" + c.client() + "check_interval = 3\n" * 2),
        TEMPLATE,
        line=6,
        synced=True,
    ),
    Case(
        "client_configs-duplicate-key",
        lambda c: c.template(
            f'concurrent = 4\n\n[[client_configs]]\nurl = "{c.url}"\nurl = "{c.url}"\n'
            f'personal_access_token_file = "{c.pat_file}"\n'
        ),
        TEMPLATE,
        line=5,
    ),
    Case(
        "template-not-utf8",
        lambda c: _write_bytes(
            c.prefix.template, b"concurrent = 4\n# caf\xe9\n" + c.client().encode()
        ),
        TEMPLATE,
        line=2,
    ),
    Case(
        "template-larger-than-1-MiB",
        lambda c: c.template(c.client() + "# padding\n" * (1 << 17)),
        TEMPLATE,
    ),
    Case("template-missing", lambda c: c.prefix.template.unlink(), TEMPLATE),
    Case(
        "template-missing-after-sync", lambda c: c.prefix.template.unlink(), TEMPLATE, synced=True
    ),
    Case(
        "template-is-a-folder",
        lambda c: (c.prefix.template.unlink(), c.prefix.template.mkdir()),
        TEMPLATE,
    ),
    # -- the template: client_configs -------------------------------------------------
    Case("no-client_configs", lambda c: c.template("concurrent = 4\n"), TEMPLATE),
    Case(
        "no-client_configs-after-sync",
        lambda c: c.template("concurrent = 4\n"),
        TEMPLATE,
        synced=True,
    ),
    Case(
        "client_configs-a-string",
        lambda c: c.template(f'client_configs = "{c.url}"\n'),
        TEMPLATE,
    ),
    Case("client_configs-empty-list", lambda c: c.template("client_configs = []\n"), TEMPLATE),
    Case(
        "client_configs-a-table-not-a-list",
        lambda c: c.template(c.client().replace("[[client_configs]]", "[client_configs]")),
        TEMPLATE,
    ),
    Case(
        "client_configs-entry-without-url",
        lambda c: c.template(f'[[client_configs]]\npersonal_access_token_file = "{c.pat_file}"\n'),
        TEMPLATE,
    ),
    Case(
        "client-url-not-http",
        lambda c: c.template_with(url="ftp://gitlab.example.com"),
        TEMPLATE,
    ),
    Case(
        "client-url-a-placeholder",
        lambda c: c.template_with(url="TODO"),
        TEMPLATE,
    ),
    Case(
        "duplicate-client-url",
        lambda c: c.template(c.client() + c.client(url=c.url + "/")),
        TEMPLATE,
    ),
    Case(
        "unknown-client_configs-key",
        lambda c: c.template_with('personal_acces_token = "glpat-typo"'),
        TEMPLATE,
    ),
    Case(
        "personal_access_token-and-access_token",
        lambda c: c.template_with(
            secret=f'personal_access_token = "{c.pat}"\naccess_token = "{c.pat}"'
        ),
        TEMPLATE,
    ),
    Case(
        "token-given-twice",
        lambda c: c.template_with(f'personal_access_token = "{c.pat}"'),
        TEMPLATE,
    ),
    Case(
        "token-not-a-string",
        lambda c: c.template_with(secret="personal_access_token = 12345"),
        TEMPLATE,
    ),
    Case(
        "no-token-at-all",
        lambda c: c.template_with(secret="# no token"),
        TEMPLATE,
    ),
    # -- the template: secrets --------------------------------------------------------
    Case(
        "secret-file-missing",
        lambda c: c.template_with(secret=f'personal_access_token_file = "{c.tmp}/no-such-file"'),
        TEMPLATE,
    ),
    Case(
        "secret-file-missing-after-sync",
        lambda c: c.pat_file.unlink(),
        TEMPLATE,
        synced=True,
    ),
    Case(
        "secret-file-unreadable-a-folder",
        lambda c: c.template_with(secret=f'personal_access_token_file = "{c.root}/secrets"'),
        TEMPLATE,
    ),
    Case(
        "secret-file-empty",
        lambda c: c.pat_file.write_text(" \n"),
        TEMPLATE,
    ),
    Case(
        "secret-file-not-utf8",
        lambda c: c.pat_file.write_bytes(b"glpat-\xff\xfe\n"),
        TEMPLATE,
    ),
    Case(
        "secret-env-variable-unset",
        lambda c: c.template_with(secret=f'personal_access_token_env = "{UNSET_VARIABLE}"'),
        TEMPLATE,
    ),
    Case(
        "secret-env-variable-empty",
        lambda c: (
            c.env.update(REGISTER_RUNNER_TEST_EMPTY=""),
            c.template_with(secret='personal_access_token_env = "REGISTER_RUNNER_TEST_EMPTY"'),
        ),
        TEMPLATE,
    ),
    Case(
        "secret-credential-without-CREDENTIALS_DIRECTORY",
        lambda c: c.template_with(secret='personal_access_token_credential = "gitlab.pat"'),
        TEMPLATE,
    ),
    Case("secret-credential-file-missing", _credentials_folder, TEMPLATE),
    Case(
        "tls_ca_file-missing",
        lambda c: c.template_with(f'tls_ca_file = "{c.tmp}/no-ca.pem"'),
        TEMPLATE,
    ),
    # -- the template: scope ----------------------------------------------------------
    Case(
        "runner_type-invalid",
        lambda c: c.template_with('runner_type = "shared"'),
        TEMPLATE,
    ),
    Case(
        "group_type-without-group_id",
        lambda c: c.template_with('runner_type = "group_type"'),
        TEMPLATE,
    ),
    Case(
        "project_type-without-project_id",
        lambda c: c.template_with('runner_type = "project_type"\ngroup_id = 42'),
        TEMPLATE,
    ),
    Case(
        "group_id-not-a-number",
        lambda c: c.template_with('runner_type = "group_type"\ngroup_id = "42"'),
        TEMPLATE,
    ),
    Case(
        "runners-in-the-template",
        lambda c: c.template(
            "concurrent = 4\n" + c.client() + '[[runners]]\nname = "x"\nexecutor = "shell"\n'
        ),
        TEMPLATE,
    ),
    # -- executor files: TOML and encoding --------------------------------------------
    Case(
        "executor-unterminated-string",
        lambda c: c.bad('executor = "shell\ntags = ["linux"]\n'),
        BAD,
        line=1,
    ),
    Case(
        "executor-unterminated-string-after-sync",
        lambda c: c.executor("shell", 'tags = ["linux"]\nexecutor = "shell\n'),
        SHELL_FILE,
        line=2,
        synced=True,
    ),
    Case(
        "executor-duplicate-key",
        lambda c: c.bad('executor = "shell"\nlimit = 1\nexecutor = "docker"\n'),
        BAD,
        line=3,
    ),
    Case(
        "executor-snippet-duplicate-key",
        lambda c: c.bad('[[runners]]\nexecutor = "shell"\nexecutor = "docker"\nlimit = 1\n'),
        BAD,
        line=3,
    ),
    Case(
        "executor-duplicate-table",
        lambda c: c.bad(
            'executor = "docker"\n[docker]\nimage = "a"\n[docker]\npull_policy = "never"\n'
            "privileged = false\n"
        ),
        BAD,
        line=4,
    ),
    Case(
        "executor-bad-table-header",
        lambda c: c.bad('executor = "docker"\n[docker\nimage = "debian"\n'),
        BAD,
        line=2,
    ),
    Case(
        "executor-sub-table-redefines-a-key",
        lambda c: c.bad('executor = "docker"\n[docker]\nimage = "debian"\n[docker.image]\nx = 1\n'),
        BAD,
        line=ANY_LINE,
    ),
    Case(
        "executor-not-utf8",
        lambda c: _write_bytes(
            c.prefix.executor_dir / "bad.toml", b'executor = "shell"\ndescription = "caf\xe9"\n'
        ),
        BAD,
        line=2,
    ),
    Case(
        "executor-larger-than-1-MiB",
        lambda c: c.bad('executor = "shell"\n' + "# padding\n" * (1 << 17)),
        BAD,
    ),
    # -- executor files: url and shape ------------------------------------------------
    Case(
        "executor-url-matches-no-client",
        lambda c: c.bad('url = "https://gitlab.elsewhere.example"\nexecutor = "shell"\n'),
        BAD,
    ),
    Case(
        "executor-url-matches-no-client-after-sync",
        lambda c: c.executor("shell", SHELL + 'url = "https://gitlab.elsewhere.example"\n'),
        SHELL_FILE,
        synced=True,
    ),
    Case(
        "executor-url-not-a-url",
        lambda c: c.bad('url = "gitlab.example.com"\nexecutor = "shell"\n'),
        BAD,
    ),
    Case("executor-url-not-a-string", lambda c: c.bad('url = 42\nexecutor = "shell"\n'), BAD),
    Case(
        "several-clients-and-no-url",
        lambda c: (_two_clients(c), c.bad('executor = "shell"\n')),
        BAD,
    ),
    Case(
        "several-clients-and-a-placeholder-url",
        lambda c: (
            _two_clients(c),
            c.bad('[[runners]]\nurl = "TODO"\ntoken = "TODO"\nexecutor = "custom"\n'),
        ),
        BAD,
    ),
    Case(
        "two-runners-entries",
        lambda c: c.bad('[[runners]]\nexecutor = "shell"\n[[runners]]\nexecutor = "docker"\n'),
        BAD,
    ),
    Case(
        "keys-outside-runners",
        lambda c: c.bad('concurrent = 2\n[[runners]]\nexecutor = "shell"\n'),
        BAD,
    ),
    Case(
        "real-token-in-executor-file",
        lambda c: c.bad(
            f'[[runners]]\nurl = "TODO"\ntoken = "{RUNNER_TOKEN}"\nexecutor = "shell"\n'
        ),
        BAD,
        secret=RUNNER_TOKEN,
    ),
    Case(
        "real-token-in-executor-file-after-sync",
        lambda c: c.executor("shell", SHELL + f'token = "{RUNNER_TOKEN}"\n'),
        SHELL_FILE,
        synced=True,
        secret=RUNNER_TOKEN,
    ),
    # Whoever can write an executor file chooses what that runner runs: refused, and
    # only that file's runner is held.
    Case("executor-writable-by-others", lambda c: c.bad(SHELL).chmod(0o666), BAD),
    Case(
        "executor-writable-by-group-after-sync",
        lambda c: (c.prefix.executor_dir / "shell.toml").chmod(0o660),
        SHELL_FILE,
        synced=True,
    ),
    Case("executor-key-missing", lambda c: c.bad('tags = ["linux"]\n'), BAD),
    Case("executor-empty-file", lambda c: c.bad(""), BAD),
    Case("executor-an-empty-string", lambda c: c.bad('executor = ""\n'), BAD),
    # -- executor files: registration attributes --------------------------------------
    Case("tags-not-strings", lambda c: c.bad('executor = "shell"\ntags = ["linux", 3]\n'), BAD),
    Case("tags-a-number", lambda c: c.bad('executor = "shell"\ntags = 3\n'), BAD),
    Case(
        "tags-and-tag_list",
        lambda c: c.bad('executor = "shell"\ntags = ["a"]\ntag_list = ["b"]\n'),
        BAD,
    ),
    Case(
        "more-than-50-tags",
        lambda c: c.bad(
            'executor = "shell"\ntags = [' + ", ".join(f'"t{i}"' for i in range(51)) + "]\n"
        ),
        BAD,
    ),
    Case(
        "run_untagged-not-a-bool",
        lambda c: c.bad('executor = "shell"\nrun_untagged = "false"\ntags = ["a"]\n'),
        BAD,
    ),
    Case(
        "run_untagged-false-without-tags",
        lambda c: c.bad('executor = "shell"\nrun_untagged = false\n'),
        BAD,
    ),
    Case(
        "run_untagged-false-with-empty-tags",
        lambda c: c.bad('executor = "shell"\nrun_untagged = false\ntags = [" "]\n'),
        BAD,
    ),
    Case("locked-not-a-bool", lambda c: c.bad('executor = "shell"\nlocked = 1\n'), BAD),
    Case("paused-not-a-bool", lambda c: c.bad('executor = "shell"\npaused = "yes"\n'), BAD),
    Case(
        "maximum_timeout-below-600",
        lambda c: c.bad('executor = "shell"\nmaximum_timeout = 599\n'),
        BAD,
    ),
    Case(
        "maximum_timeout-a-string",
        lambda c: c.bad('executor = "shell"\nmaximum_timeout = "3600"\n'),
        BAD,
    ),
    Case(
        "maximum_timeout-a-float",
        lambda c: c.bad('executor = "shell"\nmaximum_timeout = 3600.0\n'),
        BAD,
    ),
    Case(
        "access_level-invalid",
        lambda c: c.bad('executor = "shell"\naccess_level = "protected"\n'),
        BAD,
    ),
    Case(
        "maintenance_note-too-long",
        lambda c: c.bad('executor = "shell"\nmaintenance_note = "' + "x" * 1000 + '"\n'),
        BAD,
    ),
    Case("description-not-a-string", lambda c: c.bad('executor = "shell"\ndescription = 5\n'), BAD),
    Case("name-empty", lambda c: c.bad('executor = "shell"\nname = " "\n'), BAD),
    Case(
        "executor-runner_type-invalid",
        lambda c: c.bad('executor = "shell"\nrunner_type = "shared"\n'),
        BAD,
    ),
    Case(
        "executor-project_id-not-a-number",
        lambda c: c.bad('executor = "shell"\nproject_id = "7"\n'),
        BAD,
    ),
    Case("duplicate-runner-names", _same_name, ("main/a.toml", "main/b.toml")),
    Case(
        "duplicate-runner-names-after-sync",
        _same_name,
        ("main/a.toml", "main/b.toml"),
        synced=True,
    ),
    # -- the executor folder ----------------------------------------------------------
    Case(
        "executor-file-is-a-folder",
        lambda c: (c.prefix.executor_dir / "x.toml").mkdir(),
        "main/x.toml",
    ),
    Case(
        "executor-file-is-a-folder-after-sync",
        lambda c: (c.prefix.executor_dir / "x.toml").mkdir(),
        "main/x.toml",
        synced=True,
    ),
    Case(
        "executor-folder-is-a-file",
        lambda c: (_rm(c.prefix.executor_dir), c.prefix.executor_dir.write_text(SHELL)),
        "main",
    ),
    Case("executor-folder-emptied-after-sync", _emptied, "main", synced=True),
    Case(
        "executor-folder-missing-after-sync",
        lambda c: _rm(c.prefix.executor_dir),
        "main",
        synced=True,
    ),
    # -- the prefix -------------------------------------------------------------------
    Case("prefix-world-writable", lambda c: c.root.chmod(0o777), ""),
    Case("prefix-group-writable", lambda c: c.root.chmod(0o770), ""),
    Case("prefix-world-writable-after-sync", lambda c: c.root.chmod(0o777), "", synced=True),
    Case(
        "executor-folder-world-writable",
        lambda c: c.prefix.executor_dir.chmod(0o777),
        "main",
    ),
    Case("prefix-missing", lambda c: _rm(c.root), ""),
    # -- what earlier runs left -------------------------------------------------------
    Case("output-is-a-symlink", _output_symlink, OUTPUT),
    Case("output-is-a-symlink-after-sync", _output_symlink, OUTPUT, synced=True),
    Case(
        "output-broken-toml-after-sync",
        lambda c: c.prefix.output.write_text(c.prefix.output.read_text() + "[[runners\n"),
        OUTPUT,
        line=ANY_LINE,
        synced=True,
    ),
    Case(
        "output-not-utf8-after-sync",
        lambda c: c.prefix.output.write_bytes(c.prefix.output.read_bytes() + b"# \xff\n"),
        OUTPUT,
        synced=True,
    ),
    Case(
        "state-garbage-after-sync",
        _corrupt_state("\x00garbage{"),
        ".register-runner/main.json",
        synced=True,
    ),
    Case(
        "state-not-an-object-after-sync",
        _corrupt_state("[1, 2]\n"),
        ".register-runner/main.json",
        synced=True,
    ),
    Case(
        "state-runner-without-url-after-sync",
        _corrupt_state('{"runners": {"shell": {"id": 1}}}\n'),
        ".register-runner/main.json",
        synced=True,
    ),
    Case(
        "state-runner-id-not-a-number-after-sync",
        lambda c: _corrupt_state(
            json.dumps(
                {"runners": {"shell": {"id": "abc", "url": c.url, "scope": {}, "applied": {}}}}
            )
        )(c),
        ".register-runner/main.json",
        synced=True,
    ),
]
MIN_CASES = 35


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.delenv(UNSET_VARIABLE, raising=False)


def _named(case: Case, root: Path) -> list[str]:
    names = (case.names,) if isinstance(case.names, str) else case.names
    return [str(root / name) if name else str(root) for name in names]


def assert_one_clear_line(result, case: Case, root: Path, secrets: tuple[str, ...]) -> None:
    err = result.stderr.strip()
    assert result.returncode == 2, f"exit {result.returncode}: {result.stderr}"
    assert "\n" not in err, f"more than one line:\n{result.stderr}"
    assert err.startswith("register-runner: error:"), err
    assert "Traceback" not in result.stderr
    assert result.stdout.strip() == "", result.stdout
    named = _named(case, root)
    assert any(name in err for name in named), f"{err!r} names none of {named}"
    if case.line == ANY_LINE:
        assert any(re.search(re.escape(name) + r":\d+:", err) for name in named), err
    elif case.line is not None:
        assert any(f"{name}:{case.line}:" in err for name in named), err
    for secret in secrets:
        assert secret not in result.stderr + result.stdout


def _per_file(case: Case) -> bool:
    names = (case.names,) if isinstance(case.names, str) else case.names
    return all(name.startswith("main/") for name in names)


HOST_WIDE = [case for case in CASES if not _per_file(case)]
PER_FILE = [case for case in CASES if _per_file(case)]


@pytest.mark.parametrize("case", HOST_WIDE, ids=[case.id for case in HOST_WIDE])
def test_bad_input(case: Case, gitlab, pat, make, cli, tmp_path):
    prefix = make(executors={"shell": SHELL})
    if case.synced:
        first = cli(prefix)
        assert first.returncode == 0, first.stderr
        assert len(gitlab.runners()) == 1 and len(prefix.runners()) == 1
    else:
        ensure_system_id(prefix.root)
    ctx = Ctx(prefix, gitlab.url, pat, tmp_path)
    case.setup(ctx)
    runners_before = gitlab.runners()
    before = prefix.snapshot()
    gitlab.clear_requests()

    result = cli(prefix, env=ctx.env)

    assert_one_clear_line(result, case, prefix.root, (pat, *filter(None, [case.secret])))
    assert gitlab.mutating_requests() == []
    assert gitlab.requests == [], [(r.method, r.path) for r in gitlab.requests]
    assert gitlab.runners() == runners_before
    assert prefix.snapshot() == before
    if case.synced:
        assert len(runners_before) == 1


def _registration(runner) -> tuple:
    return (runner.id, runner.token, runner.description, runner.tag_list, runner.run_untagged)


def _stem(runner) -> str:
    return re.search(r"executor=(\S+)", runner.maintenance_note or "").group(1)


@pytest.mark.parametrize("case", PER_FILE, ids=[case.id for case in PER_FILE])
def test_a_bad_executor_file_holds_only_its_runner(case: Case, gitlab, pat, make, cli, tmp_path):
    prefix = make(executors={"shell": SHELL})
    if case.synced:
        assert cli(prefix).returncode == 0
    else:
        ensure_system_id(prefix.root)
    ctx = Ctx(prefix, gitlab.url, pat, tmp_path)
    case.setup(ctx)
    before = {r.id: _registration(r) for r in gitlab.runners()}
    stems_before = {_stem(r) for r in gitlab.runners()}
    entries_before = prefix.runners() if prefix.output.exists() else []

    # The run goes on to ask every GitLab about its access token: the second GitLab of
    # the cases with two does not exist, and is not waited for (the deadline bounds it,
    # with time to spare for the creates the good files need).
    result = cli(prefix, "sync", "--deadline", "10", env=ctx.env)

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    for secret in (pat, *filter(None, [case.secret])):
        assert secret not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if " ERROR " in line]
    held = {stem for line in lines for stem in re.findall(r"runner (\S+) held", line)}
    assert len(held) == len(lines), lines  # one line per bad file
    named = _named(case, prefix.root)
    (line,) = [line for line in lines if any(name in line for name in named)]
    if case.line == ANY_LINE:
        assert any(re.search(re.escape(name) + r":\d+:", line) for name in named), line
    elif case.line is not None:
        assert any(f"{name}:{case.line}:" in line for name in named), line
    # The held runners: not changed, not deleted, their config entries kept as they were.
    after = {r.id: _registration(r) for r in gitlab.runners()}
    assert all(after.get(runner_id) == looks for runner_id, looks in before.items())
    assert all(entry in prefix.runners() for entry in entries_before if entry["id"] in before)
    # The others converge: each good file without a runner gets one, and only they do.
    created = sorted(_stem(r) for r in gitlab.runners() if r.id not in before)
    good = {path.stem for path in prefix.executor_dir.iterdir()} - held
    assert created == sorted(good - stems_before)
    assert {r.method for r in gitlab.mutating_requests()} <= {"POST"}


# -- beside the catalogue -----------------------------------------------------------------


@pytest.mark.parametrize(
    "folder", ["", "main"], ids=["prefix-world-writable", "executor-folder-world-writable"]
)
def test_insecure_permissions_lets_a_writable_prefix_through(gitlab, prefix, cli, folder):
    (prefix.root / folder).chmod(0o777)
    assert cli(prefix).returncode == 2

    result = cli(prefix, "sync", "--insecure-permissions")

    assert result.returncode == 0, result.stderr
    assert len(gitlab.runners()) == 1 and len(prefix.runners()) == 1


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c.id in ("no-client_configs", "client-url-not-http")],
    ids=lambda c: c.id,
)
def test_bad_input_on_a_brand_new_prefix_writes_nothing(case, gitlab, pat, make, cli, tmp_path):
    """Nothing is changed on disk: not even the system ID file of a host that never ran."""
    prefix = make(executors={"shell": SHELL})
    ctx = Ctx(prefix, gitlab.url, pat, tmp_path)
    case.setup(ctx)
    before = prefix.snapshot()

    result = cli(prefix, env=ctx.env)

    assert_one_clear_line(result, case, prefix.root, (pat,))
    assert gitlab.requests == []
    assert prefix.snapshot() == before, sorted(set(prefix.snapshot()) - set(before))


@pytest.mark.parametrize(
    "case",
    [
        c
        for c in CASES
        if c.id
        in (
            "template-unterminated-string",
            "secret-file-missing",
            "executor-folder-emptied-after-sync",
            "prefix-world-writable",
        )
    ],
    ids=lambda c: c.id,
)
def test_plan_reports_bad_input_the_same_way(case, gitlab, pat, make, cli, tmp_path):
    prefix = make(executors={"shell": SHELL})
    if case.synced:
        assert cli(prefix).returncode == 0
    ctx = Ctx(prefix, gitlab.url, pat, tmp_path)
    case.setup(ctx)
    before = prefix.snapshot()
    gitlab.clear_requests()

    result = cli(prefix, "plan", env=ctx.env)

    assert_one_clear_line(result, case, prefix.root, (pat,))
    assert gitlab.requests == []
    assert prefix.snapshot() == before


@pytest.mark.parametrize("key", ["personal_access_token_file", "personal_access_token_env"])
def test_a_token_pasted_into_a_file_or_env_key_is_not_printed(gitlab, pat, make, cli, key):
    """An operator who writes the token itself where its file (or variable) belongs gets
    exit 2, and the token stays out of the journal."""
    prefix = make()
    prefix.write_template(f'[[client_configs]]\nurl = "{gitlab.url}"\n{key} = "{pat}"\n')

    result = cli(prefix)

    assert result.returncode == 2, result.stderr
    assert pat not in result.stderr + result.stdout
    assert gitlab.requests == []


def test_template_writable_by_others_is_refused(gitlab, make, cli):
    """A template others can write lets them send the access token to a server of their
    choosing: it is refused like a prefix writable by others."""
    prefix = make()
    prefix.root.chmod(0o755)
    prefix.executor_dir.chmod(0o755)
    prefix.template.chmod(0o666)
    before = prefix.snapshot()

    result = cli(prefix)

    assert result.returncode == 2, result.stderr
    assert str(prefix.template) in result.stderr
    assert gitlab.requests == [] and prefix.snapshot() == before
    prefix.template.chmod(0o644)
    assert cli(prefix).returncode == 0


# -- the count ---------------------------------------------------------------------------


def test_the_catalogue_is_big_enough():
    ids = [case.id for case in CASES]
    assert len(set(ids)) == len(ids), "case ids must be unique"
    assert len(CASES) >= MIN_CASES
    assert sum(case.synced for case in CASES) >= 10
