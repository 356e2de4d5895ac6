"""Shared fixtures: a fake GitLab on 127.0.0.1, an access token, a prefix factory and the
real CLI."""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
from pathlib import Path
from typing import Callable

import pytest
from hypothesis import settings

from register_runner.testing.fake_gitlab import FakeGitLab
from register_runner.testing.prefix import Prefix, make_prefix, run_cli

GROUP_ID = 42
PROJECT_ID = 7
ALL_SCOPES = ("create_runner", "manage_runner", "read_api")

# The properties try 50 examples each in every run of the suite, CI's included (250-300,
# as before, cost ~20 s of CPU on 2 CPUs); `scripts/properties` runs them with the full
# count (--hypothesis-profile=full). No deadline: a busy machine is not a failure.
settings.register_profile("suite", max_examples=50, deadline=None)
settings.register_profile("full", max_examples=300, deadline=None)
settings.load_profile("suite")


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    _keep_bytecode(config)
    if getattr(config.option, "dist", "no") == "load":
        # -n without --dist: xdist hands each worker a run of consecutive tests, so one
        # worker can be left with every hypothesis test (half a minute of CPU) while the
        # others are done; with worksteal an idle worker takes over tests still queued.
        config.option.dist = "worksteal"


def _keep_bytecode(config: pytest.Config) -> None:
    """Where PYTHONDONTWRITEBYTECODE is set (some CI and sandbox images), every process of
    a run compiles the package and the tests again, and hypothesis too (pytest rewrites
    the asserts of a plugin's modules): each pytest-xdist worker spends about 4 s of CPU
    on it before its first test, the main process 2 s on hypothesis's summary at the end.
    From here on, this process, the workers (they start later) and the CLI's child
    processes write and read bytecode as Python does by default, in __pycache__ folders
    (ignored by git), and use what pip compiled when it installed the dependencies. (A
    PYTHONPYCACHEPREFIX folder would ignore that: on a fresh clone each of the four
    workers compiled hypothesis and pytest for itself, 71 s for the suite instead of 64.)
    Nothing a test checks changes."""
    if os.environ.get("PYTHONPYCACHEPREFIX") or not os.environ.pop("PYTHONDONTWRITEBYTECODE", ""):
        return
    sys.dont_write_bytecode = False
    config.add_cleanup(_write_no_bytecode_again)


def _write_no_bytecode_again() -> None:
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    sys.dont_write_bytecode = True


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_auto_num_workers(config: pytest.Config):
    """-n auto: two workers per CPU. A third of the suite's time is waiting that is the
    behaviour under test (a deadline against a GitLab that is down, a Retry-After); a
    worker that waits leaves its CPU to the others. On 2 CPUs the suite took 61-62 s with
    3 workers, 50-57 s with 4. PYTEST_XDIST_AUTO_NUM_WORKERS still decides when it is set."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    return 2 * len(os.sched_getaffinity(0))


@pytest.fixture
def gitlab() -> FakeGitLab:
    with FakeGitLab() as server:
        yield server


@pytest.fixture
def pat(gitlab: FakeGitLab) -> str:
    """An admin's token with the three scopes the tool can use."""
    return gitlab.add_access_token(
        scopes=ALL_SCOPES, admin=True, groups=(GROUP_ID,), projects=(PROJECT_ID,)
    )


@pytest.fixture
def make(tmp_path: Path, gitlab: FakeGitLab, pat: str) -> Callable[..., Prefix]:
    """make(executors={...}, **make_prefix options) → a prefix pointing at the fake GitLab."""
    count = 0

    def factory(**options) -> Prefix:
        nonlocal count
        count += 1
        options.setdefault("access_token", pat)
        root = options.pop("root", tmp_path / f"prefix{count}")
        return make_prefix(root, gitlab.url, **options)

    return factory


@pytest.fixture
def prefix(make: Callable[..., Prefix]) -> Prefix:
    return make()


@pytest.fixture
def cli() -> Callable[..., object]:
    """cli(prefix, *args) runs ``register-runner <args> --prefix <root>``."""

    def run(prefix: Prefix, *args: str, **kwargs):
        command = list(args) or ["sync"]
        return run_cli(
            [*command, "--prefix", str(prefix.root), "--instance", prefix.instance], **kwargs
        )

    return run


@pytest.fixture(scope="session")
def once_per_run(tmp_path_factory) -> Callable[[str, Callable[[Path], object]], Path]:
    """once_per_run(name, build) → a folder that build(folder) filled, once for the whole
    run: under pytest-xdist the first worker to ask builds it in the run's common
    temporary folder (the others wait for it), else in this session's. For what takes
    seconds of CPU to make and is the same for every test."""

    built: dict[str, Path] = {}

    def get(name: str, build: Callable[[Path], object]) -> Path:
        if name not in built:
            built[name] = _build_once(tmp_path_factory, name, build)
        return built[name]

    return get


def _build_once(tmp_path_factory, name: str, build: Callable[[Path], object]) -> Path:
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        folder = tmp_path_factory.mktemp(name)
        build(folder)
        return folder
    root = tmp_path_factory.getbasetemp().parent
    folder = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not folder.is_dir():  # only a build that finished: it is renamed at the end
            staging = root / f"{name}.building"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            build(staging)
            staging.rename(folder)
    return folder


@pytest.fixture
def pki(once_per_run, tmp_path: Path) -> dict:
    """Certificates for TLS tests (tests/test_tls.py's build_pki): a site CA, server,
    expired, other-name and client certificates, an unknown CA. Made once per run (ten
    openssl commands); a copy for each test, which may change them."""
    from test_tls import build_pki, copy_pki, pki_files

    return copy_pki(pki_files(once_per_run("pki", build_pki) / "pki"), tmp_path)
