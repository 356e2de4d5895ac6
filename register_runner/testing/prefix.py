"""Building prefixes and running the real CLI, for tests and benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import tomlkit

# Set to 1: every run_cli in a child process, as before in-process runs (slower).
CHILD_VARIABLE = "REGISTER_RUNNER_TEST_CHILD"
CHILD_TIMEOUT = 120.0


@dataclass
class Prefix:
    """A ``/etc/gitlab-runner`` look-alike under a temporary folder."""

    root: Path
    instance: str = "main"

    @property
    def executor_dir(self) -> Path:
        return self.root / self.instance

    @property
    def template(self) -> Path:
        return self.root / f"config.template.{self.instance}.toml"

    @property
    def output(self) -> Path:
        return self.root / f"config.{self.instance}.toml"

    def output_document(self) -> dict:
        return tomlkit.parse(self.output.read_text()).unwrap()

    def runners(self) -> list[dict]:
        return self.output_document().get("runners", []) if self.output.exists() else []

    def runner(self, name_suffix: str) -> dict:
        """The output entry whose name ends with ``-<stem>`` (the default name)."""
        found = [r for r in self.runners() if r["name"].endswith(f"-{name_suffix}")]
        assert len(found) == 1, f"{name_suffix}: {[r['name'] for r in self.runners()]}"
        return found[0]

    def write_template(self, text: str) -> None:
        self.template.write_text(text)

    def write_executor(self, stem: str, text: str) -> Path:
        self.executor_dir.mkdir(mode=0o700, exist_ok=True)
        path = self.executor_dir / f"{stem}.toml"
        path.write_text(text)
        return path

    def remove_executor(self, stem: str) -> None:
        (self.executor_dir / f"{stem}.toml").unlink()

    def snapshot(self) -> dict[str, tuple[bytes, int]]:
        """Every file under the prefix with its bytes and mtime, to prove nothing changed;
        not the lock, nor the last-run record that every run (bad input too) replaces."""
        files = {}
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and not path.name.endswith((".lock", ".last-run.json")):
                info = path.stat()
                files[str(path.relative_to(self.root))] = (path.read_bytes(), info.st_mtime_ns)
        return files


def make_prefix(
    root: Path,
    url: str,
    access_token: Optional[str] = None,
    *,
    executors: Optional[Mapping[str, str]] = None,
    client_extra: str = "",
    globals_text: str = "concurrent = 4\ncheck_interval = 3\n",
    registration_token: Optional[str] = None,
    instance: str = "main",
) -> Prefix:
    """A prefix with one client_config for ``url`` and the given executor files (stem →
    TOML text). Executor files default to one shell runner."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    root.chmod(0o700)
    prefix = Prefix(root, instance)
    secrets = []
    if access_token is not None:
        token_file = root / "secrets" / "gitlab.pat"
        token_file.parent.mkdir(mode=0o700, exist_ok=True)
        token_file.write_text(access_token + "\n")
        token_file.chmod(0o600)  # a token file others may read is refused
        secrets.append(f'personal_access_token_file = "{token_file}"')
    if registration_token is not None:
        secrets.append(f'registration_token = "{registration_token}"')
    prefix.write_template(
        f'{globals_text}\n[[client_configs]]\nurl = "{url}"\n'
        + "\n".join(secrets)
        + "\n"
        + client_extra
    )
    prefix.executor_dir.mkdir(mode=0o700, exist_ok=True)
    if executors is None:
        executors = {"shell": 'executor = "shell"\ntags = ["linux"]\n'}
    for stem, text in executors.items():
        prefix.write_executor(stem, text)
    return prefix


def run_cli(
    args: Sequence[str],
    *,
    env: Optional[Mapping[str, str]] = None,
    input: Optional[str] = None,
    timeout: Optional[float] = None,
    child: bool = False,
) -> subprocess.CompletedProcess:
    """The real command line with this environment plus ``env``. In this process by
    default (testing/inprocess.py); in a child process, as systemd would run it, with
    ``child=True``, with a ``timeout`` (only a child can be killed when it hangs), or for
    every run when REGISTER_RUNNER_TEST_CHILD=1."""
    environment = dict(os.environ)
    environment.pop("JOURNAL_STREAM", None)
    environment.update(env or {})
    command = [sys.executable, "-m", "register_runner", *args]
    if child or timeout is not None or os.environ.get(CHILD_VARIABLE) == "1":
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=environment,
            input=input,
            timeout=CHILD_TIMEOUT if timeout is None else timeout,
        )
    from . import inprocess  # not for the benchmarks, which import this module too

    return inprocess.run(command, args, environment, input, CHILD_TIMEOUT)


def start_cli(args: Sequence[str], *, env: Optional[Mapping[str, str]] = None) -> subprocess.Popen:
    environment = dict(os.environ)
    environment.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "register_runner", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
