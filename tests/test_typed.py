"""The package ships its types: a wheel carries register_runner/py.typed (PEP 561), so a
caller's mypy checks calls into it instead of treating it as Any. mypy itself runs in
.ci/run's typecheck step."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import register_runner

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_wheel_ships_py_typed_and_the_release(tmp_path):
    # Built from a copy: an in-tree build/ left by an earlier build would be reused.
    source = tmp_path / "source"
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        (source / name).parent.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "register_runner",
        source / "register_runner",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    command = [
        *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check"),
        *("--quiet", "--wheel-dir", str(tmp_path), str(source)),
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("*.whl")
    assert wheel.name.startswith(f"register_runner-{register_runner.__version__}-")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    assert "register_runner/py.typed" in names
    assert "register_runner/testing/fake_gitlab/routes.py" in names
