"""House rules read from the source (issue 24): the package keeps no module state that
callers set from outside, so a run's inputs are its arguments and its record is in what
it returns."""

from __future__ import annotations

import ast
from pathlib import Path

import register_runner

PACKAGE = Path(register_runner.__file__).parent


def test_no_global_statement_outside_testing():
    found = [
        f"{path.relative_to(PACKAGE)}:{node.lineno}: global {', '.join(node.names)}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if "testing" not in path.relative_to(PACKAGE).parts
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Global)
    ]
    assert found == []
