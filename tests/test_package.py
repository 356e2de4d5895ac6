"""The zipapp built by ./package runs on the oldest supported Python, with nothing else.

Builds dist/register-runner once for this module (into a temporary directory: the
checkout's dist/ is left alone) and runs it the way a host would: a bare
environment, the interpreter of the oldest supported Python, no site-packages of
ours. Needs the package index for `pip download` (or WHEEL_CACHE holding the wheels).
"""

import glob
import importlib.machinery
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomlkit

import register_runner

ROOT = Path(__file__).resolve().parent.parent
# What a systemd unit or `env -i` gives: no venv, no pyenv shims, no PYTHONPATH.
CLEAN_ENV = {"PATH": "/usr/bin:/bin"}
BUILD_TIMEOUT = 600


def find_python39():
    """An absolute path to a Python 3.9 interpreter, or None."""
    candidates = [os.environ.get("REGISTER_RUNNER_PYTHON39", "")]
    candidates += sorted(glob.glob("/root/.pyenv/versions/3.9*/bin/python3.9"), reverse=True)
    candidates += [shutil.which("python3.9") or ""]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return str(Path(candidate).absolute())
    return None


PYTHON39 = find_python39()
needs_python39 = pytest.mark.skipif(
    PYTHON39 is None,
    reason="no Python 3.9 interpreter found (set REGISTER_RUNNER_PYTHON39 to one): "
    "cannot check that the zipapp runs on the oldest supported Python",
)


def run(args, **kwargs):
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


@pytest.fixture(scope="module")
def zipapp(once_per_run):
    return (
        once_per_run("dist", lambda folder: build(folder / "register-runner")) / "register-runner"
    )


def build(out):
    env = dict(os.environ)
    env.pop("DIST_DIR", None)
    try:
        result = subprocess.run(
            [sys.executable, str(ROOT / "package"), str(out)],
            cwd=str(ROOT),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=BUILD_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"./package did not finish within {BUILD_TIMEOUT} s")
    if result.returncode != 0:
        tail = "\n".join(result.stdout.splitlines()[-40:])
        hint = ""
        if "pip download failed" in result.stdout:
            hint = (
                "\n\n`pip download` failed: building the zipapp needs the package index "
                "(or WHEEL_CACHE pointing at a directory that holds the wheels)."
            )
        pytest.fail(f"./package exited {result.returncode}{hint}\n--- output (tail) ---\n{tail}")
    assert out.is_file(), f"./package succeeded but wrote no {out}"
    return out


def test_is_an_executable_zip_with_a_shebang(zipapp):
    assert os.access(str(zipapp), os.X_OK)
    with open(zipapp, "rb") as fh:
        assert fh.readline() == b"#!/usr/bin/env python3\n"
    assert zipfile.is_zipfile(str(zipapp))


def test_contents(zipapp):
    with zipfile.ZipFile(str(zipapp)) as zf:
        names = zf.namelist()
    native = [n for n in names if n.endswith((".so", ".pyd", ".dylib", ".dll")) or ".so." in n]
    assert native == [], f"compiled extensions in the zipapp: {native}"
    assert [n for n in names if "__pycache__" in n or n.endswith(".pyc")] == []
    assert names == sorted(names), "entries are not sorted (the build should be reproducible)"
    assert "__main__.py" in names
    for top in ("tomli/", "tomlkit/", "certifi/", "register_runner/"):
        assert any(n.startswith(top) for n in names), f"{top} missing from the zipapp"
    # One HTTP stack, the standard library's: no other travels along.
    for top in ("requests/", "urllib3/", "gitlab/", "idna/", "charset_normalizer/"):
        assert not any(n.startswith(top) for n in names), f"{top} in the zipapp"
    assert "certifi/cacert.pem" in names
    # Package data and the fake GitLab (used by `demo`) travel with the code.
    source = ROOT / "register_runner"
    expected = [
        p.relative_to(ROOT).as_posix()
        for p in source.rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and (p.suffix == ".py" or "examples" in p.relative_to(source).parts)
    ]
    missing = sorted(set(expected) - set(names))
    assert missing == [], f"files of register_runner/ missing from the zipapp: {missing}"


@needs_python39
def test_version_on_oldest_python_in_a_clean_environment(zipapp):
    result = run([PYTHON39, zipapp, "--version"], env=CLEAN_ENV, cwd="/")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"register-runner {register_runner.__version__}"


def test_version_through_the_shebang(zipapp):
    python3 = shutil.which("python3", path=CLEAN_ENV["PATH"])
    if python3 is None:
        pytest.skip("no python3 in /usr/bin:/bin for #!/usr/bin/env python3 to find")
    result = run([zipapp, "--version"], env=CLEAN_ENV, cwd="/")
    assert result.returncode == 0, result.stderr
    assert register_runner.__version__ in result.stdout


def test_usage_error_keeps_its_exit_status(zipapp):
    # __main__.py must pass main()'s status on: the systemd units rely on 1 vs 2 vs 3.
    result = run([PYTHON39 or sys.executable, zipapp, "--no-such-option"], env=CLEAN_ENV)
    assert result.returncode == 2, (result.stdout, result.stderr)


def test_ca_bundle_is_usable_from_the_zip(zipapp):
    # OpenSSL needs a real file; certifi extracts cacert.pem from the zip to a
    # temporary file. -S: only what the zip bundles, no site-packages certifi.
    check = (
        "import os, ssl, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import certifi\n"
        "assert certifi.__file__.startswith(sys.argv[1]), certifi.__file__\n"
        "path = certifi.where()\n"
        "assert os.path.isfile(path), path\n"
        "ctx = ssl.create_default_context(cafile=path)\n"
        "assert len(ctx.get_ca_certs()) > 50\n"
        "assert ctx.verify_mode == ssl.CERT_REQUIRED\n"
        "print(path)\n"
    )
    python = PYTHON39 or sys.executable
    result = run([python, "-I", "-S", "-c", check, zipapp], env=CLEAN_ENV)
    assert result.returncode == 0, result.stderr
    # The extracted copy is removed when the interpreter exits.
    assert not Path(result.stdout.strip()).exists()


@needs_python39
def test_bundled_dependencies_import_on_oldest_python(zipapp):
    check = (
        "import sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import certifi, tomli, tomlkit, register_runner.tomlfile\n"
        "for m in (certifi, tomli, tomlkit, register_runner.tomlfile):\n"
        "    assert m.__file__.startswith(sys.argv[1]), m.__file__\n"
        "print(register_runner.tomlfile._fast.__name__)\n"
    )
    result = run([PYTHON39, "-I", "-S", "-c", check, zipapp], env=CLEAN_ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "tomli", "3.9 has no tomllib: the bundled backport is used"


@needs_python39
def test_unpacks_itself_once_with_bytecode_into_its_own_cache(zipapp, tmp_path):
    cache = tmp_path / "cache"
    env = dict(CLEAN_ENV, REGISTER_RUNNER_CACHE=str(cache))
    for _ in range(2):
        result = run([PYTHON39, zipapp, "--version"], env=env, cwd="/")
        assert result.returncode == 0, result.stderr
    (build,) = cache.iterdir()
    assert build.name.startswith(register_runner.__version__ + "-")
    assert list(build.glob("register_runner/__pycache__/cli.cpython-39*.pyc"))
    assert oct(cache.stat().st_mode & 0o777) == oct(0o700)


@needs_python39
def test_runs_from_the_zip_when_the_cache_is_not_its_own(zipapp, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)  # whoever may write here would choose the code that runs
    for folder in (str(shared), ""):
        env = dict(CLEAN_ENV, REGISTER_RUNNER_CACHE=folder)
        result = run([PYTHON39, zipapp, "--version"], env=env, cwd="/")
        assert result.returncode == 0, result.stderr
    assert list(shared.iterdir()) == []


@needs_python39
def test_every_module_imports_on_oldest_python(zipapp):
    # Catches what linters may miss: a 3.10+ call or annotation evaluated at import.
    check = (
        "import importlib, pkgutil, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import register_runner\n"
        "names = [m.name for m in pkgutil.walk_packages(\n"
        "    register_runner.__path__, 'register_runner.')\n"
        "    if not m.name.endswith('__main__')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "print(len(names))\n"
    )
    result = run([PYTHON39, "-I", "-S", "-c", check, zipapp], env=CLEAN_ENV, cwd="/")
    assert result.returncode == 0, result.stderr


@needs_python39
def test_demo_runs_from_the_zip_on_oldest_python(zipapp, tmp_path):
    # End to end from the zip: the bundled fake GitLab (register_runner.testing), plan,
    # then sync creating several runners on the worker pool. Three runs, because
    # imports from a zip are slow (no bytecode cache) and a first import racing in
    # threads on 3.9 fails only some of the time.
    for attempt in range(3):
        prefix = tmp_path / f"demo{attempt}"
        result = run([PYTHON39, zipapp, "demo", "--keep", prefix], env=CLEAN_ENV, cwd="/")
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "internal error" not in output, output


def _name(requirement):
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_bundled_requirements_match_pyproject():
    loader = importlib.machinery.SourceFileLoader("_package_script", str(ROOT / "package"))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    script = importlib.util.module_from_spec(spec)
    loader.exec_module(script)
    pyproject = tomlkit.parse((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    declared = sorted(_name(r) for r in pyproject["project"]["dependencies"])
    assert sorted(_name(r) for r in script.REQUIREMENTS) == declared


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_zipapp_trusts_a_site_ca_from_the_hosts_trust_store(zipapp, gitlab, pat, pki, tmp_path):
    """No tls_ca_file: the site CA is trusted because the host's OpenSSL trusts it
    (SSL_CERT_FILE here, the distribution's bundle on a real host), not certifi's list."""
    from test_tls import TLSFront, bundle

    from register_runner.testing.prefix import make_prefix

    python = PYTHON39 or sys.executable
    with TLSFront(gitlab.url, pki["server"]) as front:
        prefix = make_prefix(tmp_path / "p", front.url, pat)
        command = [python, zipapp, "sync", "--prefix", prefix.root, "--deadline", "5"]
        untrusted = run(command, env=CLEAN_ENV)
        trusted = run(
            command, env=dict(CLEAN_ENV, SSL_CERT_FILE=str(bundle(tmp_path, pki["site"][0])))
        )
    assert untrusted.returncode == 3 and "unknown issuer" in untrusted.stderr
    assert trusted.returncode == 0, trusted.stderr
    assert len(gitlab.runners()) == 1
