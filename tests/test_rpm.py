"""contrib/rpm/register-runner.spec, without rpmbuild: the build steps its header gives are
run in a copy of the checkout, its %install section runs in bash with the macros it uses
expanded, and what lands in the build root is checked against %files and against what the
package must ship (the units, the alert rules, the Ansible collection)."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import zipapp
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "contrib" / "rpm" / "register-runner.spec"
COLLECTION = ROOT / "contrib" / "ansible" / "ansible_collections"
COLLECTIONS = "/usr/share/ansible/collections"  # ansible-core's default COLLECTIONS_PATHS
MACROS = {
    "_bindir": "/usr/bin",
    "_datadir": "/usr/share",
    "_mandir": "/usr/share/man",
    "_sysconfdir": "/etc",
    "_unitdir": "/usr/lib/systemd/system",
}


SECTIONS = "description|prep|build|install|check|post|preun|postun|files|changelog"


def section(text: str, name: str) -> str:
    match = re.search(rf"^%{name}\n(.*?)(?=^%(?:{SECTIONS})$|\Z)", text, re.S | re.M)
    assert match, name
    return match[1]


def expand(text: str, macros: dict[str, str]) -> str:
    for _ in range(5):  # globals name other macros
        text = re.sub(r"%\{(\w+)\}", lambda m: macros.get(m[1], m[0]), text)
    return text.replace("%%", "%")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The build root %install fills, from SOURCES made as the spec's header says."""
    if shutil.which("tar") is None:
        pytest.skip("tar not found")
    work = tmp_path_factory.mktemp("rpm")
    checkout, home, buildroot = work / "checkout", work / "home", work / "buildroot"
    checkout.mkdir()
    for name in ("LICENSE", "README.md", "man", "contrib"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, checkout / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, checkout / name)
    # What ./package makes: a zipapp (a small one does for %install and %check).
    (work / "app").mkdir()
    (work / "app" / "__main__.py").write_text("print('register-runner 0')\n")
    (checkout / "dist").mkdir()
    zipapp.create_archive(work / "app", checkout / "dist" / "register-runner")
    text = SPEC.read_text()
    header = text[: text.index("%{!?rr_version")]
    steps = [line[4:] for line in header.splitlines() if line.startswith("#   ")]
    build = [step for step in steps if not step.startswith(("./package", "rpmbuild"))]
    env = {**os.environ, "HOME": str(home)}
    home.mkdir()
    subprocess.run(["bash", "-euc", "\n".join(build)], cwd=checkout, env=env, check=True)
    sources = home / "rpmbuild" / "SOURCES"
    macros = dict(MACROS, buildroot=str(buildroot), rr_python=sys.executable)
    for name, value in re.findall(r"^%global (\w+) (.*)$", text, re.M):
        macros.setdefault(name, value)
    for number, name in re.findall(r"^Source(\d+):\s+(\S+)$", text, re.M):
        assert (sources / name).is_file(), f"Source{number} {name}: the header's steps lack it"
        macros[f"SOURCE{number}"] = str(sources / name)
    script = expand(section(text, "install"), macros)
    build_dir = work / "BUILD"
    build_dir.mkdir()
    subprocess.run(["bash", "-euc", script], cwd=build_dir, env=env, check=True)
    return buildroot


def files_patterns() -> list[tuple[str, bool]]:
    """(path pattern, whether a folder's content is taken too) of every %files line."""
    text = SPEC.read_text()
    macros = dict(MACROS)
    for name, value in re.findall(r"^%global (\w+) (.*)$", text, re.M):
        macros.setdefault(name, value)
    patterns = []
    for line in section(text, "files").splitlines():
        line = re.sub(r"%attr\([^)]*\)\s*", "", line.strip())
        if not line or line.startswith(("#", "%license", "%doc")):
            continue
        only_folder = line.startswith("%dir ")
        path = expand(line.removeprefix("%dir ").strip(), macros)
        patterns.append((path.rstrip("/"), path.endswith("/") and not only_folder))
    return patterns


def shipped(buildroot: Path) -> list[str]:
    return sorted(
        "/" + str(path.relative_to(buildroot)) for path in buildroot.rglob("*") if path.is_file()
    )


def test_every_installed_file_is_in_files(installed):
    patterns = files_patterns()
    unlisted = [
        path
        for path in shipped(installed)
        if not any(
            fnmatch.fnmatch(path, pattern) or (recursive and path.startswith(pattern + "/"))
            for pattern, recursive in patterns
        )
    ]
    assert unlisted == []


def test_the_alert_rules_and_their_tests_are_shipped(installed):
    folder = installed / "usr/share/register-runner/prometheus"
    for name in ("register-runner.rules.yml", "register-runner.rules.test.yml"):
        shipped_file = folder / name
        assert shipped_file.read_bytes() == (ROOT / "contrib/prometheus" / name).read_bytes()


def test_the_ansible_collection_is_where_ansible_core_looks(installed):
    target = installed / COLLECTIONS.lstrip("/") / "ansible_collections"
    expected = sorted(str(p.relative_to(COLLECTION)) for p in COLLECTION.rglob("*") if p.is_file())
    expected = [p for p in expected if "__pycache__" not in p]
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()) == expected
    module = (target / "register_runner/gitlab/plugins/modules/sync.py").read_text()
    # The module finds the zipapp where the package puts it, not where a hand install does.
    assert 'default="/usr/bin/register-runner"' in module
    assert "/usr/local/bin" not in module
    patterns = [pattern for pattern, _ in files_patterns()]
    assert f"{COLLECTIONS}/ansible_collections/register_runner" in patterns


def test_units_name_the_packaged_zipapp(installed):
    units = sorted((installed / "usr/lib/systemd/system").iterdir())
    assert units
    for unit in units:
        assert "/usr/local/bin" not in unit.read_text(), unit.name
